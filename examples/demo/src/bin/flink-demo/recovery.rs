//! What the demo does to the cluster and measures: a fault injected into
//! the leader, or a move from Flink's own HA, and the recovery after it.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::args::Fault;
use crate::cluster::{Cluster, submit};
use crate::flink::{self, wait_for};
use crate::{JOBMANAGERS, RECOVERY_TIMEOUT, START_TIMEOUT};

/// What one fault did, as measured.
pub struct Outcome {
    pub fault: Fault,
    pub from: usize,
    pub to: usize,
    pub takeover: Duration,
    /// When the new leader's log says its Dispatcher was granted leadership
    /// (measured the same way on every kind of HA, from the log's clock).
    pub granted: Option<Duration>,
    pub running: Duration,
    pub checkpointed: Duration,
    /// How many output lines there were when the fault struck.
    pub lines_at_fault: usize,
    /// The latest completed checkpoint the old leader reported before the fault.
    pub latest_before: Option<u64>,
    /// The checkpoint the new leader restored the job from (its log says so).
    pub restored: Option<u64>,
}

/// What a cluster left when it stopped on Flink's own HA.
pub struct Moved {
    pub job: String,
    pub from: usize,
    pub latest: Option<u64>,
    pub lines: usize,
    pub stopped: Instant,
    pub stopped_utc: String,
}

/// Runs the job on `old` (Flink's own HA), then stops the cluster as an
/// operator would before moving it: SIGTERM to the standbys, then to the
/// leader (a session cluster suspends its jobs and keeps their HA data),
/// then the TaskManager.
pub fn run_then_stop(mut old: Cluster, job_jar: &str) -> anyhow::Result<Moved> {
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
pub fn recover_moved(c: &Cluster, m: Moved) -> anyhow::Result<Outcome> {
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

/// Fails the leader the way `fault` says and measures the recovery.
pub fn inject(c: &mut Cluster, fault: Fault, job: &str) -> anyhow::Result<Outcome> {
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
