//! The ha-sidecar demo: three sidecars elect a leader on the file backend, a
//! stand-in job manager beside each runs one job (it counts) while its sidecar
//! leads, keeping the job's graph and checkpoints in the sidecar's job HA data
//! API. The demo fails the leader twice (a crash, then an orderly shutdown) to
//! show how fast a standby takes over and that its job manager recovers the job
//! through `GET /recovery` from exactly the last acknowledged checkpoint. Then
//! the job finishes: its result is recorded and all of its HA data, storage dir
//! files included, is cleaned up.
//!
//! Run from the repository root after building: `target/release/demo`
//! (`./scripts/demo.sh` builds and runs it).

mod check;
mod cluster;
mod probe;

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use demo::{Checkpoint, JOB_ID};
use serde_json::json;

use check::Resumed;
use cluster::{Node, Paths};
use probe::Probe;

const SIDECARS: usize = 3;
/// The first election includes compiling the plugin (cold cache), hence generous.
const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the first leader counts before it is crashed.
const COUNT_BEFORE_CRASH: Duration = Duration::from_secs(3);
/// How long the second leader counts before it is shut down.
const COUNT_BEFORE_SHUTDOWN: Duration = Duration::from_secs(1);
/// A takeover slower than this is a failure (the lease is 2 s).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new leader's job manager may take to write its first checkpoint.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(8);
/// How often takeover is polled: the resolution of the measured times.
const POLL: Duration = Duration::from_millis(10);
/// How long the third leader counts before the job finishes.
const COUNT_BEFORE_FINISH: Duration = Duration::from_secs(1);
/// How long the job manager may take to pause, and to notice the job finished
/// (at its next checkpoint); also how long a dirty result may take to be cleaned up.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(true) when continuity held and the job finished cleanly. Every child process is killed when this
/// returns, however it returns (the nodes kill their processes on drop).
fn run() -> anyhow::Result<bool> {
    let paths = Paths::locate()?;
    let probe = Probe::new();
    println!(
        "starting {SIDECARS} sidecars and their job managers in {}/",
        paths.show(&paths.run_dir)
    );
    let mut nodes = cluster::start(&paths, SIDECARS)?;
    let outcome = scenario(&mut nodes, &probe, &paths);
    let logs = paths.show(&paths.run_dir.join("jm-N-{sidecar,jobmanager}.log"));
    match outcome {
        Ok((handovers, finish)) => {
            let problems: Vec<String> = handovers
                .iter()
                .flat_map(|h| h.problems.iter().cloned())
                .chain(check::whole_run(&check::journals(&nodes)))
                .collect();
            print_summary(&handovers, &problems, &finish);
            println!("  logs: {logs}");
            Ok(problems.is_empty() && finish.problems.is_empty())
        }
        Err(e) => {
            eprintln!("logs: {logs}");
            Err(e)
        }
    }
}

/// How a failure of the leader is inflicted.
#[derive(Clone, Copy)]
enum Failure {
    /// SIGKILL the sidecar and its job manager: a standby waits out the lease.
    Crash,
    /// SIGTERM the sidecar: it releases its term, so a standby takes over at once.
    Shutdown,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Crash => "kill -9",
            Failure::Shutdown => "SIGTERM",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Failure::Crash => "crashing",
            Failure::Shutdown => "shutting down",
        }
    }
}

/// A sidecar that led, and in which term.
#[derive(Clone)]
struct Leader {
    /// Index into the nodes.
    node: usize,
    name: String,
    term: u64,
}

impl std::fmt::Display for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (term {})", self.name, self.term)
    }
}

/// One failure of the leader and what followed.
struct Handover {
    failure: Failure,
    from: Leader,
    to: Leader,
    takeover: Duration,
    /// The job's latest checkpoint, read from a standby just before the failure.
    before: Checkpoint,
    /// The last checkpoint the failed leader's job manager logged (acknowledged).
    /// It can be later than `before`: a leader keeps working until it is stopped.
    old_last: Option<Checkpoint>,
    /// Where the new leader's job manager resumed, if it did.
    resumed: Option<Resumed>,
    /// Something worth saying that is not a problem.
    note: Option<String>,
    problems: Vec<String>,
}

