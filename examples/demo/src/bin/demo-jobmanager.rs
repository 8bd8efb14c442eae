//! A tiny stand-in for a Flink JobManager that relies on an ha-sidecar.
//!
//! It runs one job, [`JOB_ID`], whose work is counting. When its sidecar leads
//! it asks `GET /recovery` what to recover: if the job is listed, it reads the
//! job graph back and resumes from the job's latest checkpoint; if not, it
//! submits the job (`PUT /jobs/{id}/graph`, about 4 KiB, so it goes to the
//! sidecar's storage dir) and starts from 0. Every ten steps it checkpoints:
//! it takes the next checkpoint id from the job's checkpoint id counter with a
//! compare-and-set increment, then writes the checkpoint under that id. Every
//! write carries its term, so a deposed job manager is refused (409) and
//! stops, exactly the behaviour that keeps two leaders from both making
//! progress. Once the job has a result (400 `invalid`: globally terminal) it
//! stops for good.
//!
//! Its stdin takes commands, one a line: `pause` (finish the step under way,
//! say so, then neither count nor write until `resume`) and `resume`. The demo
//! pauses the job before it records the job's result, as a finishing Flink job
//! stops checkpointing before its result is written. End of file (the
//! orchestrator is gone) makes it exit.
//!
//! Usage: `demo-jobmanager --sidecar http://127.0.0.1:PORT --name jm-1`

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, bail};
use demo::{Event, JOB_ID, Start};
use serde::Deserialize;
use serde_json::json;

/// One counting step.
const STEP: Duration = Duration::from_millis(50);
/// Steps between two checkpoints.
const CHECKPOINT_EVERY: u32 = 10;
/// Pause before asking a sidecar again that could not be reached or could not answer.
const RETRY: Duration = Duration::from_millis(100);
/// The size of the job graph: above the demo's 1 KiB inline limit.
const GRAPH_SIZE: usize = 4096;
/// The first checkpoint id, as in Flink: the counter holds the next id to hand out.
const FIRST_CHECKPOINT_ID: u64 = 1;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("demo-jobmanager: {e:#}");
            return ExitCode::from(2);
        }
    };
    read_commands(args.name.clone());
    let sidecar = Sidecar::new(&args.sidecar);
    // A term this process already worked for: it never resumes the same term
    // twice (after being fenced, it waits for the next one).
    let mut served = None;
    loop {
        let term = wait_until_leading(&sidecar, &args.name, served);
        served = Some(term);
        if let Outcome::Finished = lead(&sidecar, &args.name, term) {
            println!("{}", Event::Finished.line(&args.name));
            break;
        }
    }
    // The job is done: a real job manager would shut down its cluster now. This
    // one stays until the orchestrator ends it (or goes away, see below), so
    // that it never runs the job again.
    loop {
        std::thread::park();
    }
}

struct Args {
    sidecar: String,
    name: String,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let (mut sidecar, mut name) = (None, None);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--sidecar" => sidecar = Some(value.trim_end_matches('/').to_string()),
                "--name" => name = Some(value),
                other => bail!(
                    "unknown argument {other:?} (usage: demo-jobmanager --sidecar http://127.0.0.1:PORT --name jm-1)"
                ),
            }
        }
        Ok(Args {
            sidecar: sidecar.context("--sidecar is required")?,
            name: name.context("--name is required")?,
        })
    }
}

/// Set by `pause`, cleared by `resume` on stdin.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Reads commands from stdin. The demo orchestrator holds our stdin open;
/// when it goes away without killing us (it was itself killed), stdin reaches
/// end of file and we exit instead of counting forever in the background.
fn read_commands(name: String) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.trim() {
                "pause" => PAUSED.store(true, Ordering::SeqCst),
                "resume" => PAUSED.store(false, Ordering::SeqCst),
                "" => {}
                other => println!("{name}: unknown command {other:?} (pause, resume)"),
            }
        }
        std::process::exit(0);
    });
}

/// Blocks while paused; says once that it is paused at `count`.
fn hold_while_paused(name: &str, count: u64) {
    if !PAUSED.load(Ordering::SeqCst) {
        return;
    }
    println!("{}", Event::Paused { count }.line(name));
    while PAUSED.load(Ordering::SeqCst) {
        sleep(STEP);
    }
    println!("{name}: resumed at {count}");
}

