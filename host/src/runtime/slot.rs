//! A role's plugin instance, replaced after a trap or an overrun deadline.
//!
//! A poisoned instance is dropped on the next request, and a new one is made
//! only after an exponential backoff, so a plugin that crashes on every call
//! costs a little CPU, not a hot loop. The backoff starts over once an
//! instance has stayed healthy for longer than the maximum backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CallError, Instance, LoadedPlugin, Setup};

pub struct Slot {
    plugin: Arc<LoadedPlugin>,
    role: &'static str,
    setup: Setup,
    instance: Option<Instance>,
    failures: u32,
    retry_at: Option<Instant>,
    backoff: Duration,
    backoff_max: Duration,
}

impl Slot {
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        role: &'static str,
        setup: Setup,
        backoff: Duration,
        backoff_max: Duration,
    ) -> Self {
        Self {
            plugin,
            role,
            setup,
            instance: None,
            failures: 0,
            retry_at: None,
            backoff,
            backoff_max,
        }
    }

    /// The live instance, made if needed. While backing off after a failure
    /// this returns `NoInstance` at once; `wait_ready` sleeps until a retry is due.
    pub async fn instance(&mut self) -> Result<&mut Instance, CallError> {
        if self.instance.as_ref().is_some_and(Instance::is_poisoned) {
            self.discard();
        }
        if self.instance.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                let left = at - Instant::now();
                return Err(CallError::NoInstance(format!(
                    "the {} plugin instance is restarting (next attempt in {left:.1?})",
                    self.role
                )));
            }
            match self.plugin.instantiate(self.role, &self.setup).await {
                Ok(instance) => {
                    if self.failures > 0 {
                        tracing::info!(role = self.role, "plugin instance restarted");
                    }
                    self.instance = Some(instance);
                }
                Err(e) => {
                    self.back_off();
                    tracing::warn!(role = self.role, error = %e, "cannot create plugin instance");
                    return Err(e);
                }
            }
        }
        Ok(self.instance.as_mut().expect("instance was just ensured"))
    }

    pub async fn wait_ready(&mut self) {
        if let Some(at) = self.retry_at {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    fn discard(&mut self) {
        if let Some(old) = self.instance.take() {
            if old.created.elapsed() > self.backoff_max {
                self.failures = 0;
            }
            self.plugin.metrics.record_restart(self.role);
            self.back_off();
            tracing::warn!(role = self.role, retry_in = ?self.retry_at.map(|t| t - Instant::now()), "plugin instance discarded after a trap or overrun; restarting with backoff");
        }
    }

    fn back_off(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << (self.failures - 1).min(16);
        let delay = self.backoff.saturating_mul(factor).min(self.backoff_max);
        self.retry_at = Some(Instant::now() + delay);
    }
}
