//! The demo on real Flink: three stock Flink JobManagers (2.3, or 1.20), each beside a
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
//! `flink-demo [--flink 2.3|1.20] [--backend file|zookeeper=<quorum>|flink-zookeeper=<quorum>] [--kills N]
//! [--faults kill,machine-loss,sigterm] [--session-timeout DUR] [--run-dir DIR] [--report FILE]`,
//! with `FLINK_HOME` set to a Flink 2.3.0 distribution, or for `--flink 1.20`
//! `FLINK_1_20_HOME` to a Flink 1.20.3 one (`./scripts/demo.sh [--flink 1.20]`
//! installs it from PyPI, builds everything and runs this).
//!
//! `--backend flink-zookeeper=<quorum>` runs the same cluster, job and faults
//! on Flink's own ZooKeeper HA services, without sidecars: the baseline that
//! `./scripts/bench.sh` puts beside the sidecar's figures. There a "machine
//! loss" is the JobManager's kill -9 alone (it has no sidecar), and
//! `--session-timeout` sets Flink's ZooKeeper session timeout (its default
//! is 60 s).

mod counts;
mod flink;
mod release;
mod sidecars;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use demo::process::free_ports;
use serde_json::json;

use flink::{Flink, Process, Rest, Role, wait_for};
use release::Release;
use sidecars::{Backend, Paths, Sampler, Sidecar};

const JOBMANAGERS: usize = 3;
/// Three JVMs and a TaskManager starting at once on two cores are slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a recovery may take beyond the time a dead leader's session may
/// still hold the leadership (none with a sidecar: its candidacy closes).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Flink's default `high-availability.zookeeper.client.session-timeout`.
const FLINK_SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Which HA services the JobManagers, the TaskManager and the CLI use.
#[derive(Clone)]
pub enum Ha {
    /// ha-sidecar's Flink plugin, a sidecar on this backend beside every process.
    Sidecar(Backend),
    /// Flink's own ZooKeeper HA services and no sidecars: the baseline.
    FlinkZooKeeper {
        quorum: String,
        session_timeout: Duration,
    },
}

impl Ha {
    fn name(&self) -> String {
        match self {
            Ha::Sidecar(Backend::File) => "ha-sidecar, file backend".into(),
            Ha::Sidecar(Backend::ZooKeeper(q)) => format!("ha-sidecar, zookeeper backend ({q})"),
            Ha::FlinkZooKeeper {
                quorum,
                session_timeout,
            } => format!(
                "Flink's own ZooKeeper HA ({quorum}), session timeout {} ms",
                session_timeout.as_millis()
            ),
        }
    }

    /// The longest a crashed leader can keep the leadership: its ZooKeeper
    /// session's timeout on Flink's own HA.
    fn recovery_timeout(&self) -> Duration {
        match self {
            Ha::Sidecar(_) => RECOVERY_TIMEOUT,
            Ha::FlinkZooKeeper {
                session_timeout, ..
            } => RECOVERY_TIMEOUT + *session_timeout,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// kill -9 of the leading JobManager's JVM; its sidecar lives.
    Crash,
    /// kill -9 of the leading JobManager and its sidecar: the machine is gone.
    MachineLoss,
    /// SIGTERM of the leading JobManager: an orderly shutdown.
    Sigterm,
    /// Not injected: the whole cluster stopped on Flink's own ZooKeeper HA
    /// and started again on the sidecar (`--move-from-flink-ha`).
    Moved,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Crash => "kill -9 JobManager",
            Fault::MachineLoss => "machine loss",
            Fault::Sigterm => "SIGTERM JobManager",
            Fault::Moved => "moved from Flink's own HA",
        }
    }

    fn parse(word: &str) -> anyhow::Result<Fault> {
        Ok(match word {
            "kill" => Fault::Crash,
            "machine-loss" => Fault::MachineLoss,
            "sigterm" => Fault::Sigterm,
            _ => bail!("--faults: {word:?} is not a fault; use kill, machine-loss or sigterm"),
        })
    }
}

