//! The job result store and what follows a globally terminal job, with
//! the semantics of Flink's `JobResultStore` and HA cleanup: record the result as dirty, delete all
//! of the job's HA data, then mark the result clean (or delete it, with
//! `jobs.delete-result-on-commit`). A crash anywhere leaves either no result
//! (the job is recovered and finishes again) or a dirty one, which the next
//! leader's duties finish, retrying with exponential backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{JobStore, ResultEntry, checkpoint_key, counter_key, graph_key, result_key};
use crate::failpoint;
use crate::leadership::Local;
use crate::runtime::{CallError, Failure};
use crate::storage::{ValueError, ValueStore};

/// Retries of a failed cleanup: Flink's `cleanup-strategy.exponential-delay.*`.
#[derive(Debug, Clone, Copy)]
pub struct Cleanup {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// None: retry for as long as this sidecar leads.
    pub attempts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultOutcome {
    /// All HA data is gone; the result is kept, marked clean.
    Clean,
    /// All HA data is gone, and so is the result (delete-on-commit).
    Deleted,
    /// The result is recorded as dirty; cleanup failed for now and is retried by the leader.
    Pending(String),
}

pub struct Lifecycle {
    pub jobs: Arc<JobStore>,
    pub cleanup: Cleanup,
    pub delete_on_commit: bool,
    /// Wakes the leader's duties when a cleanup needs retrying.
    kick: Notify,
}

fn not_leader(e: &ValueError) -> bool {
    matches!(e, ValueError::Call(CallError::Failure(Failure::NotLeader)))
}

impl Lifecycle {
    pub fn new(jobs: Arc<JobStore>, cleanup: Cleanup, delete_on_commit: bool) -> Self {
        Self {
            jobs,
            cleanup,
            delete_on_commit,
            kick: Notify::new(),
        }
    }

    fn values(&self) -> &ValueStore {
        &self.jobs.values
    }

    /// Marks `job` globally terminal with `result`, then cleans up once.
    /// Recording the same job twice keeps the first result.
    pub async fn finish(
        &self,
        job: &str,
        result: Value,
        fence: u64,
    ) -> Result<ResultOutcome, ValueError> {
        let mut gate = self.jobs.gate(job).await;
        failpoint::hit("before-dirty-record");
        match self.jobs.result(job).await? {
            Some(entry) if entry.state == "clean" => return Ok(ResultOutcome::Clean),
            Some(_) => {}
            None => {
                let entry = ResultEntry {
                    state: "dirty".into(),
                    result,
                };
                let bytes = serde_json::to_vec(&entry).expect("a result entry serializes");
                self.values()
                    .put(&result_key(job), &bytes, Some(0), Some(fence))
                    .await?;
            }
        }
        gate.finished = true;
        failpoint::hit("after-dirty-record");
        match self.clean_up_locked(job, fence).await {
            Ok(outcome) => Ok(outcome),
            Err(e) if not_leader(&e) => Err(e),
            Err(e) => {
                tracing::warn!(job, error = %e, "cleanup failed; the leader retries with backoff");
                self.kick.notify_one();
                Ok(ResultOutcome::Pending(e.to_string()))
            }
        }
    }

    /// Finishes the cleanup of a job whose result is recorded (the leader's
    /// duties call this for dirty results left by a crash or a failure).
    pub async fn clean_up(&self, job: &str, fence: u64) -> Result<ResultOutcome, ValueError> {
        let mut gate = self.jobs.gate(job).await;
        gate.finished = true;
        self.clean_up_locked(job, fence).await
    }