/// `GET /leader`, as far as the job manager needs it.
#[derive(Deserialize)]
struct LeaderView {
    leader: Option<Holder>,
    term: Option<u64>,
    leading: bool,
    /// This sidecar's own member id.
    member: String,
}

#[derive(Deserialize)]
struct Holder {
    id: String,
}

impl LeaderView {
    /// The backend already names this sidecar as leader but the sidecar does not
    /// report leading (yet, or any more). The term token will not change when
    /// that flips, so a long-poll on it would sleep through the change.
    fn named_but_not_leading(&self) -> bool {
        !self.leading && self.leader.as_ref().is_some_and(|h| h.id == self.member)
    }
}

/// `GET /recovery`: the jobs a new leader must recover, and the finished jobs
/// whose cleanup is still pending.
#[derive(Deserialize)]
struct Recovery {
    jobs: Vec<RecoverableJob>,
    dirty_results: Vec<String>,
}

#[derive(Deserialize)]
struct RecoverableJob {
    id: String,
    graph_version: Option<u64>,
    latest_checkpoint: Option<u64>,
    checkpoints: Vec<u64>,
    checkpoint_id_counter: Option<u64>,
}

impl Recovery {
    fn job(&self) -> Option<&RecoverableJob> {
        self.jobs.iter().find(|j| j.id == JOB_ID)
    }

    /// The job has a result (clean-up pending) or no HA data at all any more.
    fn job_is_gone(&self) -> bool {
        self.job().is_none() || self.dirty_results.iter().any(|j| j == JOB_ID)
    }
}

/// `GET /jobs/{job}/counter` and what a write answers.
#[derive(Deserialize)]
struct Versioned {
    version: u64,
}

#[derive(Deserialize)]
struct Counter {
    value: u64,
    version: u64,
}

/// `PUT /jobs/{job}/checkpoints/{id}`.
#[derive(Deserialize)]
struct Added {
    removed: Vec<u64>,
}

/// `{"error": "<code>", "message": "..."}`, the body of every error reply.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// Why a call to the sidecar did not give an answer.
enum CallError {
    /// The sidecar answered with this status and error body.
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// The sidecar could not be reached (not started yet, or gone), or its
    /// answer could not be read.
    Unreachable(String),
}

impl CallError {
    /// 400 `invalid` because the job has a result: its HA data can no longer change.
    fn job_finished(&self) -> bool {
        matches!(self, CallError::Status { status: 400, code, message }
            if code == "invalid" && message.contains("globally terminal"))
    }

    fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Unreachable(_) => None,
        }
    }
}

impl From<ureq::Error> for CallError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(status, response) => {
                let body: ErrorBody = response.into_json().unwrap_or_default();
                CallError::Status {
                    status,
                    code: body.error,
                    message: body.message,
                }
            }
            ureq::Error::Transport(t) => CallError::Unreachable(t.to_string()),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status {
                status,
                code,
                message,
            } => write!(f, "HTTP {status} {code}: {message}"),
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
        }
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> CallError {
    CallError::Unreachable(format!("cannot read the answer to {what}: {e}"))
}

/// The sidecar's HTTP API on localhost.
struct Sidecar {
    base: String,
    agent: ureq::Agent,
}