/// The end of the job: its result recorded, its HA data cleaned up.
struct Finish {
    leader: Leader,
    /// The checkpoint whose count went into the result.
    last: Checkpoint,
    /// What the result store answered: `deleted` (delete-on-commit), `clean` or `dirty`.
    state: String,
    /// Files in the storage dir just before the result was recorded (the job graph).
    files_before: usize,
    /// Files in the storage dir at the end.
    files_after: usize,
    problems: Vec<String>,
}

fn scenario(
    nodes: &mut [Node],
    probe: &Probe,
    paths: &Paths,
) -> anyhow::Result<(Vec<Handover>, Finish)> {
    let started = Instant::now();
    let first = wait_for_single_leader(nodes, probe)?;
    println!(
        "{first} leads after {:.2} s; letting it count for {} s",
        started.elapsed().as_secs_f64(),
        COUNT_BEFORE_CRASH.as_secs()
    );
    sleep(COUNT_BEFORE_CRASH);

    let crash = handover(nodes, probe, first, Failure::Crash)?;
    sleep(COUNT_BEFORE_SHUTDOWN);
    let shutdown = handover(nodes, probe, crash.to.clone(), Failure::Shutdown)?;
    sleep(COUNT_BEFORE_FINISH);
    let finish = finish(nodes, probe, paths, &shutdown.to)?;
    Ok((vec![crash, shutdown], finish))
}

/// Waits until one sidecar reports leading; two at once would be split brain.
fn wait_for_single_leader(nodes: &[Node], probe: &Probe) -> anyhow::Result<Leader> {
    let deadline = Instant::now() + FIRST_LEADER_TIMEOUT;
    loop {
        let leaders = leaders(nodes, probe);
        match leaders.as_slice() {
            [one] => return Ok(one.clone()),
            [] if Instant::now() < deadline => sleep(Duration::from_millis(50)),
            [] => bail!("no sidecar became leader within {FIRST_LEADER_TIMEOUT:?}"),
            many => bail!(
                "{} sidecars report leading at once: {}",
                many.len(),
                describe(many)
            ),
        }
    }
}

/// Which live sidecars report leading, and in which term.
fn leaders(nodes: &[Node], probe: &Probe) -> Vec<Leader> {
    let leader = |(node, n): (usize, &Node)| {
        let term = probe.leading_term(n.port)?;
        Some(Leader {
            node,
            name: n.name.clone(),
            term,
        })
    };
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.alive)
        .filter_map(leader)
        .collect()
}

