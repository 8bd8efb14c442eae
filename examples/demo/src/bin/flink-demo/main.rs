//! The demo on real Flink: three stock Flink 2.3 JobManagers, each beside a
//! sidecar that campaigns only while its JobManager holds a candidacy, one
//! TaskManager beside an observer sidecar, and a job that counts forever with
//! a checkpoint every second. The demo kills the leading JobManager's JVM
//! three times (its sidecar lives on), then a whole "machine" (JobManager and
//! sidecar), then stops the leader with SIGTERM; each time it measures how
//! long until a standby leads, until the job runs again and until it has
//! checkpointed twice, and it checks that the count continued from the last
//! checkpoint with no value lost. Each killed JobManager is started again as
//! a standby, as Flink's own HA end-to-end test does.
//!
//! `flink-demo [--backend file|zookeeper=<quorum>] [--kills N] [--run-dir DIR] [--report FILE]`,
//! with `FLINK_HOME` set to a Flink 2.3.0 distribution (`./scripts/demo.sh`
//! installs one from PyPI, builds everything and runs this).

mod counts;
mod flink;
mod sidecars;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use demo::process::free_ports;
use serde_json::json;

use flink::{Flink, Process, Rest, Role, wait_for};
use sidecars::{Backend, Paths, Sampler, Sidecar};

const JOBMANAGERS: usize = 3;
/// Three JVMs and a TaskManager starting at once on two cores are slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// kill -9 of the leading JobManager's JVM; its sidecar lives.
    Crash,
    /// kill -9 of the leading JobManager and its sidecar: the machine is gone.
    MachineLoss,
    /// SIGTERM of the leading JobManager: an orderly shutdown.
    Sigterm,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Crash => "kill -9 JobManager",
            Fault::MachineLoss => "machine loss",
            Fault::Sigterm => "SIGTERM JobManager",
        }
    }
}