impl Sidecar {
    fn new(base: &str) -> Sidecar {
        // The read timeout must outlast the 5 s long-poll of `wait_for_change`.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout_read(Duration::from_secs(10))
            .build();
        Sidecar {
            base: base.to_string(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn job_url(&self, path: &str) -> String {
        format!("{}/jobs/{JOB_ID}{path}", self.base)
    }

    /// A fenced write: only the leader of `term` may make it.
    fn put(&self, url: &str, term: u64) -> ureq::Request {
        self.agent.put(url).set("X-HA-Term", &term.to_string())
    }

    /// Long-polls `GET /leader` until the term differs from `known` (or 5 s pass).
    fn leader(&self, known: Option<u64>) -> Result<LeaderView, CallError> {
        let known = known.map_or("none".to_string(), |t| t.to_string());
        let url = self.url(&format!("/leader?wait=5s&known={known}"));
        let response = self.agent.get(&url).call()?;
        response
            .into_json()
            .map_err(|e| unreadable("GET /leader", e))
    }

    /// `GET /leader/self`: cheap enough to ask before every step.
    fn is_leading(&self) -> Result<bool, CallError> {
        match self.agent.get(&self.url("/leader/self")).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(503, _)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn recovery(&self) -> Result<Recovery, CallError> {
        let response = self.agent.get(&self.url("/recovery")).call()?;
        response
            .into_json()
            .map_err(|e| unreadable("GET /recovery", e))
    }

    /// Submits the job: stores its graph.
    fn put_graph(&self, graph: &[u8], term: u64) -> Result<u64, CallError> {
        let response = self.put(&self.job_url("/graph"), term).send_bytes(graph)?;
        let v: Versioned = response
            .into_json()
            .map_err(|e| unreadable("PUT graph", e))?;
        Ok(v.version)
    }

    fn graph(&self) -> Result<Option<Vec<u8>>, CallError> {
        let response = match self.agent.get(&self.job_url("/graph")).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        response
            .into_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable("GET graph", e))?;
        Ok(Some(bytes))
    }

    /// The count held by checkpoint `id`, or none if there is no such checkpoint.
    fn checkpoint(&self, id: u64) -> Result<Option<u64>, CallError> {
        let url = self.job_url(&format!("/checkpoints/{id}"));
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body = response
            .into_string()
            .map_err(|e| unreadable("GET checkpoint", e))?;
        let count = body.trim().parse().map_err(|_| {
            CallError::Unreachable(format!("checkpoint {id} holds {body:?}, not a count"))
        })?;
        Ok(Some(count))
    }

    /// The checkpoint id counter's value and version, or none before the first checkpoint.
    fn counter(&self) -> Result<Option<Counter>, CallError> {
        match self.agent.get(&self.job_url("/counter")).call() {
            Ok(r) => r
                .into_json()
                .map(Some)
                .map_err(|e| unreadable("GET counter", e)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the counter to `value` if it is still at `version` (or absent,
    /// for none); a lost race is 412.
    fn put_counter(&self, value: u64, version: Option<u64>, term: u64) -> Result<(), CallError> {
        let request = self.put(&self.job_url("/counter"), term);
        let request = match version {
            Some(v) => request.set("If-Match", &format!("\"{v}\"")),
            None => request.set("If-None-Match", "*"),
        };
        request.send_string(&value.to_string())?;
        Ok(())
    }

    /// Writes checkpoint `id` (each id once); returns the ids the sidecar
    /// removed to keep only the newest few.
    fn add_checkpoint(&self, id: u64, count: u64, term: u64) -> Result<Vec<u64>, CallError> {
        let url = self.job_url(&format!("/checkpoints/{id}"));
        let response = self.put(&url, term).send_string(&count.to_string())?;
        let added: Added = response
            .into_json()
            .map_err(|e| unreadable("PUT checkpoint", e))?;
        Ok(added.removed)
    }
}

/// The job's "graph": a stand-in for Flink's serialized JobGraph, about
/// [`GRAPH_SIZE`] bytes of JSON, so that the sidecar keeps it as a file in its
/// storage dir and only a pointer in the backend.
fn job_graph() -> Vec<u8> {
    let mut vertices = Vec::new();
    loop {
        let graph = json!({
            "job": JOB_ID,
            "name": "demo: count, checkpoint every ten",
            "vertices": vertices,
        });
        let bytes = serde_json::to_vec(&graph).expect("a graph serializes");
        if bytes.len() >= GRAPH_SIZE {
            return bytes;
        }
        let i = vertices.len();
        vertices.push(json!({
            "id": format!("{:032x}", 0x5eed_0000 + i),
            "name": format!("count step {i}"),
            "parallelism": 1,
            "inputs": if i == 0 { vec![] } else { vec![format!("{:032x}", 0x5eed_0000 + i - 1)] },
        }));
    }
}

/// Blocks until the sidecar leads in a term other than `served`; returns that term.
fn wait_until_leading(sidecar: &Sidecar, name: &str, served: Option<u64>) -> u64 {
    let mut known = None;
    let mut complained = false;
    loop {
        match sidecar.leader(known) {
            Ok(LeaderView {
                term: Some(term),
                leading: true,
                ..
            }) if Some(term) != served => return term,
            Ok(view) if view.named_but_not_leading() => {
                known = None;
                sleep(RETRY);
            }
            Ok(view) => known = view.term,
            Err(e) => {
                // The sidecar may still be starting (or be restarting): say so once.
                if !complained {
                    println!("{name}: waiting for the sidecar ({e})");
                    complained = true;
                }
                sleep(RETRY);
            }
        }
    }
}

/// How a term of leadership ended for this job manager.
enum Outcome {
    /// It lost leadership or was fenced: wait for the next term.
    Stopped,
    /// The job is globally terminal: nothing left to run, ever.
    Finished,
}

/// Why a step of the job was not done.
enum Refused {
    /// 409 `not_leader` or 412 `version_conflict`: another leader writes now.
    Fenced(u16),
    /// The job has a result: stop for good.
    Finished,
    /// Something else: say it and stop for this term.
    Failed(CallError),
    /// The sidecar could not answer (503): try again.
    Retry(CallError),
}

impl Refused {
    fn from(e: CallError) -> Refused {
        if e.job_finished() {
            return Refused::Finished;
        }
        match e.status() {
            Some(status @ (409 | 412)) => Refused::Fenced(status),
            Some(503) | None => Refused::Retry(e),
            Some(_) => Refused::Failed(e),
        }
    }
}

/// Runs the job for `term` until leadership is lost, a write is refused or
/// the job is finished.
fn lead(sidecar: &Sidecar, name: &str, term: u64) -> Outcome {
    let (start, mut count, mut counter_exists) = match take_over(sidecar, name, term) {
        Ok(resumed) => resumed,
        Err(outcome) => return outcome,
    };
    println!("{}", Event::Resumed { term, start, count }.line(name));
    let mut since_checkpoint = 0;
    loop {
        // Between steps: the last write (if any) has been answered.
        hold_while_paused(name, count);
        match sidecar.is_leading() {
            Ok(true) => {}
            Ok(false) => {
                println!("{}", Event::Stopped { count }.line(name));
                return Outcome::Stopped;
            }
            Err(e) => {
                // Without its sidecar it cannot know it still leads: stop.
                println!("{name}: cannot ask the sidecar ({e})");
                println!("{}", Event::Stopped { count }.line(name));
                return Outcome::Stopped;
            }
        }
        count += 1;
        since_checkpoint += 1;
        if since_checkpoint == CHECKPOINT_EVERY {
            since_checkpoint = 0;
            match checkpoint(sidecar, name, term, count, &mut counter_exists) {
                Ok(id) => println!("{}", Event::Checkpoint { term, id, count }.line(name)),
                Err(Refused::Fenced(status)) => {
                    println!("{}", Event::Fenced { status, count }.line(name));
                    return Outcome::Stopped;
                }
                Err(Refused::Finished) => return Outcome::Finished,
                Err(Refused::Retry(e)) => {
                    // Nothing written, or the sidecar cannot tell; the next
                    // compare-and-set sorts it out either way.
                    println!(
                        "{name}: no checkpoint at {count} ({e}); trying again at the next one"
                    );
                }
                Err(Refused::Failed(e)) => {
                    println!("{name}: no checkpoint at {count} ({e})");
                    println!("{}", Event::Stopped { count }.line(name));
                    return Outcome::Stopped;
                }
            }
        }
        sleep(STEP);
    }
}

/// What the job continues from in `term`, as `GET /recovery` tells: where it
/// starts, the count, and whether the checkpoint id counter exists. Asked
/// again while the sidecar cannot answer; gives up when leadership ends.
fn take_over(sidecar: &Sidecar, name: &str, term: u64) -> Result<(Start, u64, bool), Outcome> {
    loop {
        match try_take_over(sidecar, name, term) {
            Ok(resumed) => return Ok(resumed),
            Err(Refused::Finished) => return Err(Outcome::Finished),
            Err(Refused::Fenced(status)) => {
                println!("{}", Event::Fenced { status, count: 0 }.line(name));
                return Err(Outcome::Stopped);
            }
            Err(Refused::Retry(e) | Refused::Failed(e)) => {
                println!("{name}: cannot recover the job yet ({e}); retrying");
            }
        }
        if !matches!(sidecar.is_leading(), Ok(true)) {
            println!("{}", Event::Stopped { count: 0 }.line(name));
            return Err(Outcome::Stopped);
        }
        sleep(RETRY);
    }
}

fn try_take_over(sidecar: &Sidecar, name: &str, term: u64) -> Result<(Start, u64, bool), Refused> {
    let recovery = sidecar.recovery().map_err(Refused::from)?;
    if recovery.dirty_results.iter().any(|j| j == JOB_ID) {
        // Finished under an earlier leader; the sidecar finishes its clean-up.
        return Err(Refused::Finished);
    }
    let Some(job) = recovery.job() else {
        let graph = job_graph();
        sidecar.put_graph(&graph, term).map_err(Refused::from)?;
        println!(
            "{name}: job {JOB_ID} submitted: graph of {} bytes stored",
            graph.len()
        );
        return Ok((Start::Submitted, 0, false));
    };
    let show = |n: Option<u64>| n.map_or("none".to_string(), |n| n.to_string());
    println!(
        "{name}: /recovery lists job {JOB_ID}: graph version {}, checkpoints {:?}, checkpoint id counter {}",
        show(job.graph_version),
        job.checkpoints,
        show(job.checkpoint_id_counter)
    );
    match sidecar.graph().map_err(Refused::from)? {
        Some(graph) if graph == job_graph() => {
            println!("{name}: job graph read back: {} bytes, intact", graph.len())
        }
        Some(graph) => println!(
            "{name}: job graph read back: {} bytes, NOT what was submitted",
            graph.len()
        ),
        None => {
            // Checkpoints without a graph: store the graph again.
            sidecar
                .put_graph(&job_graph(), term)
                .map_err(Refused::from)?;
            println!("{name}: the job had no graph; stored it again");
        }
    }
    let counter_exists = job.checkpoint_id_counter.is_some();
    let Some(id) = job.latest_checkpoint else {
        return Ok((Start::NoCheckpoint, 0, counter_exists));
    };
    match sidecar.checkpoint(id).map_err(Refused::from)? {
        Some(count) => Ok((Start::Checkpoint(id), count, counter_exists)),
        // Only a leader writes, and we lead: it went away under another writer.
        None => Err(Refused::Retry(CallError::Unreachable(format!(
            "checkpoint {id} listed by /recovery is gone"
        )))),
    }
}

/// Takes the next checkpoint id from the job's counter (compare-and-set
/// increment) and writes checkpoint `count` under it; returns the id.
fn checkpoint(
    sidecar: &Sidecar,
    name: &str,
    term: u64,
    count: u64,
    counter_exists: &mut bool,
) -> Result<u64, Refused> {
    let current = sidecar.counter().map_err(Refused::from)?;
    let (id, version) = match current {
        Some(c) => (c.value, Some(c.version)),
        // A counter that existed and is gone: the job's HA data was cleaned
        // up, so the job has finished. Never create it again then.
        None if *counter_exists => return Err(gone_or(sidecar, 412)),
        None => (FIRST_CHECKPOINT_ID, None),
    };
    match sidecar.put_counter(id + 1, version, term) {
        Ok(()) => *counter_exists = true,
        Err(e) if e.status() == Some(412) => return Err(gone_or(sidecar, 412)),
        Err(e) => return Err(Refused::from(e)),
    }
    match sidecar.add_checkpoint(id, count, term) {
        Ok(_removed) => Ok(id),
        // Someone else wrote this id: ours was not stored.
        Err(e) if e.status() == Some(412) => Err(gone_or(sidecar, 412)),
        // Refused before anything was written.
        Err(e) if e.job_finished() => Err(Refused::Finished),
        Err(e) => {
            // No answer, 503, or even 409: the sidecar stores the checkpoint,
            // then removes the oldest ones, and a refusal of the removal
            // fails the whole request. It may have landed: say so, for
            // whoever recovers it.
            let status = e.status();
            println!(
                "{}",
                Event::Unacknowledged {
                    term,
                    id,
                    count,
                    status
                }
                .line(name)
            );
            Err(Refused::from(e))
        }
    }
}

/// A compare-and-set was lost: because the job finished and its HA data was
/// deleted meanwhile, or because another job manager wrote (`status`).
fn gone_or(sidecar: &Sidecar, status: u16) -> Refused {
    match sidecar.recovery() {
        Ok(r) if r.job_is_gone() => Refused::Finished,
        _ => Refused::Fenced(status),
    }
}
