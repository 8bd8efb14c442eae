//! The facade the HTTP handlers work through: the config, the stores, and
//! this sidecar's view of who leads, with the waits and commands built on
//! them. `sidecar` builds it and `http` uses it, so neither imports the
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::candidacy::Candidacies;
use crate::components::Components;
use crate::config::Config;
use crate::discovery::{self, Discovered, View};
use crate::jobs::{JobStore, Lifecycle};
use crate::leadership::{Command, Local, Progress, ResignError};
use crate::metrics::Metrics;
use crate::runtime::Term;
use crate::storage::ValueStore;

/// What the HTTP handlers share.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub values: Arc<ValueStore>,
    pub jobs: Arc<JobStore>,
    pub lifecycle: Arc<Lifecycle>,
    pub progress: Arc<Progress>,
    pub candidacies: Arc<Candidacies>,
    pub components: Arc<Components>,
    pub(crate) local: watch::Receiver<Local>,
    pub(crate) discovered: watch::Receiver<Discovered>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Set at the first signal: readiness fails from then on.
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn view(&self) -> View {
        discovery::view(&self.local.borrow(), &self.discovered.borrow())
    }

    /// This sidecar's own leadership, for the candidacy stream.
    pub fn local(&self) -> watch::Receiver<Local> {
        self.local.clone()
    }

    /// Wakes on every change of who leads as this sidecar sees it.
    pub fn discovered(&self) -> watch::Receiver<Discovered> {
        self.discovered.clone()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Returns once the leader's token differs from `known`, or (with
    /// `leading`) this sidecar's own leadership differs from it, or after
    /// `wait`. A client that caches "I lead" learns of a local step-down here
    /// at once, not a lease later when a new term appears.
    pub async fn wait_for_change(&self, known: Option<u64>, leading: Option<bool>, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut local = self.local.clone();
        let mut discovered = self.discovered.clone();
        // A sidecar shutting down answers long polls at once.
        let mut shutdown = self.shutdown.clone();
        loop {
            let v = self.view();
            if v.term.map(|t| t.token) != known || leading.is_some_and(|l| l != v.leading) {
                return;
            }
            // Our own leadership can lapse by time alone (a renewal moves the
            // deadline and is announced on the channel); wake for that too.
            let lapse = self
                .local
                .borrow()
                .valid_until()
                .filter(|t| *t > Instant::now())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                r = local.changed() => if r.is_err() { return },
                r = discovered.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep_until(lapse.unwrap_or(deadline)) => {}
            }
        }
    }

    /// Steps down and releases the term; with `to`, only that member may
    /// take it at once (check it is a live candidate first: `roster`).
    pub async fn resign(&self, holdoff: Duration, to: Option<String>) -> Result<Term, ResignError> {
        let (reply, answer) = oneshot::channel();
        // A stopped election loop leads nothing.
        self.commands
            .send(Command::Resign { holdoff, to, reply })
            .await
            .map_err(|_| ResignError::NotLeader)?;
        answer.await.map_err(|_| ResignError::NotLeader)?
    }

    /// Longest plausible time between two steps of the election loop.
    pub fn stall_limit(&self) -> Duration {
        let t = &self.config.timing;
        (t.lease + 2 * self.config.plugin.call_timeout + self.config.plugin.restart_backoff_max)
            .max(Duration::from_secs(10))
    }

    /// Why the sidecar is not alive in the sense of `/healthz` (a code and
    /// a message), if it is not: a refusal by the backend, which does not
    /// heal by waiting, or an election loop that stopped making progress.
    /// The systemd watchdog pings only while this is none.
    pub fn unhealthy_reason(&self) -> Option<(&'static str, String)> {
        if let Some(refused) = self.metrics.refusals.current() {
            return Some((
                "permission_refused",
                format!("the backend refuses this sidecar's requests: {refused}"),
            ));
        }
        let age = self.progress.age();
        if age > self.stall_limit() {
            return Some((
                "stalled",
                format!("the election loop has made no progress for {age:.1?}"),
            ));
        }
        None
    }

    pub fn not_ready_reason(&self) -> Option<String> {
        if self.shutting_down.load(Relaxed) {
            return Some("shutting down".into());
        }
        if let Some(refused) = self.metrics.refusals.current() {
            return Some(format!(
                "the backend refuses this sidecar's requests: {refused}"
            ));
        }
        let d = self.discovered.borrow();
        match (&d.error, d.known) {
            (Some(e), _) => Some(format!("cannot ask the backend who leads: {e}")),
            (None, false) => Some("waiting for the backend's first answer".into()),
            (None, true) => None,
        }
    }
}