    /// Deletes the job's HA data (checkpoints and their files, counter,
    /// graph), then commits the result. Idempotent: safe to run again after
    /// a crash at any point.
    async fn clean_up_locked(&self, job: &str, fence: u64) -> Result<ResultOutcome, ValueError> {
        for (i, id) in self.jobs.checkpoints(job).await?.into_iter().enumerate() {
            self.values()
                .delete(&checkpoint_key(job, id), None, Some(fence))
                .await?;
            if i == 0 {
                failpoint::hit("mid-cleanup");
            }
        }
        self.values()
            .delete(&counter_key(job), None, Some(fence))
            .await?;
        self.values()
            .delete(&graph_key(job), None, Some(fence))
            .await?;
        let Some(entry) = self.jobs.result(job).await? else {
            return Ok(ResultOutcome::Deleted);
        };
        if self.delete_on_commit {
            self.values()
                .delete(&result_key(job), None, Some(fence))
                .await?;
            tracing::info!(
                job,
                "job HA data cleaned up; result deleted (delete-on-commit)"
            );
            Ok(ResultOutcome::Deleted)
        } else {
            let clean = ResultEntry {
                state: "clean".into(),
                result: entry.result,
            };
            self.values()
                .put(
                    &result_key(job),
                    &serde_json::to_vec(&clean).expect("serializes"),
                    None,
                    Some(fence),
                )
                .await?;
            tracing::info!(job, "job HA data cleaned up; result marked clean");
            Ok(ResultOutcome::Clean)
        }
    }
}

/// What only the leader does in the background: finish dirty results left by
/// earlier leaders or failed cleanups, and sweep unreferenced files.
pub struct LeaderDuties {
    pub lifecycle: Arc<Lifecycle>,
    pub values: Arc<ValueStore>,
    pub local: watch::Receiver<Local>,
    pub shutdown: watch::Receiver<bool>,
    pub sweep_interval: Duration,
    pub sweep_grace: Duration,
}

/// Backoff state of one job's cleanup.
struct Retry {
    attempts: u32,
    next: Instant,
    delay: Duration,
}

impl LeaderDuties {
    fn leading_term(&self) -> Option<u64> {
        self.local.borrow().leading().map(|t| t.token)
    }

    pub async fn run(mut self) {
        let mut retries: BTreeMap<String, Retry> = BTreeMap::new();
        let mut next_sweep = Instant::now();
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let Some(term) = self.leading_term() else {
                retries.clear();
                next_sweep = Instant::now();
                tokio::select! {
                    _ = self.local.changed() => {}
                    _ = self.shutdown.wait_for(|s| *s) => return,
                }
                continue;
            };
            self.finish_dirty(term, &mut retries).await;
            if Instant::now() >= next_sweep {
                match self.values.sweep(self.sweep_grace).await {
                    Ok(s) if s.removed > 0 => {
                        tracing::info!(
                            removed = s.removed,
                            old_files = s.blobs,
                            referenced = s.referenced,
                            "storage dir swept"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "storage dir sweep failed"),
                }
                next_sweep = Instant::now() + self.sweep_interval;
            }
            let wake = retries
                .values()
                .map(|r| r.next)
                .min()
                .unwrap_or(next_sweep)
                .min(next_sweep);
            // Every renewal updates the channel; only a change of term matters here.
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.lifecycle.kick.notified() => {}
                _ = self.local.wait_for(|l| l.leading().map(|t| t.token) != Some(term)) => {}
                _ = self.shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass over the dirty results whose retry is due.
    async fn finish_dirty(&self, term: u64, retries: &mut BTreeMap<String, Retry>) {
        let dirty = match self.lifecycle.jobs.recovery().await {
            Ok(view) => view["dirty_results"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|j| j.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list dirty job results");
                return;
            }
        };
        retries.retain(|job, _| dirty.contains(job));
        let policy = self.lifecycle.cleanup;
        for job in dirty {
            let due = retries.get(&job).is_none_or(|r| r.next <= Instant::now());
            let gave_up = retries
                .get(&job)
                .is_some_and(|r| policy.attempts.is_some_and(|max| r.attempts >= max));
            if !due || gave_up || self.leading_term() != Some(term) {
                continue;
            }
            match self.lifecycle.clean_up(&job, term).await {
                Ok(_) => {
                    retries.remove(&job);
                }
                Err(e) if not_leader(&e) => return,
                Err(e) => {
                    let r = retries.entry(job.clone()).or_insert(Retry {
                        attempts: 0,
                        next: Instant::now(),
                        delay: policy.initial_backoff,
                    });
                    r.attempts += 1;
                    r.next = Instant::now() + r.delay;
                    r.delay = (r.delay * 2).min(policy.max_backoff);
                    if policy.attempts.is_some_and(|max| r.attempts >= max) {
                        tracing::error!(job, attempts = r.attempts, error = %e, "giving up on cleaning up the job's HA data; it stays dirty until the next leader");
                    } else {
                        tracing::warn!(job, attempts = r.attempts, retry_in = ?r.next - Instant::now(), error = %e, "cleanup failed; retrying");
                    }
                }
            }
        }
    }
}
