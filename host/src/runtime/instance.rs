//! One plugin instance and the typed calls into it.
//!
//! Every call gets a budget (its own wait plus `plugin.call-timeout`), enforced
//! twice: by epoch interruption for code spinning inside the plugin, and by a
//! host timer for a plugin stuck in a host call. Either way the call ends with
//! `CallError::Timeout` and the instance is poisoned: its Store may be in the
//! middle of anything, so it is never called again (see `Slot`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::contract::{Exports, call_backend};
use super::engine::ticks_for;
use crate::bindings::ha::sidecar::types::{Failure, Setup, Term, Versioned};
use crate::bindings::roster::Roster;
use crate::bindings::roster::exports::ha::membership::roster::Candidate;
use crate::capabilities::HostState;
use crate::metrics::Metrics;

/// Extra time the host timer allows beyond the epoch deadline, so that the
/// epoch (which reports where the plugin was) normally fires first.
const HOST_TIMER_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The backend answered with a failure value: the instance is fine.
    #[error("{}", describe(.0))]
    Failure(Failure),
    #[error("plugin trapped in {call}: {message}")]
    Trap { call: &'static str, message: String },
    #[error("plugin overran its {budget:?} deadline in {call}")]
    Timeout {
        call: &'static str,
        budget: Duration,
    },
    /// No instance could be created (bad plugin settings, instantiation trap).
    #[error("plugin unavailable: {0}")]
    NoInstance(String),
}

impl CallError {
    /// Whether the instance must be thrown away.
    pub fn poisons(&self) -> bool {
        matches!(self, CallError::Trap { .. } | CallError::Timeout { .. })
    }
}

pub fn describe(f: &Failure) -> String {
    match f {
        Failure::Unavailable(m) => format!("backend unavailable: {m}"),
        Failure::Conflict(Some(v)) => {
            format!("compare-and-set lost: the key is at version {}", v.version)
        }
        Failure::Conflict(None) => "compare-and-set lost: the key does not exist".into(),
        Failure::NotLeader => "the given term is not the current one".into(),
        Failure::Invalid(m) => format!("invalid: {m}"),
    }
}

pub struct Instance {
    store: Store<HostState>,
    /// The backend export, through the bindings of its contract version.
    exports: Exports,
    /// The optional members-and-handover export, if the plugin has it.
    roster: Option<Roster>,
    call_timeout: Duration,
    metrics: Arc<Metrics>,
    poisoned: bool,
    pub created: Instant,
}

impl Instance {
    pub(super) fn new(
        store: Store<HostState>,
        exports: Exports,
        roster: Option<Roster>,
        call_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            exports,
            roster,
            call_timeout,
            metrics,
            poisoned: false,
            created: Instant::now(),
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn arm(&mut self, wait: Duration) -> Duration {
        let budget = wait + self.call_timeout;
        self.store.set_epoch_deadline(ticks_for(budget));
        self.store.data_mut().call_deadline = Some(Instant::now() + budget);
        budget
    }

    pub async fn configure(&mut self, setup: &Setup) -> Result<(), CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(&self.exports, &mut self.store, call_configure(setup));
        finish(&self.metrics, &mut self.poisoned, "configure", budget, fut).await
    }

    pub async fn campaign(&mut self, wait: Duration) -> Result<Option<Term>, CallError> {
        let budget = self.arm(wait);
        let fut = call_backend!(&self.exports, &mut self.store, call_campaign(millis(wait)));
        finish(&self.metrics, &mut self.poisoned, "campaign", budget, fut).await
    }

    pub async fn keep(&mut self, term: &Term) -> Result<(), CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(&self.exports, &mut self.store, call_keep(term));
        finish(&self.metrics, &mut self.poisoned, "keep", budget, fut).await
    }

    pub async fn resign(&mut self, term: &Term) -> Result<(), CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(&self.exports, &mut self.store, call_resign(term));
        finish(&self.metrics, &mut self.poisoned, "resign", budget, fut).await
    }

    pub async fn leader(
        &mut self,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<Option<Term>, CallError> {
        let budget = self.arm(wait);
        let fut = call_backend!(
            &self.exports,
            &mut self.store,
            call_leader(known, millis(wait))
        );
        finish(&self.metrics, &mut self.poisoned, "leader", budget, fut).await
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Versioned>, CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(&self.exports, &mut self.store, call_get(key));
        finish(&self.metrics, &mut self.poisoned, "get", budget, fut).await
    }

    pub async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(
            &self.exports,
            &mut self.store,
            call_put(key, value, expected, fence)
        );
        finish(&self.metrics, &mut self.poisoned, "put", budget, fut).await
    }

    pub async fn delete(
        &mut self,
        key: &str,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<(), CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(
            &self.exports,
            &mut self.store,
            call_delete(key, expected, fence)
        );
        finish(&self.metrics, &mut self.poisoned, "delete", budget, fut).await
    }

    pub async fn list(&mut self, prefix: &str) -> Result<Vec<String>, CallError> {
        let budget = self.arm(Duration::ZERO);
        let fut = call_backend!(&self.exports, &mut self.store, call_list(prefix));
        finish(&self.metrics, &mut self.poisoned, "list", budget, fut).await
    }
}

/// The calls of the optional roster export. `None` when the plugin does
/// not export it (built before it existed, or for the 0.1 contract).
impl Instance {
    pub fn has_roster(&self) -> bool {
        self.roster.is_some()
    }

    pub async fn members(&mut self) -> Option<Result<Vec<Candidate>, CallError>> {
        self.roster.as_ref()?;
        let budget = self.arm(Duration::ZERO);
        let fut = self
            .roster
            .as_ref()?
            .ha_membership_roster()
            .call_members(&mut self.store);
        Some(finish(&self.metrics, &mut self.poisoned, "members", budget, fut).await)
    }

    pub async fn hand_over(&mut self, term: &Term, to: &str) -> Option<Result<(), CallError>> {
        self.roster.as_ref()?;
        let budget = self.arm(Duration::ZERO);
        let fut =
            self.roster
                .as_ref()?
                .ha_membership_roster()
                .call_hand_over(&mut self.store, term, to);
        Some(finish(&self.metrics, &mut self.poisoned, "hand_over", budget, fut).await)
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Runs a call to completion or to its budget, classifies the outcome and
/// records it. On timeout the call's future is dropped, which leaves the Store
/// unusable; the instance is marked poisoned so it is thrown away.
async fn finish<T>(
    metrics: &Metrics,
    poisoned: &mut bool,
    call: &'static str,
    budget: Duration,
    fut: impl Future<Output = wasmtime::Result<Result<T, Failure>>>,
) -> Result<T, CallError> {
    let started = Instant::now();
    let result = match tokio::time::timeout(budget + HOST_TIMER_GRACE, fut).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(f))) => Err(CallError::Failure(f)),
        Ok(Err(e))
            if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) =>
        {
            Err(CallError::Timeout { call, budget })
        }
        Ok(Err(e)) => Err(CallError::Trap {
            call,
            message: format!("{e:#}"),
        }),
        Err(_elapsed) => Err(CallError::Timeout { call, budget }),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(CallError::Failure(_)) => "failure",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(_) => "trap",
    };
    if matches!(outcome, "trap" | "timeout") {
        *poisoned = true;
    }
    metrics.record_call(call, outcome, started.elapsed());
    result
}
