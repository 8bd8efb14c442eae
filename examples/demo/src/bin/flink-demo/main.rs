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

mod args;
mod cluster;
mod counts;
mod flink;
mod recovery;
mod release;
mod sidecars;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use demo::process::free_ports;
use serde_json::json;

use args::{Args, FLINK_SESSION_TIMEOUT, Ha, args};
use cluster::{job_keys_left, start_cluster, submit};
use flink::{Flink, Role, wait_for};
use recovery::{inject, recover_moved, run_then_stop};
use release::Release;
use sidecars::{Backend, Paths, Sampler, Sidecar};

const JOBMANAGERS: usize = 3;
/// Three JVMs and a TaskManager starting at once on two cores are slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a recovery may take beyond the time a dead leader's session may
/// still hold the leadership (none with a sidecar: its candidacy closes).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

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
