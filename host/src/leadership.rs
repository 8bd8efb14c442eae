//! The leadership state machine: candidate → leader → (lost | resigned) → candidate.
//!
//! Safety rules:
//! - Leadership is published with a deadline: the start of the last successful
//!   `keep` plus the renew deadline. Everyone who reads it checks the deadline
//!   against the local monotonic clock, so even a stuck election task cannot
//!   make the sidecar report leadership past it. The config guarantees the
//!   renew deadline is shorter than the lease, so the sidecar stops calling
//!   itself leader before any standby may take over.
//! - A `keep` still in flight at the deadline does not extend it: the sidecar
//!   steps down first and finds out afterwards.
//! - On resign and on shutdown the sidecar steps down locally first, then
//!   releases the term in the backend, so a standby can take over at once.
//! - With `election.candidacy: client` the loop campaigns only while a client
//!   holds a candidacy open (see `candidacy`), and a leader whose candidacy
//!   ends steps down and releases at once; with `never` it never campaigns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::sleep_until;

use crate::candidacy::OpenId;
use crate::capabilities::Health;
use crate::config::{Candidacy, Timing};
use crate::metrics::Metrics;
use crate::refusals::Backoff;
use crate::runtime::{CallError, Failure, Slot, Term};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Candidate,
    Leader,
    /// Resigned on request; not campaigning until the holdoff ends.
    HoldingOff,
    /// `election.candidacy: client` with no candidacy open: not campaigning.
    Idle,
    /// `election.candidacy: never`.
    Observer,
    Stopped,
}

/// What this sidecar knows about its own leadership.
#[derive(Debug, Clone)]
pub struct Local {
    pub phase: Phase,
    term: Option<Term>,
    valid_until: Option<Instant>,
    /// The client candidacy this leadership was won for (client mode).
    candidacy: Option<String>,
}

impl Local {
    fn follower(phase: Phase) -> Self {
        Self {
            phase,
            term: None,
            valid_until: None,
            candidacy: None,
        }
    }

    /// The term this sidecar holds right now for the client candidacy `id`.
    pub fn leading_for(&self, id: &str) -> Option<&Term> {
        self.leading()
            .filter(|_| self.candidacy.as_deref() == Some(id))
    }

    /// When the current leadership lapses unless renewed.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// The term this sidecar holds, if it still holds it right now.
    pub fn leading(&self) -> Option<&Term> {
        match (&self.term, self.valid_until) {
            (Some(t), Some(until)) if Instant::now() < until => Some(t),
            _ => None,
        }
    }
}

pub enum Command {
    /// Step down and release the term; with `to`, hand it to that member
    /// only (the roster's `hand-over`).
    Resign {
        holdoff: Duration,
        to: Option<String>,
        reply: oneshot::Sender<Result<Term, ResignError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ResignError {
    #[error("this sidecar does not lead")]
    NotLeader,
    #[error(
        "stepped down, but releasing the term in the backend failed ({0}); standbys take over when the lease expires"
    )]
    NotReleased(String),
    /// The backend refused the handover; nothing was released, and this
    /// sidecar takes its own term back at its next campaign.
    #[error("the backend refused the handover ({0}); this sidecar keeps its term")]
    HandoverRefused(String),
}

/// When the election loop last made progress, for the liveness probe.
#[derive(Default)]
pub struct Progress {
    epoch: Option<Instant>,
    millis: AtomicU64,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            epoch: Some(Instant::now()),
            millis: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        if let Some(e) = self.epoch {
            self.millis.store(e.elapsed().as_millis() as u64, Relaxed);
        }
    }
    pub fn age(&self) -> Duration {
        let since_start = self.epoch.map_or(Duration::ZERO, |e| e.elapsed());
        since_start.saturating_sub(Duration::from_millis(self.millis.load(Relaxed)))
    }
}