struct Args {
    release: Release,
    ha: Ha,
    move_from_flink_ha: bool,
    faults: Vec<Fault>,
    run_dir: Option<PathBuf>,
    report: Option<PathBuf>,
}

/// `60s`, `4s`, `1500ms`.
fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    let parsed = match v.strip_suffix("ms") {
        Some(n) => n.parse().ok().map(Duration::from_millis),
        None => v
            .strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs),
    };
    parsed.with_context(|| format!("{flag} {v:?}: give a duration such as 60s or 1500ms"))
}

fn args() -> anyhow::Result<Args> {
    let mut release = Release::V2_3;
    let mut backend = "file".to_string();
    let mut kills = 3;
    let mut faults = None;
    let mut session_timeout = FLINK_SESSION_TIMEOUT;
    let mut move_from_flink_ha = false;
    let mut run_dir = None;
    let mut report = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--flink" => release = Release::parse(&value("--flink")?)?,
            "--backend" => backend = value("--backend")?,
            "--kills" => {
                kills = value("--kills")?
                    .parse()
                    .context("--kills: a whole number")?
            }
            "--faults" => {
                faults = Some(
                    value("--faults")?
                        .split(',')
                        .map(Fault::parse)
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            }
            "--session-timeout" => {
                session_timeout = duration("--session-timeout", &value("--session-timeout")?)?
            }
            "--move-from-flink-ha" => move_from_flink_ha = true,
            "--run-dir" => run_dir = Some(value("--run-dir")?.into()),
            "--report" => report = Some(value("--report")?.into()),
            "-h" | "--help" => {
                println!(
                    "flink-demo [--flink 2.3|1.20] [--backend file|zookeeper=<quorum>|flink-zookeeper=<quorum>] [--kills N]\n           [--faults kill,machine-loss,sigterm] [--session-timeout DUR] [--move-from-flink-ha]\n           [--run-dir DIR] [--report FILE]\n  --kills N          N kill -9 of the leader, then a machine loss and a SIGTERM (default 3)\n  --faults LIST      these faults instead, in this order\n  --session-timeout  Flink's ZooKeeper session timeout with flink-zookeeper (default 60s)\n  --move-from-flink-ha  with zookeeper=: run the job on Flink's own ZooKeeper HA first, stop the\n                     cluster, start it on the sidecar (same quorum, root, cluster-id), then the faults\n  --flink 1.20       Flink 1.20 (FLINK_1_20_HOME, the plugin's 1.20 jar) instead of 2.3 (FLINK_HOME)\n  FLINK_HOME must name a Flink 2.3.0 distribution; ./scripts/demo.sh [--flink 1.20] sets everything up."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let ha = match backend.split_once('=') {
        None if backend == "file" => Ha::Sidecar(Backend::File),
        Some(("zookeeper", q)) if !q.is_empty() => Ha::Sidecar(Backend::ZooKeeper(q.into())),
        Some(("flink-zookeeper", q)) if !q.is_empty() => Ha::FlinkZooKeeper {
            quorum: q.into(),
            session_timeout,
        },
        _ => bail!(
            "--backend {backend:?}: use file, zookeeper=<host:port,...> or flink-zookeeper=<host:port,...>"
        ),
    };
    let faults = faults.unwrap_or_else(|| {
        let mut f = vec![Fault::Crash; kills];
        f.extend([Fault::MachineLoss, Fault::Sigterm]);
        f
    });
    Ok(Args {
        release,
        ha,
        move_from_flink_ha,
        faults,
        run_dir,
        report,
    })
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

fn locate(release: Release) -> anyhow::Result<Root> {
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
        plugin_jar: release.plugin_jar(&root),
        job_jar: release.job_jar(&root),
        default_run: root.join("flink-demo-run"),
    };
    for f in [&r.sidecars.sidecar, &r.plugin_jar, &r.job_jar] {
        if !f.is_file() {
            bail!(
                "{} is missing: {} builds it",
                f.display(),
                release.demo_command()
            );
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
    /// When the new leader's log says its Dispatcher was granted leadership
    /// (measured the same way on every kind of HA, from the log's clock).
    granted: Option<Duration>,
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
    ha: Ha,
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
    /// Which JobManager leads right now: on the sidecar, the one whose
    /// sidecar alone says so; on Flink's own HA, the live one whose
    /// Dispatcher was granted leadership last.
    fn leader(&self) -> Option<usize> {
        if let Ha::FlinkZooKeeper { .. } = self.ha {
            return self
                .jobmanagers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.alive())
                .filter_map(|(i, p)| Some((p.granted_since("")?, i)))
                .max()
                .map(|(_, i)| i);
        }
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

    /// JobManager `i` is up and would take over: its candidacy is open (on
    /// the sidecar), or its REST endpoint answers (on Flink's own HA, whose
    /// HA services start before it).
    fn stands_by(&self, i: usize) -> bool {
        stands_by(&self.ha, &self.probe, &self.rest, &self.roles[i])
    }

    fn tm_lines(&self) -> Vec<(u64, u64)> {
        counts::parse(&self.taskmanager.output())
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let root = locate(args.release)?;
    let home = args.release.home()?;
    let run = args.run_dir.clone().unwrap_or(root.default_run.clone());
    if run.exists() {
        std::fs::remove_dir_all(&run)
            .with_context(|| format!("cannot remove {}", run.display()))?;
    }
    std::fs::create_dir_all(&run)?;
    let ha_name = args.ha.name();
    println!(
        "==> Flink {} on {ha_name}; logs in {}",
        args.release.version(),
        run.display()
    );

    let ports = free_ports(3 * JOBMANAGERS + 3)?;
    let roles: Vec<Role> = (0..JOBMANAGERS)
        .map(|i| Role {
            name: format!("jm-{}", i + 1),
            sidecar_port: ports[i],
            rest_port: ports[JOBMANAGERS + 1 + i],
            rpc_port: ports[2 * JOBMANAGERS + 2 + i],
        })
        .collect();
    let observer = Role {
        name: "tm-1".into(),
        sidecar_port: ports[JOBMANAGERS],
        rest_port: ports[2 * JOBMANAGERS + 1],
        rpc_port: ports[3 * JOBMANAGERS + 2],
    };
    let flink = Flink::prepare(&home, &root.plugin_jar, &run, &args.ha)?;
    let probe = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1000))
        .build();
    let job_jar = root.job_jar.display().to_string();

    // A cluster that ran on Flink's own ZooKeeper HA first, then stopped.
    let moved = match &args.ha {
        Ha::Sidecar(Backend::ZooKeeper(quorum)) if args.move_from_flink_ha => {
            let own = Ha::FlinkZooKeeper {
                quorum: quorum.clone(),
                session_timeout: FLINK_SESSION_TIMEOUT,
            };
            println!("    first on {}:", own.name());
            let old = start_cluster(
                &own,
                flink.with_ha(&own),
                Vec::new(),
                &roles,
                &observer,
                &probe,
                &root.sidecars.sidecar,
            )?;
            Some(run_then_stop(old, &job_jar)?)
        }
        _ if args.move_from_flink_ha => {
            bail!(
                "--move-from-flink-ha needs --backend zookeeper=<quorum>: the cluster moves within one ZooKeeper"
            )
        }
        _ => None,
    };

    let mut sidecars = Vec::new();
    if let Ha::Sidecar(backend) = &args.ha {
        for (role, candidacy) in roles
            .iter()
            .map(|r| (r, "client"))
            .chain([(&observer, "never")])
        {
            sidecars.push(Sidecar::start(
                &role.name,
                role.sidecar_port,
                candidacy,
                backend,
                &root.sidecars,
                &run,
            )?);
        }
    }
    let mut c = start_cluster(
        &args.ha,
        flink,
        sidecars,
        &roles,
        &observer,
        &probe,
        &root.sidecars.sidecar,
    )?;
    let sampler = matches!(c.ha, Ha::Sidecar(_)).then(|| {
        Sampler::start(
            c.sidecars
                .iter()
                .take(JOBMANAGERS)
                .map(|s| s.port)
                .collect(),
        )
    });

    let mut outcomes = Vec::new();
    let job = match moved {
        Some(m) => {
            let job = m.job.clone();
            outcomes.push(recover_moved(&c, m)?);
            job
        }
        None => submit(&c, &job_jar)?,
    };
    for &fault in &args.faults {
        outcomes.push(inject(&mut c, fault, &job)?);
    }

    let listed = c.flink.cli(&c.observer, &["list", "-r"])?;
    let list_ok = listed.contains(&job);
    println!(
        "    flink list -r: {}",
        if list_ok {
            "lists the job"
        } else {
            "does NOT list the job"
        }
    );
    c.flink.cli(&c.observer, &["cancel", &job])?;
    // Flink's own HA cleans up after itself in ZooKeeper; only the sidecar's
    // keys are checked here.
    let cleaned = !matches!(c.ha, Ha::Sidecar(_))
        || wait_for(
            "the job's HA data to be cleaned up",
            RECOVERY_TIMEOUT,
            || job_keys_left(&c, &job)?.is_empty().then_some(()),
        )
        .is_ok();

    let samples = sampler.map(Sampler::finish).unwrap_or_default();
    let overlaps = sidecars::overlaps(&samples);
    let lines = c.tm_lines();
    let problems = counts::problems(&lines);
    let restarts = counts::restarts(&lines);

    println!();
    println!(
        "| fault | from → to | new leader | Flink granted | job RUNNING | 2 checkpoints | latest checkpoint → restored | last count printed | first count after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
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
            "| {} | {} → {} | {} ms | {} | {:.2} s | {:.2} s | {} → {} | {} | {} |",
            o.fault.name(),
            c.roles[o.from].name,
            c.roles[o.to].name,
            o.takeover.as_millis(),
            o.granted
                .map_or("?".to_string(), |d| format!("{} ms", d.as_millis())),
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
            "granted_ms": o.granted.map(|d| d.as_millis() as u64),
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
    if matches!(c.ha, Ha::Sidecar(_)) {
        println!(
            "    leadership: {} samples of the three candidate sidecars, {}",
            samples.len(),
            if overlaps.is_empty() {
                "never two leaders at once".to_string()
            } else {
                format!("OVERLAPS: {}", overlaps.join("; "))
            }
        );
    }
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
        if !matches!(c.ha, Ha::Sidecar(_)) {
            "Flink's own (not checked)"
        } else if cleaned {
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
            "flink": args.release.version(),
            "backend": ha_name,
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

/// A JobManager stands by once it holds its sidecar's candidacy open (on
/// the sidecar) or its REST endpoint answers (on Flink's own HA, whose HA
/// services start before it).
fn stands_by(ha: &Ha, probe: &ureq::Agent, rest: &Rest, role: &Role) -> bool {
    match ha {
        Ha::Sidecar(_) => candidacy_open(probe, role.sidecar_port),
        Ha::FlinkZooKeeper { .. } => rest.config(role.rest_port),
    }
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

/// Starts the JobManagers one at a time (several JVMs starting at once on
/// two cores can miss Flink's fixed 10 s actor-system start timeout), then
/// the TaskManager, and waits until one JobManager leads and the TaskManager
/// registered with it.
fn start_cluster(
    ha: &Ha,
    flink: Flink,
    sidecars: Vec<Sidecar>,
    roles: &[Role],
    observer: &Role,
    probe: &ureq::Agent,
    sidecar_bin: &Path,
) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let rest = Rest::new();
    let mut jobmanagers = Vec::new();
    for role in roles {
        jobmanagers.push(flink.jobmanager(role)?);
        wait_for(&format!("{} to stand by", role.name), START_TIMEOUT, || {
            stands_by(ha, probe, &rest, role).then_some(())
        })?;
    }
    let taskmanager = flink.taskmanager(observer)?;
    let c = Cluster {
        ha: ha.clone(),
        flink,
        sidecar_bin: sidecar_bin.to_path_buf(),
        sidecars,
        roles: roles.to_vec(),
        jobmanagers,
        taskmanager,
        observer: observer.clone(),
        rest,
        probe: probe.clone(),
    };
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
    Ok(c)
}

/// Submits the counting job through the CLI and waits until it has
/// checkpointed twice; returns its id.
fn submit(c: &Cluster, job_jar: &str) -> anyhow::Result<String> {
    let submitted = c.flink.cli(&c.observer, &["run", "-d", job_jar, "10"])?;
    let job = submitted
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|ch| ch.is_ascii_hexdigit()))
        .with_context(|| format!("no job id in the CLI's output:\n{submitted}"))?
        .to_string();
    println!(
        "    job {job} submitted through the CLI ({})",
        match c.ha {
            Ha::Sidecar(_) => "REST leader found through the observer sidecar",
            Ha::FlinkZooKeeper { .. } => "REST leader found in ZooKeeper",
        }
    );
    wait_for("the job to checkpoint twice", RECOVERY_TIMEOUT, || {
        let port = c.roles[c.leader()?].rest_port;
        (c.rest.job_state(port, &job)? == "RUNNING"
            && c.rest.completed_checkpoints(port, &job)? >= 2)
            .then_some(())
    })?;
    Ok(job)
}

/// What a cluster left when it stopped on Flink's own HA.
struct Moved {
    job: String,
    from: usize,
    latest: Option<u64>,
    lines: usize,
    stopped: Instant,
    stopped_utc: String,
}

/// Runs the job on `old` (Flink's own HA), then stops the cluster as an
/// operator would before moving it: SIGTERM to the standbys, then to the
/// leader (a session cluster suspends its jobs and keeps their HA data),
/// then the TaskManager.
fn run_then_stop(mut old: Cluster, job_jar: &str) -> anyhow::Result<Moved> {
    let job = submit(&old, job_jar)?;
    let from = wait_for("a leader", RECOVERY_TIMEOUT, || old.leader())?;
    let latest = old.rest.latest_checkpoint(old.roles[from].rest_port, &job);
    let lines = old.tm_lines().len();
    let stopped_utc = flink::utc(std::time::SystemTime::now());
    for i in (0..JOBMANAGERS).filter(|&i| i != from).chain([from]) {
        old.jobmanagers[i].terminate(Duration::from_secs(30))?;
    }
    old.taskmanager.kill()?;
    let stopped = Instant::now();
    println!(
        "    stopped the cluster (SIGTERM to every JobManager, the leader {} last): job {job} suspended at checkpoint {}",
        old.roles[from].name,
        latest.map_or("?".to_string(), |n| n.to_string())
    );
    println!("    then on the sidecar, same ZooKeeper quorum, root and cluster-id:");
    Ok(Moved {
        job,
        from,
        latest,
        lines,
        stopped,
        stopped_utc,
    })
}

/// Waits until the cluster, started on the sidecar, runs the job it found
/// in ZooKeeper again, from the checkpoint it was suspended at (or a newer one).
fn recover_moved(c: &Cluster, m: Moved) -> anyhow::Result<Outcome> {
    let to = wait_for("a leader", RECOVERY_TIMEOUT, || c.leader())?;
    let takeover = m.stopped.elapsed();
    let port = c.roles[to].rest_port;
    wait_for("the moved job to run", RECOVERY_TIMEOUT, || {
        (c.jobmanagers[to]
            .restored_since(&m.job, &m.stopped_utc)
            .is_some()
            && c.rest.job_state(port, &m.job)? == "RUNNING")
            .then_some(())
    })?;
    let running = m.stopped.elapsed();
    let base = wait_for("checkpoint statistics", RECOVERY_TIMEOUT, || {
        c.rest.completed_checkpoints(port, &m.job)
    })?;
    wait_for("two checkpoints on the sidecar", RECOVERY_TIMEOUT, || {
        (c.rest.completed_checkpoints(port, &m.job)? >= base + 2).then_some(())
    })?;
    let checkpointed = m.stopped.elapsed();
    let restored = c.jobmanagers[to].restored_since(&m.job, &m.stopped_utc);
    println!(
        "    moved from Flink's own HA: {} leads {:.1} s after the stop (the cluster restarted), job RUNNING from checkpoint {} after {:.1} s",
        c.roles[to].name,
        takeover.as_secs_f64(),
        restored.map_or("?".to_string(), |n| n.to_string()),
        running.as_secs_f64()
    );
    Ok(Outcome {
        fault: Fault::Moved,
        from: m.from,
        to,
        takeover,
        granted: c.jobmanagers[to]
            .granted_since(&m.stopped_utc)
            .and_then(|stamp| flink::elapsed(&m.stopped_utc, &stamp)),
        running,
        checkpointed,
        lines_at_fault: m.lines,
        latest_before: m.latest,
        restored,
    })
}

/// The keys of `job` still in the leading sidecar's state (None while no
/// sidecar leads or answers). The plugin's keys are Flink's znode names: the
/// job store's (`execution-plans/`, 1.x `jobgraphs/`) and `jobs/<job>/`.
fn job_keys_left(c: &Cluster, job: &str) -> Option<Vec<String>> {
    let i = c.leader()?;
    let mut left = Vec::new();
    for prefix in ["execution-plans/", "jobgraphs/", "jobs/"] {
        let keys: serde_json::Value = c
            .probe
            .get(&format!(
                "http://127.0.0.1:{}/state?prefix={prefix}",
                c.sidecars[i].port
            ))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        left.extend(
            keys["keys"]
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str())
                .filter(|k| k.contains(job))
                .map(str::to_string),
        );
    }
    Some(left)
}

/// Fails the leader the way `fault` says and measures the recovery.
fn inject(c: &mut Cluster, fault: Fault, job: &str) -> anyhow::Result<Outcome> {
    // Every JobManager up and a standby, as before a real failure.
    for i in 0..JOBMANAGERS {
        if !c.jobmanagers[i].alive() {
            c.jobmanagers[i] = c.flink.jobmanager(&c.roles[i])?;
        }
    }
    wait_for("every JobManager to stand by", START_TIMEOUT, || {
        (0..JOBMANAGERS).all(|i| c.stands_by(i)).then_some(())
    })?;
    let recovery = c.ha.recovery_timeout();
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
            // On Flink's own HA there is no sidecar: the JVM is the machine.
            if let Some(s) = c.sidecars.get_mut(from) {
                s.kill()?;
            }
        }
        Fault::Sigterm => c.jobmanagers[from].terminate(Duration::from_secs(30))?,
        Fault::Moved => bail!("a move is not a fault to inject"),
    }
    let to = wait_for("a new leader", recovery, || {
        c.leader().filter(|&i| i != from)
    })?;
    let takeover = t0.elapsed();
    let port = c.roles[to].rest_port;
    // RUNNING counts once the new leader restored the job: before that its
    // REST endpoint may still show what it cached from the old leader.
    wait_for("the job to run under the new leader", recovery, || {
        (c.jobmanagers[to].restored_since(job, &fault_at).is_some()
            && c.rest.job_state(port, job)? == "RUNNING")
            .then_some(())
    })?;
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
    let granted = c.jobmanagers[to]
        .granted_since(&fault_at)
        .and_then(|stamp| flink::elapsed(&fault_at, &stamp));
    println!(
        "    {}: {} → {}: new leader after {} ms, job RUNNING after {:.2} s, two checkpoints after {:.2} s",
        fault.name(),
        c.roles[from].name,
        c.roles[to].name,
        takeover.as_millis(),
        running.as_secs_f64(),
        checkpointed.as_secs_f64()
    );
    if fault == Fault::MachineLoss
        && let Some(s) = c.sidecars.get_mut(from)
    {
        // The machine comes back: its sidecar first, then its JobManager.
        s.restart(&c.sidecar_bin)?;
    }
    Ok(Outcome {
        fault,
        from,
        to,
        takeover,
        granted,
        running,
        checkpointed,
        lines_at_fault,
        latest_before,
        restored,
    })
}
