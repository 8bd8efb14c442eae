//! The command line: which Flink, which HA services, which faults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::RECOVERY_TIMEOUT;
use crate::release::Release;
use crate::sidecars::Backend;

/// Flink's default `high-availability.zookeeper.client.session-timeout`.
pub const FLINK_SESSION_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub fn name(&self) -> String {
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
    pub fn recovery_timeout(&self) -> Duration {
        match self {
            Ha::Sidecar(_) => RECOVERY_TIMEOUT,
            Ha::FlinkZooKeeper {
                session_timeout, ..
            } => RECOVERY_TIMEOUT + *session_timeout,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
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
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "kill -9 JobManager",
            Fault::MachineLoss => "machine loss",
            Fault::Sigterm => "SIGTERM JobManager",
            Fault::Moved => "moved from Flink's own HA",
        }
    }

    pub fn parse(word: &str) -> anyhow::Result<Fault> {
        Ok(match word {
            "kill" => Fault::Crash,
            "machine-loss" => Fault::MachineLoss,
            "sigterm" => Fault::Sigterm,
            _ => bail!("--faults: {word:?} is not a fault; use kill, machine-loss or sigterm"),
        })
    }
}

pub struct Args {
    pub release: Release,
    pub ha: Ha,
    pub move_from_flink_ha: bool,
    pub faults: Vec<Fault>,
    pub run_dir: Option<PathBuf>,
    pub report: Option<PathBuf>,
}

/// `60s`, `4s`, `1500ms`.
pub fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    let parsed = match v.strip_suffix("ms") {
        Some(n) => n.parse().ok().map(Duration::from_millis),
        None => v
            .strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs),
    };
    parsed.with_context(|| format!("{flag} {v:?}: give a duration such as 60s or 1500ms"))
}

pub fn args() -> anyhow::Result<Args> {
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