fn describe(leaders: &[Leader]) -> String {
    leaders
        .iter()
        .map(Leader::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails the leader, times the takeover and checks the count carried on.
fn handover(
    nodes: &mut [Node],
    probe: &Probe,
    from: Leader,
    failure: Failure,
) -> anyhow::Result<Handover> {
    let standby = (0..nodes.len())
        .find(|&i| i != from.node && nodes[i].alive)
        .context("no standby sidecar left")?;
    let before = probe
        .latest_checkpoint(nodes[standby].port)
        .with_context(|| {
            format!(
                "cannot read the job's latest checkpoint through {}'s sidecar",
                nodes[standby].name
            )
        })?
        .with_context(|| {
            format!(
                "job {JOB_ID} has no checkpoint yet; see {}'s job manager log",
                from.name
            )
        })?;
    println!(
        "{}: {} {from}, last checkpoint {before}",
        failure.label(),
        failure.verb()
    );

    match failure {
        Failure::Crash => nodes[from.node].crash()?,
        Failure::Shutdown => nodes[from.node].terminate_sidecar()?,
    }
    let failed_at = Instant::now();
    let to = wait_for_takeover(nodes, probe, from.term)?;
    let takeover = failed_at.elapsed();
    println!(
        "{}: {to} leads after {:.2} s",
        failure.label(),
        takeover.as_secs_f64()
    );

    let mut problems = Vec::new();
    if matches!(failure, Failure::Shutdown)
        && !nodes[from.node].sidecar_exited(Duration::from_secs(5))
    {
        problems.push(format!(
            "{}'s sidecar did not exit within 5 s of SIGTERM",
            from.name
        ));
    }
    let mut note = None;
    let resumed = match check::wait_for_progress(&nodes[to.node], to.term, PROGRESS_TIMEOUT) {
        Ok(resumed) => {
            println!(
                "{}: {}'s job manager recovered job {JOB_ID} via /recovery, resuming from {resumed}",
                failure.label(),
                to.name
            );
            let verdict = check::handover(&check::journals(nodes), to.term, resumed, Some(before));
            problems.extend(verdict.problems);
            note = verdict.note;
            Some(resumed)
        }
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    let old_last = check::last_checkpoint(&check::Journal::read(&nodes[from.node]), from.term);
    Ok(Handover {
        failure,
        from,
        to,
        takeover,
        before,
        old_last,
        resumed,
        note,
        problems,
    })
}

/// The job finishes. Its job manager is paused first (a finishing Flink job
/// stops checkpointing before its result is written), then the result is
/// recorded through the leader's sidecar with the leader's term, which deletes
/// all of the job's HA data. The job manager is resumed to show that it finds
/// the job finished. Then nothing must be left to recover, and no file in the
/// storage dir.
fn finish(
    nodes: &mut [Node],
    probe: &Probe,
    paths: &Paths,
    leader: &Leader,
) -> anyhow::Result<Finish> {
    let node = &mut nodes[leader.node];
    let files_before = count_files(&paths.storage_dir)?;
    node.tell_jobmanager("pause")?;
    if !wait_for(node, FINISH_TIMEOUT, check::paused) {
        bail!(
            "{}'s job manager did not pause within {FINISH_TIMEOUT:?}",
            leader.name
        );
    }
    let term = probe
        .leading_term(node.port)
        .with_context(|| format!("{} no longer leads", leader.name))?;
    let leader = Leader {
        term,
        ..leader.clone()
    };
    let last = probe
        .latest_checkpoint(node.port)?
        .with_context(|| format!("job {JOB_ID} has no checkpoint"))?;
    let mut problems = Vec::new();
    let acknowledged = check::last_checkpoint(&check::Journal::read(node), term);
    if acknowledged != Some(last) {
        problems.push(format!(
            "the job's latest checkpoint is {last}, but {}'s job manager last acknowledged {}",
            leader.name,
            acknowledged.map_or("none".to_string(), |c| c.to_string())
        ));
    }
    if files_before == 0 {
        problems.push(format!(
            "the storage dir {} held no file before the job finished: the job graph should be one",
            paths.show(&paths.storage_dir)
        ));
    }

    let result = json!({"application-status": "SUCCEEDED", "count": last.count});
    let mut state = probe
        .finish_job(node.port, term, &result)
        .context("cannot record the job's result")?;
    println!(
        "job finishes: {}'s job manager paused at checkpoint {}; result {result} recorded with term {term}: {state}",
        leader.name, last.id
    );
    // A dirty result is cleaned up by the leader in the background, with backoff.
    let deadline = Instant::now() + FINISH_TIMEOUT;
    while state == "dirty" {
        if !probe
            .recovery(node.port)?
            .dirty_results
            .iter()
            .any(|j| j == JOB_ID)
        {
            state = "dirty, then cleaned up by the leader".into();
        } else if Instant::now() >= deadline {
            break;
        } else {
            sleep(Duration::from_millis(100));
        }
    }

    // Its next checkpoint is refused: 400, the job is globally terminal.
    node.tell_jobmanager("resume")?;
    if !wait_for(node, FINISH_TIMEOUT, check::finished) {
        problems.push(format!(
            "{}'s job manager did not find the job finished within {FINISH_TIMEOUT:?}",
            leader.name
        ));
    }
    let recovery = probe.recovery(node.port)?;
    if !recovery.jobs.is_empty() {
        let ids: Vec<&str> = recovery.jobs.iter().map(|j| j.id.as_str()).collect();
        problems.push(format!(
            "GET /recovery still lists jobs {ids:?} after the job finished"
        ));
    }
    if !recovery.dirty_results.is_empty() {
        problems.push(format!(
            "GET /recovery still lists dirty results {:?}",
            recovery.dirty_results
        ));
    }
    if let Some(entry) = probe.job_result(node.port)? {
        println!("job finishes: the result store keeps {entry}");
    }
    let files_after = count_files(&paths.storage_dir)?;
    if files_after != 0 {
        problems.push(format!(
            "the storage dir {} still holds {files_after} file(s) after the job's HA data was deleted",
            paths.show(&paths.storage_dir)
        ));
    }
    Ok(Finish {
        leader,
        last,
        state,
        files_before,
        files_after,
        problems,
    })
}

/// Waits at most `timeout` until the job manager of `node` logged what `seen` looks for.
fn wait_for(node: &Node, timeout: Duration, seen: fn(&check::Journal) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !seen(&check::Journal::read(node)) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}

/// Files under `dir`, at any depth.
fn count_files(dir: &std::path::Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        n += if entry.file_type()?.is_dir() {
            count_files(&entry.path())?
        } else {
            1
        };
    }
    Ok(n)
}

/// Polls the live sidecars until one leads in a term after `old`.
fn wait_for_takeover(nodes: &[Node], probe: &Probe, old: u64) -> anyhow::Result<Leader> {
    let deadline = Instant::now() + TAKEOVER_TIMEOUT;
    while Instant::now() < deadline {
        match leaders(nodes, probe).as_slice() {
            [] => {}
            [one] if one.term > old => return Ok(one.clone()),
            [one] => bail!("{one} leads, but not in a term after the failed term {old}"),
            many => bail!(
                "{} sidecars report leading at once: {}",
                many.len(),
                describe(many)
            ),
        }
        sleep(POLL);
    }
    bail!("no standby took over within {TAKEOVER_TIMEOUT:?}")
}

fn print_summary(handovers: &[Handover], problems: &[String], finish: &Finish) {
    println!();
    println!("ha-sidecar demo: {SIDECARS} sidecars on the file backend (lease 2s), job {JOB_ID}");
    println!(
        "  {:<8}  {:<31}  {:<8}  {:<11}  {:<17}  resumed via /recovery",
        "phase", "leader before -> after", "takeover", "read before", "old leader's last"
    );
    let show = |c: Option<String>| c.unwrap_or_else(|| "-".to_string());
    for h in handovers {
        let change = format!("{} -> {}", h.from, h.to);
        let takeover = format!("{:.2} s", h.takeover.as_secs_f64());
        println!(
            "  {:<8}  {change:<31}  {takeover:<8}  {:<11}  {:<17}  {}",
            h.failure.label(),
            h.before.to_string(),
            show(h.old_last.map(|c| c.to_string())),
            show(h.resumed.map(|r| r.to_string()))
        );
    }
    println!(
        "  (count (cp <checkpoint id>); read before: through a standby just before the failure; old leader's last: acknowledged, as its job manager logged it)"
    );
    for note in handovers.iter().filter_map(|h| h.note.as_ref()) {
        println!("  note: {note}");
    }
    if problems.is_empty() {
        println!(
            "  count continuity: ok (no acknowledged checkpoint lost: each new leader recovered the latest via /recovery; no term wrote after being fenced)"
        );
    } else {
        println!("  count continuity: BROKEN");
        for p in problems {
            println!("    - {p}");
        }
    }
    let f = finish;
    let state = match f.state.as_str() {
        "deleted" => "deleted on commit",
        "clean" => "kept, marked clean",
        other => other,
    };
    let recorded = format!(
        "result recorded in term {} (count {} from checkpoint {}; {state})",
        f.leader.term, f.last.count, f.last.id
    );
    if f.problems.is_empty() {
        println!(
            "  job finished: {recorded}, HA data cleaned up (recovery view empty, storage dir: {} files, {} before)",
            f.files_after, f.files_before
        );
    } else {
        println!("  job finished: {recorded}, clean-up INCOMPLETE");
        for p in &f.problems {
            println!("    - {p}");
        }
    }
}
