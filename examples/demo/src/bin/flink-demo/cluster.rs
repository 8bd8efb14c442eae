//! The demo's Flink cluster: three JobManagers (beside candidate sidecars
//! on the sidecar), one TaskManager (beside an observer), how it starts,
//! who leads, and the job submitted to it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::args::Ha;
use crate::counts;
use crate::flink::{Flink, Process, Rest, Role, wait_for};
use crate::sidecars::Sidecar;
use crate::{JOBMANAGERS, RECOVERY_TIMEOUT, START_TIMEOUT};

pub struct Cluster {
    pub ha: Ha,
    pub flink: Flink,
    pub sidecar_bin: PathBuf,
    pub sidecars: Vec<Sidecar>,
    pub roles: Vec<Role>,
    pub jobmanagers: Vec<Process>,
    pub taskmanager: Process,
    pub observer: Role,
    pub rest: Rest,
    pub probe: ureq::Agent,
}

impl Cluster {
    /// Which JobManager leads right now: on the sidecar, the one whose
    /// sidecar alone says so; on Flink's own HA, the live one whose
    /// Dispatcher was granted leadership last.
    pub fn leader(&self) -> Option<usize> {
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
    pub fn stands_by(&self, i: usize) -> bool {
        stands_by(&self.ha, &self.probe, &self.rest, &self.roles[i])
    }

    pub fn tm_lines(&self) -> Vec<(u64, u64)> {
        counts::parse(&self.taskmanager.output())
    }
}

/// A JobManager stands by once it holds its sidecar's candidacy open (on
/// the sidecar) or its REST endpoint answers (on Flink's own HA, whose HA
/// services start before it).
pub fn stands_by(ha: &Ha, probe: &ureq::Agent, rest: &Rest, role: &Role) -> bool {
    match ha {
        Ha::Sidecar(_) => candidacy_open(probe, role.sidecar_port),
        Ha::FlinkZooKeeper { .. } => rest.config(role.rest_port),
    }
}

/// A JobManager stands by once it holds its sidecar's candidacy open.
pub fn candidacy_open(probe: &ureq::Agent, port: u16) -> bool {
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
pub fn start_cluster(
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
pub fn submit(c: &Cluster, job_jar: &str) -> anyhow::Result<String> {
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

/// The keys of `job` still in the leading sidecar's state (None while no
/// sidecar leads or answers). The plugin's keys are Flink's znode names: the
/// job store's (`execution-plans/`, 1.x `jobgraphs/`) and `jobs/<job>/`.
pub fn job_keys_left(c: &Cluster, job: &str) -> Option<Vec<String>> {
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
