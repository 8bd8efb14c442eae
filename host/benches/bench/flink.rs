//! Flink end to end, side by side, in one run: the same cluster (three stock
//! Flink 2.3 JobManagers and a TaskManager), the same counting job with a
//! checkpoint every second, the same kind of ZooKeeper (a fresh 3-member
//! ensemble per setup, so no setup inherits another's sessions), on
//!
//! - Flink's own ZooKeeper HA with its default 60 s session timeout (the
//!   ensembles grant sessions up to 120 s, so Flink gets what it asks for),
//! - Flink's own ZooKeeper HA with the 4 s session the sidecar's ZooKeeper
//!   plugin uses (a shorter session is what an operator would try first),
//! - Flink on ha-sidecar with the ZooKeeper plugin, and with the file plugin.
//!
//! Each setup takes a kill -9 of the leading JobManager's JVM, a machine loss
//! (JobManager and sidecar; on Flink's own HA the JVM alone, as it has no
//! sidecar) and a SIGTERM, and the clock runs from the fault until the new
//! leader's Dispatcher is granted leadership (its log), until the job is
//! RUNNING again under it (restored from its latest checkpoint), and until it
//! has completed two more checkpoints. The scenario is the `flink-demo`
//! binary's (`--report` JSON), which also checks that every count continued
//! with no value lost; a setup whose demo fails makes the benchmark fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::group::progress;
use crate::report::{Report, Row, Section, human};
use crate::support::repo_root;
use crate::zk::ZooKeeper;

/// The longest session the ensembles grant: more than Flink's default 60 s,
/// so that every client gets the session it asked for (a stock server's
/// `maxSessionTimeout` is 20 ticks, 40 s with the default 2 s tick).
const GRANTED_SESSION: Duration = Duration::from_secs(120);

/// The goal the project set: a JobManager crash recovered end to end in
/// under 3 s, where Flink's own HA waits out a session.
const GOAL: Duration = Duration::from_secs(3);

struct Setup {
    name: &'static str,
    /// `--backend` of the demo, `{quorum}` replaced by a fresh ensemble's.
    backend: &'static str,
    session_timeout: Option<&'static str>,
    zookeeper: bool,
}

const SETUPS: [Setup; 4] = [
    Setup {
        name: "Flink's own ZooKeeper HA, 60 s session (default)",
        backend: "flink-zookeeper={quorum}",
        session_timeout: Some("60s"),
        zookeeper: true,
    },
    Setup {
        name: "Flink's own ZooKeeper HA, 4 s session",
        backend: "flink-zookeeper={quorum}",
        session_timeout: Some("4s"),
        zookeeper: true,
    },
    Setup {
        name: "Flink on ha-sidecar, zookeeper plugin",
        backend: "zookeeper={quorum}",
        session_timeout: None,
        zookeeper: true,
    },
    Setup {
        name: "Flink on ha-sidecar, file plugin",
        backend: "file",
        session_timeout: None,
        zookeeper: false,
    },
];

const FAULTS: [(&str, &str); 3] = [
    ("kill", "kill -9 JobManager"),
    ("machine-loss", "machine loss"),
    ("sigterm", "SIGTERM JobManager"),
];

/// One fault as the demo measured it, in milliseconds from the fault.
struct Measured {
    granted_ms: Option<u64>,
    running_ms: u64,
    checkpointed_ms: u64,
}

