//! The ha-sidecar demo: three sidecars elect a leader on the file backend, a
//! stand-in job manager beside each counts while its sidecar leads, and the
//! demo fails the leader twice (a crash, then an orderly shutdown) to show how
//! fast a standby takes over and that the count carries on where it stopped.
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

/// Ok(true) when continuity held. Every child process is killed when this
/// returns, however it returns (the nodes kill their processes on drop).
fn run() -> anyhow::Result<bool> {
    let paths = Paths::locate()?;
    let probe = Probe::new();
    println!(
        "starting {SIDECARS} sidecars and their job managers in {}/",
        paths.show(&paths.run_dir)
    );
    let mut nodes = cluster::start(&paths, SIDECARS)?;
    let outcome = scenario(&mut nodes, &probe);
    let logs = paths.show(&paths.run_dir.join("jm-N-{sidecar,jobmanager}.log"));
    match outcome {
        Ok(handovers) => {
            let problems: Vec<String> = handovers
                .iter()
                .flat_map(|h| h.problems.iter().cloned())
                .chain(check::whole_run(&check::journals(&nodes)))
                .collect();
            print_summary(&handovers, &problems);
            println!("  logs: {logs}");
            Ok(problems.is_empty())
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
    /// The last checkpoint, read from a standby just before the failure.
    before: u64,
    /// The last checkpoint the failed leader's job manager logged. It can be
    /// later than `before`: a leader keeps working until it is stopped.
    old_last: Option<u64>,
    /// Where the new leader's job manager resumed, if it did.
    resumed: Option<u64>,
    problems: Vec<String>,
}

fn scenario(nodes: &mut [Node], probe: &Probe) -> anyhow::Result<Vec<Handover>> {
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
    Ok(vec![crash, shutdown])
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
        .checkpoint(nodes[standby].port)
        .with_context(|| {
            format!(
                "cannot read the last checkpoint through {}'s sidecar",
                nodes[standby].name
            )
        })?
        .with_context(|| {
            format!(
                "{} has written no checkpoint yet; see its job manager's log",
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
    let resumed = match check::wait_for_progress(&nodes[to.node], to.term, PROGRESS_TIMEOUT) {
        Ok(resumed) => {
            problems.extend(check::handover(
                &check::journals(nodes),
                to.term,
                resumed,
                before,
            ));
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
        problems,
    })
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

fn print_summary(handovers: &[Handover], problems: &[String]) {
    println!();
    println!("ha-sidecar demo: {SIDECARS} sidecars on the file backend (lease 2s)");
    println!(
        "  {:<8}  {:<31}  {:<8}  {:<11}  {:<17}  resumed from",
        "phase", "leader before -> after", "takeover", "read before", "old leader's last"
    );
    let show = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    for h in handovers {
        let change = format!("{} -> {}", h.from, h.to);
        let takeover = format!("{:.2} s", h.takeover.as_secs_f64());
        println!(
            "  {:<8}  {change:<31}  {takeover:<8}  {:<11}  {:<17}  {}",
            h.failure.label(),
            h.before,
            show(h.old_last),
            show(h.resumed)
        );
    }
    println!(
        "  (read before: read from a standby just before the failure; old leader's last: as its job manager logged it)"
    );
    if problems.is_empty() {
        println!("  count continuity: ok (no checkpoint lost, no term wrote after being fenced)");
    } else {
        println!("  count continuity: BROKEN");
        for p in problems {
            println!("    - {p}");
        }
    }
}
