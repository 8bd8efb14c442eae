//! A tiny stand-in for a Flink JobManager that relies on an ha-sidecar.
//!
//! It waits until its sidecar leads, resumes a counter from the last
//! checkpoint in the sidecar's state store, and checkpoints every ten steps
//! with a compare-and-set fenced by its term. It stops the moment the sidecar
//! no longer leads or a checkpoint is refused, which is exactly the behaviour
//! that keeps two leaders from both making progress.
//!
//! Usage: `demo-jobmanager --sidecar http://127.0.0.1:PORT --name jm-1`

use std::io::Read;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, bail};
use demo::Event;
use serde::Deserialize;

/// State key of the checkpoint, shared by every job manager of the demo.
const CHECKPOINT_KEY: &str = "demo/count";
/// One counting step.
const STEP: Duration = Duration::from_millis(50);
/// Steps between two checkpoints.
const CHECKPOINT_EVERY: u32 = 10;
/// Pause before asking a sidecar again that could not be reached or could not answer.
const RETRY: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("demo-jobmanager: {e:#}");
            return ExitCode::from(2);
        }
    };
    exit_when_orphaned();
    let sidecar = Sidecar::new(&args.sidecar);
    // A term this process already worked for: it never resumes the same term
    // twice (after being fenced, it waits for the next one).
    let mut served = None;
    loop {
        let term = wait_until_leading(&sidecar, &args.name, served);
        served = Some(term);
        lead(&sidecar, &args.name, term);
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

/// The demo orchestrator holds our stdin open; when it goes away without
/// killing us (it was itself killed), stdin reaches end of file and we exit
/// instead of counting forever in the background.
fn exit_when_orphaned() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
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

/// Why a call to the sidecar did not give an answer.
enum CallError {
    /// The sidecar answered with this status.
    Status(u16),
    /// The sidecar could not be reached (not started yet, or gone).
    Unreachable(String),
}

impl From<ureq::Error> for CallError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(status, _) => CallError::Status(status),
            ureq::Error::Transport(t) => CallError::Unreachable(t.to_string()),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(s) => write!(f, "HTTP {s}"),
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
        }
    }
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

    /// Long-polls `GET /leader` until the term differs from `known` (or 5 s pass).
    fn leader(&self, known: Option<u64>) -> Result<LeaderView, CallError> {
        let known = known.map_or("none".to_string(), |t| t.to_string());
        let url = format!("{}/leader?wait=5s&known={known}", self.base);
        let response = self.agent.get(&url).call()?;
        response
            .into_json()
            .map_err(|e| CallError::Unreachable(format!("bad /leader answer: {e}")))
    }

    /// `GET /leader/self`: cheap enough to ask before every step.
    fn is_leading(&self) -> Result<bool, CallError> {
        match self.agent.get(&format!("{}/leader/self", self.base)).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(503, _)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The checkpointed count and its version, or none before the first checkpoint.
    fn read_checkpoint(&self) -> Result<Option<(u64, u64)>, CallError> {
        let url = format!("{}/state/{CHECKPOINT_KEY}", self.base);
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = response
            .header("etag")
            .and_then(parse_etag)
            .ok_or_else(|| CallError::Unreachable("GET /state answered without an ETag".into()))?;
        let body = response
            .into_string()
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let count = body.trim().parse().map_err(|_| {
            CallError::Unreachable(format!("the checkpoint {body:?} is not a number"))
        })?;
        Ok(Some((count, version)))
    }

    /// Writes `count` only if the key is still at `version` (or absent, for
    /// none) and `term` is still the current term; returns the new version.
    fn checkpoint(&self, count: u64, version: Option<u64>, term: u64) -> Result<u64, CallError> {
        let url = format!("{}/state/{CHECKPOINT_KEY}", self.base);
        let request = self.agent.put(&url).set("X-HA-Term", &term.to_string());
        let request = match version {
            Some(v) => request.set("If-Match", &format!("\"{v}\"")),
            None => request.set("If-None-Match", "*"),
        };
        let response = request.send_string(&count.to_string())?;
        response
            .header("etag")
            .and_then(parse_etag)
            .ok_or_else(|| CallError::Unreachable("PUT /state answered without an ETag".into()))
    }
}

/// `"42"` → 42.
fn parse_etag(etag: &str) -> Option<u64> {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
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

/// Counts for `term` until leadership is lost or a checkpoint is refused.
fn lead(sidecar: &Sidecar, name: &str, term: u64) {
    let Some((mut count, mut version)) = resume(sidecar, name) else {
        return;
    };
    println!("{}", Event::Resumed { term, count }.line(name));
    let mut since_checkpoint = 0;
    loop {
        match sidecar.is_leading() {
            Ok(true) => {}
            Ok(false) => return println!("{}", Event::Stopped { count }.line(name)),
            Err(e) => {
                // Without its sidecar it cannot know it still leads: stop.
                println!("{name}: cannot ask the sidecar ({e})");
                return println!("{}", Event::Stopped { count }.line(name));
            }
        }
        count += 1;
        since_checkpoint += 1;
        if since_checkpoint == CHECKPOINT_EVERY {
            since_checkpoint = 0;
            match sidecar.checkpoint(count, version, term) {
                Ok(v) => {
                    version = Some(v);
                    println!("{}", Event::Checkpoint { term, count }.line(name));
                }
                Err(CallError::Status(status @ (409 | 412))) => {
                    return println!("{}", Event::Fenced { status, count }.line(name));
                }
                Err(CallError::Status(status)) => {
                    // 503: nothing written, or the backend cannot tell; the next
                    // compare-and-set sorts it out either way.
                    println!(
                        "{name}: checkpoint {count} not written (HTTP {status}); trying again at the next one"
                    );
                }
                Err(e) => {
                    println!("{name}: checkpoint {count} failed ({e})");
                    return println!("{}", Event::Stopped { count }.line(name));
                }
            }
        }
        sleep(STEP);
    }
}

/// The count and version to continue from, asked again while the backend
/// cannot answer. None when leadership ends before an answer comes.
fn resume(sidecar: &Sidecar, name: &str) -> Option<(u64, Option<u64>)> {
    loop {
        match sidecar.read_checkpoint() {
            Ok(Some((count, version))) => return Some((count, Some(version))),
            Ok(None) => return Some((0, None)),
            Err(e) => println!("{name}: cannot read the checkpoint ({e}); retrying"),
        }
        if !matches!(sidecar.is_leading(), Ok(true)) {
            return None;
        }
        sleep(RETRY);
    }
}