pub fn run(report: &mut Report, trials: usize) {
    let root = repo_root();
    let binary = root.join("target/release/flink-demo");
    let home = std::env::var_os("FLINK_HOME").expect(
        "FLINK_HOME is not set: the Flink section needs a Flink 2.3.0 distribution (./scripts/bench.sh installs it)",
    );
    assert!(
        binary.is_file(),
        "{} is missing: ./scripts/bench.sh builds it (cargo build --release -p demo)",
        binary.display()
    );
    let faults: Vec<&str> = FAULTS
        .iter()
        .flat_map(|(arg, _)| std::iter::repeat_n(*arg, trials))
        .collect();
    let mut results: Vec<(&Setup, Vec<(String, Measured)>)> = Vec::new();
    for setup in &SETUPS {
        progress(&format!(
            "flink: {} — {} faults (a few minutes; the 60 s session takes longest)",
            setup.name,
            faults.len()
        ));
        let ensemble = setup
            .zookeeper
            .then(|| ZooKeeper::ensemble_granting(3, GRANTED_SESSION));
        let backend = setup.backend.replace(
            "{quorum}",
            &ensemble.as_ref().map(|e| e.quorum()).unwrap_or_default(),
        );
        let run_dir: PathBuf = std::env::temp_dir().join(format!(
            "ha-sidecar-bench-flink-{}-{}",
            results.len(),
            std::process::id()
        ));
        let json = run_dir.with_extension("json");
        let mut cmd = Command::new(&binary);
        cmd.current_dir(&root)
            .env("FLINK_HOME", &home)
            .args(["--backend", &backend, "--faults", &faults.join(",")])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--report")
            .arg(&json);
        if let Some(t) = setup.session_timeout {
            cmd.args(["--session-timeout", t]);
        }
        // The demo's own progress and table go to stderr: stdout is the benchmark's tables.
        let status = cmd
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .expect("cannot run flink-demo");
        let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!(
                "flink-demo on {} ({status}) wrote no report: {e}; logs in {}",
                setup.name,
                run_dir.display()
            )
        });
        let r: Value = serde_json::from_str(&text).expect("the demo's report is JSON");
        assert!(
            status.success() && r["ok"] == true,
            "flink-demo failed on {}: {text}\nlogs in {}",
            setup.name,
            run_dir.display()
        );
        let measured = r["faults"]
            .as_array()
            .expect("faults")
            .iter()
            .map(|f| {
                (
                    f["fault"].as_str().unwrap_or("?").to_string(),
                    Measured {
                        granted_ms: f["granted_ms"].as_u64(),
                        running_ms: f["running_ms"].as_u64().expect("running_ms"),
                        checkpointed_ms: f["checkpointed_ms"].as_u64().expect("checkpointed_ms"),
                    },
                )
            })
            .collect();
        let _ = std::fs::remove_dir_all(&run_dir);
        let _ = std::fs::remove_file(&json);
        results.push((setup, measured));
    }

    let baseline = &results[0];
    for (_, fault) in FAULTS {
        let of = |m: &[(String, Measured)]| -> Vec<Duration> {
            m.iter()
                .filter(|(f, _)| f == fault)
                .map(|(_, x)| Duration::from_millis(x.running_ms))
                .collect()
        };
        let base = of(&baseline.1);
        for (setup, measured) in &results {
            let mine: Vec<&Measured> = measured
                .iter()
                .filter(|(f, _)| f == fault)
                .map(|(_, m)| m)
                .collect();
            let running: Vec<Duration> = of(measured);
            let worst = running.iter().max().copied().unwrap_or_default();
            let cells = |pick: &dyn Fn(&Measured) -> Option<u64>| -> String {
                mine.iter()
                    .map(|m| pick(m).map_or("?".into(), |v| human(Duration::from_millis(v))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut row = Row::new(
                Section::Flink,
                format!("{fault}: job RUNNING again under the new leader"),
                setup.name,
            )
            .value(format!(
                "{} (Flink leader {}; 2 checkpoints {})",
                cells(&|m| Some(m.running_ms)),
                cells(&|m| m.granted_ms),
                cells(&|m| Some(m.checkpointed_ms)),
            ))
            .samples(mine.len())
            .compare(
                base.iter()
                    .map(|d| human(*d))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .figure("running_max_ms", worst.as_secs_f64() * 1e3);
            if fault == "kill -9 JobManager" {
                row = row.target(format!("< {}", human(GOAL)), worst < GOAL);
            }
            report.add(row);
        }
    }
}
