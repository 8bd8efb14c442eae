//! Whether the backend refuses this sidecar's credentials, as the host's
//! capability saw it: a missing permission is not an outage, so it must not
//! be retried five times a second in silence. The `kubernetes` capability
//! records every answer per verb (401/403: refused, with the API server's
//! message; any other answer: allowed, since authorization comes first), and
//! the sidecar acts on it: it stops at start, and later backs off, turns
//! `/healthz` and `/readyz` red and counts the refusals in `/metrics`, so
//! that the platform restarts it and the start check says why.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Longest wait between two attempts while the backend refuses.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Refusals {
    /// Verb → the refusal's message, while the latest answer to it refused.
    current: Mutex<BTreeMap<String, String>>,
    total: AtomicU64,
}

impl Refusals {
    /// Notes the answer to a request of `verb`: `Some(message)` if refused.
    pub fn record(&self, verb: &str, refused: Option<&str>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match refused {
            Some(message) => {
                self.total.fetch_add(1, Relaxed);
                current.insert(verb.to_string(), message.to_string());
            }
            None => {
                current.remove(verb);
            }
        }
    }

    /// What is refused now, in the backend's words; none if nothing is.
    pub fn current(&self) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_empty() {
            return None;
        }
        let verbs: Vec<&str> = current.keys().map(String::as_str).collect();
        let first = current.values().next().map(String::as_str).unwrap_or("");
        Some(format!("{} refused: {first}", verbs.join(", ")))
    }

    pub fn is_refused(&self) -> bool {
        !self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Refusals seen since start.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
}

/// Exponential backoff for retries while the backend refuses: from the
/// retry period, doubling, up to [`BACKOFF_MAX`].
pub struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Self {
        Self { first, next: first }
    }

    pub fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX.max(self.first));
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_lasts_until_the_verb_is_allowed_again() {
        let r = Refusals::default();
        assert_eq!(r.current(), None);
        r.record("get", None);
        r.record("watch", Some("403 Forbidden: no watch"));
        r.record("update", Some("403 Forbidden: no update"));
        assert_eq!(
            r.current().as_deref(),
            Some("update, watch refused: 403 Forbidden: no update")
        );
        r.record("update", None);
        r.record("watch", None);
        assert!(!r.is_refused());
        assert_eq!(r.total(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(400));
        let waits: Vec<u128> = (0..9).map(|_| b.wait().as_millis()).collect();
        assert_eq!(
            waits,
            [400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.wait(), Duration::from_millis(400));
    }
}
