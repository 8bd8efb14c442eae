//! A job's HA data, in the key layout Flink's own HA services use (so
//! a Flink reader finds what it expects), on top of the value store: its graph, its completed checkpoints (newest N kept), its checkpoint
//! id counter, and its entry in the job result store.
//!
//! ```text
//! jobgraphs/<job>                          the job graph (execution plan)
//! jobs/<job>/checkpoints/<%019d id>        completed checkpoints
//! jobs/<job>/checkpoint_id_counter         decimal counter
//! job-results/<job>                        {"state": "dirty"|"clean", "result": ...}
//! ```
//! Every write is fenced by the caller's term.

mod lifecycle;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use lifecycle::{Cleanup, LeaderDuties, Lifecycle, ResultOutcome};

use crate::runtime::{CallError, Failure};
use crate::storage::{ValueError, ValueStore};

pub fn graph_key(job: &str) -> String {
    format!("jobgraphs/{job}")
}
pub fn checkpoints_prefix(job: &str) -> String {
    format!("jobs/{job}/checkpoints/")
}
pub fn checkpoint_key(job: &str, id: u64) -> String {
    format!("jobs/{job}/checkpoints/{id:019}")
}
pub fn counter_key(job: &str) -> String {
    format!("jobs/{job}/checkpoint_id_counter")
}
pub fn result_key(job: &str) -> String {
    format!("job-results/{job}")
}

/// Job ids become key segments: Flink's are 32 hex digits; we accept the key alphabet.
pub fn check_job_id(job: &str) -> Result<(), String> {
    if job.is_empty()
        || job.len() > 64
        || !job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || job.starts_with('.')
    {
        return Err(format!(
            "job id {job:?} must be 1 to 64 characters of A-Z a-z 0-9 - _ . (Flink's are 32 hex digits)"
        ));
    }
    Ok(())
}

/// The job that key `key` of the job layout is for, if `job` is a job id.
fn job_of(key: &str, job: &str) -> Option<String> {
    match check_job_id(job) {
        Ok(()) => Some(job.to_string()),
        Err(why) => {
            tracing::debug!(key, %why, "not a job's HA data (written through /state?); not listed");
            None
        }
    }
}

/// What is stored in the job result store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultEntry {
    /// "dirty" until all of the job's HA data is gone, then "clean".
    pub state: String,
    pub result: Value,
}

pub struct JobStore {
    pub values: Arc<ValueStore>,
    pub retained_checkpoints: usize,
    gates: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Gate>>>>,
}

/// Serializes a job's writes with its lifecycle in this sidecar, so that a
/// checkpoint racing with `PUT /result` either lands before the dirty record
/// (and is cleaned up) or is refused, never lands after the cleanup.
#[derive(Default)]
pub struct Gate {
    /// This process finished the job: refuse its writes even after the
    /// result itself is deleted on commit.
    pub finished: bool,
}

impl JobStore {
    pub fn new(values: Arc<ValueStore>, retained_checkpoints: usize) -> Self {
        Self {
            values,
            retained_checkpoints,
            gates: Default::default(),
        }
    }