pub struct Election {
    pub slot: Slot,
    pub timing: Timing,
    pub local: watch::Sender<Local>,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Progress>,
    /// A capability holding a session (see `capabilities::Connection`)
    /// reports here when the session can no longer back leadership; the
    /// leader steps down at once.
    pub session: Option<watch::Receiver<Health>>,
    pub candidacy: Candidacy,
    /// The open client candidacy (client mode; always none otherwise).
    pub open: watch::Receiver<OpenId>,
}

/// Resolves when the session backing leadership is lost; never without one.
async fn session_lost(session: &mut Option<watch::Receiver<Health>>) -> String {
    let Some(rx) = session else {
        return std::future::pending().await;
    };
    // Clone out at once: the guard `wait_for` returns must not live across an await.
    let lost = rx
        .wait_for(|h| *h != Health::Ok)
        .await
        .map(|h| h.clone())
        .ok();
    match lost {
        Some(Health::Lost(why)) => why,
        _ => std::future::pending().await,
    }
}

pub fn initial(candidacy: Candidacy) -> Local {
    Local::follower(match candidacy {
        Candidacy::Always => Phase::Candidate,
        Candidacy::Client => Phase::Idle,
        Candidacy::Never => Phase::Observer,
    })
}

/// How long one `campaign` call may wait for the leader to go: long enough to
/// avoid busy calls, short enough to notice shutdown promptly.
fn campaign_wait(t: &Timing) -> Duration {
    t.retry_period
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

enum Exit {
    Lost(String),
    /// The client candidacy it led for ended: release at once.
    CandidacyClosed,
    Resign {
        holdoff: Duration,
        to: Option<String>,
        reply: oneshot::Sender<Result<Term, ResignError>>,
    },
    Shutdown,
}

impl Election {
    pub async fn run(mut self) {
        let mut refused = Backoff::new(self.timing.retry_period);
        loop {
            self.progress.touch();
            if *self.shutdown.borrow() {
                break;
            }
            self.refuse_pending_commands();
            let candidacy = match self.candidacy {
                Candidacy::Always => None,
                Candidacy::Never => {
                    self.idle(Phase::Observer).await;
                    continue;
                }
                Candidacy::Client => {
                    let open = self.open.borrow_and_update().clone();
                    match open {
                        Some(id) => Some(id),
                        None => {
                            self.idle(Phase::Idle).await;
                            continue;
                        }
                    }
                }
            };
            let instance = match self.slot.instance().await {
                Ok(i) => i,
                Err(_) => {
                    tokio::select! {
                        _ = self.slot.wait_ready() => {}
                        _ = self.shutdown.wait_for(|s| *s) => {}
                    }
                    continue;
                }
            };
            let started = Instant::now();
            // Watched from before the call, so that a reconnect during a
            // failing call is not missed.
            let reconnect = self.session.as_ref().map(|rx| {
                let mut rx = rx.clone();
                rx.mark_unchanged();
                rx
            });
            match instance.campaign(campaign_wait(&self.timing)).await {
                Ok(Some(term)) => {
                    refused.reset();
                    self.lead(term, started, candidacy).await
                }
                Ok(None) => refused.reset(),
                // A missing permission is no outage: retrying at the retry
                // period would only fill the log. /healthz reports it.
                Err(CallError::Failure(f)) if self.metrics.refusals.is_refused() => {
                    let wait = refused.wait();
                    tracing::error!(error = %CallError::Failure(f), retry_in = ?wait, "the backend refuses what campaigning needs; waiting before trying again");
                    self.pause(wait).await;
                }
                Err(CallError::Failure(f)) => {
                    refused.reset();
                    tracing::warn!(error = %CallError::Failure(f), "campaign failed; retrying");
                    self.retry_after_failure(reconnect).await;
                }
                Err(e) => tracing::warn!(error = %e, "campaign failed"),
            }
        }
        self.local.send_replace(Local::follower(Phase::Stopped));
    }

    /// Not campaigning (an observer, or no client candidacy open): wakes for
    /// a candidacy, shutdown, or every second to report progress.
    async fn idle(&mut self, phase: Phase) {
        self.local.send_if_modified(|l| {
            let changed = l.phase != phase && l.term.is_none();
            if changed {
                l.phase = phase;
            }
            changed
        });
        tokio::select! {
            _ = self.open.changed() => {}
            _ = self.shutdown.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }

    async fn lead(&mut self, term: Term, started: Instant, candidacy: Option<String>) {
        let t = self.timing;
        let mut valid_until = started + t.renew_deadline;
        self.publish_leader(&term, valid_until, candidacy.clone());
        let mut last_keep = started;
        let mut open = self.open.clone();
        let exit = loop {
            self.progress.touch();
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|s| *s) => break Exit::Shutdown,
                _ = open.wait_for(|o| *o != candidacy), if candidacy.is_some() => break Exit::CandidacyClosed,
                why = session_lost(&mut self.session) => break Exit::Lost(why),
                Some(Command::Resign { holdoff, to, reply }) = self.commands.recv() => break Exit::Resign { holdoff, to, reply },
                _ = sleep_until(valid_until.into()) => break Exit::Lost("could not renew within the renew deadline".into()),
                _ = sleep_until((last_keep + t.retry_period).into()) => {}
            }
            let keep_started = Instant::now();
            let instance = match self.slot.instance().await {
                Ok(i) => i,
                Err(e) => break Exit::Lost(format!("no plugin instance: {e}")),
            };
            let keep = instance.keep(&term);
            tokio::pin!(keep);
            let mut late = false;
            let result = tokio::select! {
                r = &mut keep => r,
                _ = sleep_until(valid_until.into()) => {
                    // Step down now; the call still runs to its end (dropping
                    // it would leave the plugin's Store unusable).
                    step_down(&self.local, &self.metrics, Phase::Candidate, &term, "renew deadline reached while a renewal was in flight");
                    late = true;
                    keep.await
                }
            };
            match result {
                Ok(()) if !late => {
                    last_keep = keep_started;
                    valid_until = keep_started + t.renew_deadline;
                    self.local
                        .send_modify(|l| l.valid_until = Some(valid_until));
                }
                Ok(()) => return, // already stepped down; campaign again
                Err(CallError::Failure(Failure::NotLeader)) => {
                    break Exit::Lost("the backend reports a newer term".into());
                }
                Err(CallError::Failure(f)) if !late => {
                    tracing::warn!(term = term.token, error = %CallError::Failure(f), left = ?valid_until.saturating_duration_since(Instant::now()), "renewal failed; retrying until the renew deadline");
                    last_keep = keep_started;
                }
                Err(e) if late => {
                    tracing::warn!(term = term.token, error = %e, "renewal failed after stepping down");
                    return;
                }
                Err(e) => break Exit::Lost(format!("renewal failed: {e}")),
            }
        };
        match exit {
            Exit::Lost(reason) => {
                step_down(&self.local, &self.metrics, Phase::Candidate, &term, &reason)
            }
            Exit::CandidacyClosed => {
                step_down(
                    &self.local,
                    &self.metrics,
                    Phase::Idle,
                    &term,
                    "the client's candidacy ended",
                );
                let _ = self.release(&term).await;
            }
            Exit::Shutdown => {
                step_down(
                    &self.local,
                    &self.metrics,
                    Phase::Stopped,
                    &term,
                    "shutting down",
                );
                let _ = self.release(&term).await;
            }
            Exit::Resign { holdoff, to, reply } => {
                let reason = match &to {
                    Some(to) => format!("handing over to {to} on request"),
                    None => "resigned on request".into(),
                };
                step_down(
                    &self.local,
                    &self.metrics,
                    Phase::HoldingOff,
                    &term,
                    &reason,
                );
                let outcome = match &to {
                    Some(to) => self
                        .hand_over(&term, to)
                        .await
                        .map_err(ResignError::HandoverRefused),
                    None => self.release(&term).await.map_err(ResignError::NotReleased),
                };
                // A refused handover released nothing: campaign at once,
                // which takes this process's own term back (every recipe does).
                let hold_off = !matches!(outcome, Err(ResignError::HandoverRefused(_)));
                let _ = reply.send(outcome.map(|()| term.clone()));
                if hold_off {
                    self.pause(holdoff).await;
                }
                self.local.send_modify(|l| {
                    if l.phase == Phase::HoldingOff {
                        l.phase = Phase::Candidate;
                    }
                });
            }
        }
    }

    /// Releases the term in the backend so that a standby need not wait for expiry.
    async fn release(&mut self, term: &Term) -> Result<(), String> {
        let instance = self.slot.instance().await.map_err(|e| e.to_string())?;
        match instance.resign(term).await {
            Ok(()) => {
                tracing::info!(term = term.token, "leadership released in the backend");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(term = term.token, error = %e, "could not release leadership; standbys take over after the lease expires");
                Err(e.to_string())
            }
        }
    }

    /// Releases the term so that only `to` may take it at once.
    async fn hand_over(&mut self, term: &Term, to: &str) -> Result<(), String> {
        let instance = self.slot.instance().await.map_err(|e| e.to_string())?;
        match instance.hand_over(term, to).await {
            Some(Ok(())) => {
                tracing::info!(
                    term = term.token,
                    to,
                    "leadership handed over in the backend"
                );
                Ok(())
            }
            Some(Err(e)) => {
                tracing::warn!(term = term.token, to, error = %e, "the backend refused the handover; keeping the term");
                Err(e.to_string())
            }
            None => Err("the plugin does not export ha:membership/roster".into()),
        }
    }

    fn publish_leader(&self, term: &Term, valid_until: Instant, candidacy: Option<String>) {
        self.local.send_replace(Local {
            phase: Phase::Leader,
            term: Some(term.clone()),
            valid_until: Some(valid_until),
            candidacy,
        });
        self.metrics.leader.store(1, Relaxed);
        self.metrics.term.store(term.token, Relaxed);
        self.metrics.became_leader.fetch_add(1, Relaxed);
        tracing::info!(term = term.token, member = %term.holder.id, "became leader");
    }

    /// After a failed campaign: waits the retry period, but no longer than
    /// until the session (if any) is connected again. A leader that stepped
    /// down when its connection dropped usually still holds its latch node
    /// once the client has reconnected to another member, and leads again
    /// with its first campaign; waiting out a timer instead would add up to
    /// a retry period of no leader at all.
    async fn retry_after_failure(&mut self, reconnect: Option<watch::Receiver<Health>>) {
        let connected = async move {
            let Some(mut rx) = reconnect else {
                return std::future::pending().await;
            };
            // The capability sends `Ok` on every reconnect, even when the
            // health never left it (a blip tolerated as suspended).
            while rx.changed().await.is_ok() {
                if *rx.borrow_and_update() == Health::Ok {
                    return;
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            _ = self.pause(self.timing.retry_period) => {}
            _ = connected => tracing::debug!("session connection back; campaigning at once"),
        }
    }

    /// Sleeps, but wakes for shutdown. Reports progress while it sleeps, so a
    /// long resign holdoff does not look like a stalled loop to the liveness probe.
    async fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.progress.touch();
            let step = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = self.shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    fn refuse_pending_commands(&mut self) {
        while let Ok(Command::Resign { reply, .. }) = self.commands.try_recv() {
            let _ = reply.send(Err(ResignError::NotLeader));
        }
    }
}

fn step_down(
    local: &watch::Sender<Local>,
    metrics: &Metrics,
    phase: Phase,
    term: &Term,
    reason: &str,
) {
    let was_leader = local.borrow().term.is_some();
    local.send_replace(Local::follower(phase));
    if was_leader {
        metrics.leader.store(0, Relaxed);
        metrics.stepped_down.fetch_add(1, Relaxed);
        tracing::warn!(term = term.token, reason, "stepped down");
    }
}