struct Args {
    backend: Backend,
    kills: usize,
    run_dir: Option<PathBuf>,
    report: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        backend: Backend::File,
        kills: 3,
        run_dir: None,
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--backend" => {
                let v = value("--backend")?;
                a.backend = match v.split_once('=') {
                    None if v == "file" => Backend::File,
                    Some(("zookeeper", q)) if !q.is_empty() => Backend::ZooKeeper(q.into()),
                    _ => bail!("--backend {v:?}: use file or zookeeper=<host:port,...>"),
                }
            }
            "--kills" => {
                a.kills = value("--kills")?
                    .parse()
                    .context("--kills: a whole number")?
            }
            "--run-dir" => a.run_dir = Some(value("--run-dir")?.into()),
            "--report" => a.report = Some(value("--report")?.into()),
            "-h" | "--help" => {
                println!(
                    "flink-demo [--backend file|zookeeper=<quorum>] [--kills N] [--run-dir DIR] [--report FILE]\n  FLINK_HOME must name a Flink 2.3.0 distribution; ./scripts/demo.sh sets everything up."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match args().and_then(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("flink demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Root {
    sidecars: Paths,
    plugin_jar: PathBuf,
    job_jar: PathBuf,
    default_run: PathBuf,
}

fn locate() -> anyhow::Result<Root> {
    let cwd = std::env::current_dir()?;
    let root = cwd
        .ancestors()
        .find(|d| d.join("plugins").is_dir() && d.join("clients").is_dir())
        .context("run the demo from inside the ha-sidecar repository")?
        .to_path_buf();
    let r = Root {
        sidecars: Paths {
            sidecar: std::env::var_os("HA_SIDECAR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/release/ha-sidecar")),
            plugins: root.join("plugins/target/wasm32-wasip2/release"),
        },
        plugin_jar: root.join("clients/flink/build/ha-sidecar-flink-2.3.jar"),
        job_jar: root.join("examples/flink/job/build/count-forever.jar"),
        default_run: root.join("flink-demo-run"),
    };
    for f in [&r.sidecars.sidecar, &r.plugin_jar, &r.job_jar] {
        if !f.is_file() {
            bail!("{} is missing: ./scripts/demo.sh builds it", f.display());
        }
    }
    Ok(r)
}

/// What one fault did, as measured.
struct Outcome {
    fault: Fault,
    from: usize,
    to: usize,
    takeover: Duration,
    running: Duration,
    checkpointed: Duration,
    /// How many output lines there were when the fault struck.
    lines_at_fault: usize,
    /// The latest completed checkpoint the old leader reported before the fault.
    latest_before: Option<u64>,
    /// The checkpoint the new leader restored the job from (its log says so).
    restored: Option<u64>,
}

struct Cluster {
    flink: Flink,
    sidecar_bin: PathBuf,
    sidecars: Vec<Sidecar>,
    roles: Vec<Role>,
    jobmanagers: Vec<Process>,
    taskmanager: Process,
    observer: Role,
    rest: Rest,
    probe: ureq::Agent,
}

impl Cluster {
    /// Which candidate sidecar leads right now, if exactly one says so.
    fn leader(&self) -> Option<usize> {
        let leading: Vec<usize> = self
            .sidecars
            .iter()
            .take(JOBMANAGERS)
            .enumerate()
            .filter(|(_, s)| {
                self.probe
                    .get(&format!("http://127.0.0.1:{}/leader/self", s.port))
                    .call()
                    .is_ok()
            })
            .map(|(i, _)| i)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    }

    fn candidacy_open(&self, i: usize) -> bool {
        candidacy_open(&self.probe, self.sidecars[i].port)
    }

    fn tm_lines(&self) -> Vec<(u64, u64)> {
        counts::parse(&self.taskmanager.output())
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let root = locate()?;
    let home = PathBuf::from(std::env::var_os("FLINK_HOME").context(
        "FLINK_HOME is not set: point it at a Flink 2.3.0 distribution (./scripts/demo.sh installs one)",
    )?);
    let run = args.run_dir.clone().unwrap_or(root.default_run.clone());
    if run.exists() {
        std::fs::remove_dir_all(&run)
            .with_context(|| format!("cannot remove {}", run.display()))?;
    }
    std::fs::create_dir_all(&run)?;
    let backend_name = match &args.backend {
        Backend::File => "file".to_string(),
        Backend::ZooKeeper(q) => format!("zookeeper ({q})"),
    };
    println!(
        "==> Flink 2.3 on ha-sidecar, {backend_name} backend; logs in {}",
        run.display()
    );

    let ports = free_ports(3 * JOBMANAGERS + 3)?;
    let mut sidecars = Vec::new();
    let mut roles = Vec::new();
    for i in 0..JOBMANAGERS {
        let name = format!("jm-{}", i + 1);
        sidecars.push(Sidecar::start(
            &name,
            ports[i],
            "client",
            &args.backend,
            &root.sidecars,
            &run,
        )?);
        roles.push(Role {
            name,
            sidecar_port: ports[i],
            rest_port: ports[JOBMANAGERS + 1 + i],
            rpc_port: ports[2 * JOBMANAGERS + 2 + i],
        });
    }
    sidecars.push(Sidecar::start(
        "tm-1",
        ports[JOBMANAGERS],
        "never",
        &args.backend,
        &root.sidecars,
        &run,
    )?);
    let observer = Role {
        name: "tm-1".into(),
        sidecar_port: ports[JOBMANAGERS],
        rest_port: ports[2 * JOBMANAGERS + 1],
        rpc_port: ports[3 * JOBMANAGERS + 2],
    };
    let flink = Flink::prepare(&home, &root.plugin_jar, &run)?;
    let probe = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1000))
        .build();
    let started = Instant::now();
    // One JVM at a time: several starting at once on two cores can miss
    // Flink's fixed 10 s actor-system start timeout.
    let mut jobmanagers = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        jobmanagers.push(flink.jobmanager(role)?);
        wait_for(
            &format!("{} to open its candidacy", role.name),
            START_TIMEOUT,
            || candidacy_open(&probe, sidecars[i].port).then_some(()),
        )?;
    }
    let taskmanager = flink.taskmanager(&observer)?;
    let mut c = Cluster {
        flink,
        sidecar_bin: root.sidecars.sidecar.clone(),
        sidecars,
        roles,
        jobmanagers,
        taskmanager,
        observer,
        rest: Rest::new(),
        probe,
    };
    let sampler = Sampler::start(
        c.sidecars
            .iter()
            .take(JOBMANAGERS)
            .map(|s| s.port)
            .collect(),
    );

    let first = wait_for("a leading JobManager", START_TIMEOUT, || c.leader())?;
    wait_for("the TaskManager to register", START_TIMEOUT, || {
        c.rest
            .taskmanagers(c.roles[c.leader()?].rest_port)
            .filter(|n| *n >= 1)
    })?;
    println!(
        "    {} leads; cluster up in {:.1} s",
        c.roles[first].name,
        started.elapsed().as_secs_f64()
    );

    let job_jar = root.job_jar.display().to_string();
    let submitted = c.flink.cli(&c.observer, &["run", "-d", &job_jar, "10"])?;
    let job = submitted
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|ch| ch.is_ascii_hexdigit()))
        .with_context(|| format!("no job id in the CLI's output:\n{submitted}"))?
        .to_string();
    println!(
        "    job {job} submitted through the CLI (REST leader found through the observer sidecar)"
    );
    wait_for("the job to checkpoint twice", RECOVERY_TIMEOUT, || {
        let port = c.roles[c.leader()?].rest_port;
        (c.rest.job_state(port, &job)? == "RUNNING"
            && c.rest.completed_checkpoints(port, &job)? >= 2)
            .then_some(())
    })?;

    let mut faults = vec![Fault::Crash; args.kills];
    faults.extend([Fault::MachineLoss, Fault::Sigterm]);
    let mut outcomes = Vec::new();
    for fault in faults {
        outcomes.push(inject(&mut c, fault, &job)?);
    }

    let listed = c.flink.cli(&c.observer, &["list", "-r"])?;
    let list_ok = listed.contains(&job);
    println!(
        "    flink list -r through the sidecar: {}",
        if list_ok {
            "lists the job"
        } else {
            "does NOT list the job"
        }
    );
    c.flink.cli(&c.observer, &["cancel", &job])?;
    let cleaned = wait_for(
        "the job's HA data to be cleaned up",
        RECOVERY_TIMEOUT,
        || {
            let i = c.leader()?;
            let keys: serde_json::Value = c
                .probe
                .get(&format!(
                    "http://127.0.0.1:{}/state?prefix=flink/",
                    c.sidecars[i].port
                ))
                .call()
                .ok()?
                .into_json()
                .ok()?;
            let left: Vec<String> = keys["keys"]
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str())
                .filter(|k| k.contains(&job))
                .map(str::to_string)
                .collect();
            left.is_empty().then_some(())
        },
    )
    .is_ok();

    let samples = sampler.finish();
    let overlaps = sidecars::overlaps(&samples);
    let lines = c.tm_lines();
    let problems = counts::problems(&lines);
    let restarts = counts::restarts(&lines);

    println!();
    println!(
        "| fault | from → to | new leader | job RUNNING | 2 checkpoints | latest checkpoint → restored | last count printed | first count after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut report_faults = Vec::new();
    let mut recovery_problems = Vec::new();
    for o in &outcomes {
        let k = restarts
            .iter()
            .copied()
            .find(|&k| k >= o.lines_at_fault.max(1));
        let (before, after) = match k {
            Some(k) => (Some(lines[k - 1]), Some(lines[k])),
            None => (None, None),
        };
        let show = |v: Option<(u64, u64)>| v.map_or("-".to_string(), |(_, n)| n.to_string());
        let id = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
        if o.restored.is_none() || o.restored < o.latest_before {
            recovery_problems.push(format!(
                "{}: the new leader restored checkpoint {} although {} had completed",
                o.fault.name(),
                id(o.restored),
                id(o.latest_before)
            ));
        }
        println!(
            "| {} | {} → {} | {} ms | {:.2} s | {:.2} s | {} → {} | {} | {} |",
            o.fault.name(),
            c.roles[o.from].name,
            c.roles[o.to].name,
            o.takeover.as_millis(),
            o.running.as_secs_f64(),
            o.checkpointed.as_secs_f64(),
            id(o.latest_before),
            id(o.restored),
            show(before),
            show(after),
        );
        report_faults.push(json!({
            "fault": o.fault.name(),
            "from": c.roles[o.from].name,
            "to": c.roles[o.to].name,
            "takeover_ms": o.takeover.as_millis() as u64,
            "running_ms": o.running.as_millis() as u64,
            "checkpointed_ms": o.checkpointed.as_millis() as u64,
            "latest_checkpoint_before": o.latest_before,
            "restored_checkpoint": o.restored,
            "last_before": before.map(|(_, n)| n),
            "first_after": after.map(|(_, n)| n),
        }));
    }
    println!();
    let max = lines.iter().map(|l| l.0).max().unwrap_or(0);
    println!(
        "    counts: {} lines, values 0..={max}, {} recoveries seen in the output; {}",
        lines.len(),
        restarts.len(),
        if problems.is_empty() {
            "every value counted exactly once".to_string()
        } else {
            problems.join("; ")
        }
    );
    println!(
        "    leadership: {} samples of the three candidate sidecars, {}",
        samples.len(),
        if overlaps.is_empty() {
            "never two leaders at once".to_string()
        } else {
            format!("OVERLAPS: {}", overlaps.join("; "))
        }
    );
    println!(
        "    recoveries: {}",
        if recovery_problems.is_empty() {
            "every new leader restored the job from the latest completed checkpoint (or a newer one)".to_string()
        } else {
            recovery_problems.join("; ")
        }
    );
    println!(
        "    cleanup after cancel: {}",
        if cleaned {
            "the job's keys are gone"
        } else {
            "job keys are LEFT"
        }
    );

    let ok = problems.is_empty()
        && overlaps.is_empty()
        && recovery_problems.is_empty()
        && list_ok
        && cleaned;
    if let Some(path) = &args.report {
        let report = json!({
            "backend": backend_name,
            "job": job,
            "faults": report_faults,
            "count_lines": lines.len(),
            "count_max": max,
            "count_problems": problems,
            "recoveries_in_output": restarts.len(),
            "recovery_problems": recovery_problems,
            "leadership_samples": samples.len(),
            "overlaps": overlaps,
            "list_ok": list_ok,
            "cleaned": cleaned,
            "taskmanager_output": c.taskmanager.console.display().to_string(),
            "ok": ok,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("==> {}", if ok { "demo passed" } else { "demo FAILED" });
    drop(c);
    Ok(ok)
}

/// A JobManager stands by once it holds its sidecar's candidacy open.
fn candidacy_open(probe: &ureq::Agent, port: u16) -> bool {
    probe
        .get(&format!("http://127.0.0.1:{port}/leader"))
        .call()
        .ok()
        .and_then(|r| r.into_json::<serde_json::Value>().ok())
        .and_then(|v| v.get("candidacy_open")?.as_bool())
        .unwrap_or(false)
}

/// Fails the leader the way `fault` says and measures the recovery.
fn inject(c: &mut Cluster, fault: Fault, job: &str) -> anyhow::Result<Outcome> {
    // Every JobManager up and a standby (its candidacy open), as before a real failure.
    for i in 0..JOBMANAGERS {
        if !c.jobmanagers[i].alive() {
            c.jobmanagers[i] = c.flink.jobmanager(&c.roles[i])?;
        }
    }
    wait_for("every JobManager to stand by", START_TIMEOUT, || {
        (0..JOBMANAGERS).all(|i| c.candidacy_open(i)).then_some(())
    })?;
    let from = wait_for("a leader", RECOVERY_TIMEOUT, || c.leader())?;
    let lines_at_fault = c.tm_lines().len();
    let latest_before = wait_for("the latest checkpoint", RECOVERY_TIMEOUT, || {
        c.rest.latest_checkpoint(c.roles[from].rest_port, job)
    })
    .ok();
    let fault_at = flink::utc(std::time::SystemTime::now());
    let t0 = Instant::now();
    match fault {
        Fault::Crash => c.jobmanagers[from].kill()?,
        Fault::MachineLoss => {
            c.jobmanagers[from].kill()?;
            c.sidecars[from].kill()?;
        }
        Fault::Sigterm => c.jobmanagers[from].terminate(Duration::from_secs(30))?,
    }
    let to = wait_for("a new leader", RECOVERY_TIMEOUT, || {
        c.leader().filter(|&i| i != from)
    })?;
    let takeover = t0.elapsed();
    let port = c.roles[to].rest_port;
    wait_for(
        "the job to run under the new leader",
        RECOVERY_TIMEOUT,
        || (c.rest.job_state(port, job)? == "RUNNING").then_some(()),
    )?;
    let running = t0.elapsed();
    let base = wait_for(
        "the new leader's checkpoint statistics",
        RECOVERY_TIMEOUT,
        || c.rest.completed_checkpoints(port, job),
    )?;
    wait_for(
        "two checkpoints under the new leader",
        RECOVERY_TIMEOUT,
        || (c.rest.completed_checkpoints(port, job)? >= base + 2).then_some(()),
    )?;
    let checkpointed = t0.elapsed();
    let restored = c.jobmanagers[to].restored_since(job, &fault_at);
    println!(
        "    {}: {} → {}: new leader after {} ms, job RUNNING after {:.2} s, two checkpoints after {:.2} s",
        fault.name(),
        c.roles[from].name,
        c.roles[to].name,
        takeover.as_millis(),
        running.as_secs_f64(),
        checkpointed.as_secs_f64()
    );
    if fault == Fault::MachineLoss {
        // The machine comes back: its sidecar first, then its JobManager.
        c.sidecars[from].restart(&c.sidecar_bin)?;
    }
    Ok(Outcome {
        fault,
        from,
        to,
        takeover,
        running,
        checkpointed,
        lines_at_fault,
        latest_before,
        restored,
    })
}