    /// Holds the job's gate for the duration of one write or lifecycle step.
    pub async fn gate(&self, job: &str) -> tokio::sync::OwnedMutexGuard<Gate> {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.to_string())
            .or_default()
            .clone();
        gate.lock_owned().await
    }

    pub async fn put_graph(&self, job: &str, graph: &[u8], fence: u64) -> Result<u64, ValueError> {
        let gate = self.gate(job).await;
        self.refuse_if_finished(job, &gate).await?;
        self.values
            .put(&graph_key(job), graph, None, Some(fence))
            .await
    }

    pub async fn get_graph(&self, job: &str) -> Result<Option<(Vec<u8>, u64)>, ValueError> {
        self.values.get(&graph_key(job)).await
    }

    /// Checkpoint ids of a job, oldest first.
    pub async fn checkpoints(&self, job: &str) -> Result<Vec<u64>, ValueError> {
        let prefix = checkpoints_prefix(job);
        let mut ids: Vec<u64> = self
            .values
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Adds a completed checkpoint (each id once), then deletes all but the
    /// newest `retained_checkpoints`, files included. Returns the new
    /// version and the ids removed.
    pub async fn add_checkpoint(
        &self,
        job: &str,
        id: u64,
        payload: &[u8],
        fence: u64,
    ) -> Result<(u64, Vec<u64>), ValueError> {
        let gate = self.gate(job).await;
        self.refuse_if_finished(job, &gate).await?;
        let version = self
            .values
            .put(&checkpoint_key(job, id), payload, Some(0), Some(fence))
            .await?;
        // The checkpoint is stored: from here on, failures must not be
        // reported as if it were not. Retention catches up on the next add.
        let mut removed = Vec::new();
        match self.checkpoints(job).await {
            Ok(ids) => {
                let excess = ids.len().saturating_sub(self.retained_checkpoints);
                for old in ids.into_iter().take(excess) {
                    match self
                        .values
                        .delete(&checkpoint_key(job, old), None, Some(fence))
                        .await
                    {
                        Ok(()) => removed.push(old),
                        Err(e) => {
                            tracing::warn!(job, checkpoint = old, error = %e, "checkpoint stored, but an old one could not be removed yet");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job, error = %e, "checkpoint stored, but old ones could not be listed for removal")
            }
        }
        Ok((version, removed))
    }

    pub async fn get_checkpoint(
        &self,
        job: &str,
        id: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, ValueError> {
        self.values.get(&checkpoint_key(job, id)).await
    }

    pub async fn latest_checkpoint(&self, job: &str) -> Result<Option<u64>, ValueError> {
        Ok(self.checkpoints(job).await?.last().copied())
    }

    pub async fn get_counter(&self, job: &str) -> Result<Option<(u64, u64)>, ValueError> {
        match self.values.get(&counter_key(job)).await? {
            None => Ok(None),
            Some((bytes, version)) => {
                let n = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| ValueError::Corrupt {
                        key: counter_key(job),
                        reason: "not a decimal number".into(),
                    })?;
                Ok(Some((n, version)))
            }
        }
    }

    pub async fn put_counter(
        &self,
        job: &str,
        value: u64,
        expected: Option<u64>,
        fence: u64,
    ) -> Result<u64, ValueError> {
        let gate = self.gate(job).await;
        self.refuse_if_finished(job, &gate).await?;
        self.values
            .put(
                &counter_key(job),
                value.to_string().as_bytes(),
                expected,
                Some(fence),
            )
            .await
    }

    pub async fn result(&self, job: &str) -> Result<Option<ResultEntry>, ValueError> {
        match self.values.get(&result_key(job)).await? {
            None => Ok(None),
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ValueError::Corrupt {
                        key: result_key(job),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// A job with a recorded result must not get new HA data: it would never
    /// be cleaned up, and could be offered for recovery.
    async fn refuse_if_finished(&self, job: &str, gate: &Gate) -> Result<(), ValueError> {
        if gate.finished || self.values.get(&result_key(job)).await?.is_some() {
            return Err(ValueError::Call(CallError::Failure(Failure::Invalid(
                format!(
                    "job {job} is globally terminal (it has an entry in the job result store); its HA data can no longer change"
                ),
            ))));
        }
        Ok(())
    }

    /// Jobs that have any HA data, and jobs in the result store.
    ///
    /// Only job ids count: the same prefixes are open to `/state`, and a key
    /// there such as `jobs/a:b/x` or `jobgraphs/e/f` names no job that the
    /// job API (or a new leader) could act on.
    async fn scan(&self) -> Result<(BTreeSet<String>, Vec<(String, ResultEntry)>), ValueError> {
        let mut with_data = BTreeSet::new();
        for k in self.values.list("jobgraphs/").await? {
            with_data.extend(job_of(&k, &k["jobgraphs/".len()..]));
        }
        for k in self.values.list("jobs/").await? {
            let rest = &k["jobs/".len()..];
            with_data.extend(job_of(&k, rest.split('/').next().unwrap_or(rest)));
        }
        let mut results = Vec::new();
        for k in self.values.list("job-results/").await? {
            let Some(job) = job_of(&k, &k["job-results/".len()..]) else {
                continue;
            };
            if let Some(entry) = self.result(&job).await? {
                results.push((job, entry));
            }
        }
        Ok((with_data, results))
    }

    pub async fn jobs(&self) -> Result<Vec<String>, ValueError> {
        Ok(self.scan().await?.0.into_iter().collect())
    }

    /// What a new leader must do: recover the jobs that have HA data and no
    /// result, and finish cleaning up the jobs whose result is dirty.
    pub async fn recovery(&self) -> Result<Value, ValueError> {
        let (with_data, results) = self.scan().await?;
        let finished: BTreeSet<&str> = results.iter().map(|(j, _)| j.as_str()).collect();
        let mut jobs = Vec::new();
        for job in with_data.iter().filter(|j| !finished.contains(j.as_str())) {
            let graph = self
                .values
                .state
                .get(&graph_key(job))
                .await?
                .map(|v| v.version);
            let checkpoints = self.checkpoints(job).await?;
            let counter = self.get_counter(job).await?.map(|(n, _)| n);
            jobs.push(json!({
                "id": job,
                "graph_version": graph,
                "latest_checkpoint": checkpoints.last(),
                "checkpoints": checkpoints,
                "checkpoint_id_counter": counter,
            }));
        }
        let dirty: Vec<&str> = results
            .iter()
            .filter(|(_, e)| e.state == "dirty")
            .map(|(j, _)| j.as_str())
            .collect();
        Ok(json!({ "jobs": jobs, "dirty_results": dirty }))
    }
}
