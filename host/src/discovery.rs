//! Who leads, as the backend tells it, kept in memory so `GET /leader` never
//! touches the backend. A dedicated plugin instance long-polls `leader` and
//! publishes every change.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;

use crate::leadership::Local;
use crate::metrics::Metrics;
use crate::runtime::{CallError, Slot, Term};

/// How long one `leader` call waits for a change before returning anyway.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub term: Option<Term>,
    /// False until the backend has answered once.
    pub known: bool,
    /// The last error, while the backend cannot be asked.
    pub error: Option<String>,
}

/// What the API reports: this sidecar's own leadership when it holds it (it
/// knows first), else the backend's view.
#[derive(Debug, Clone)]
pub struct View {
    pub term: Option<Term>,
    pub leading: bool,
}

/// The leader session UUID of a term: Flink's RPC fencing token, new for
/// every term and the same on every sidecar, because it is derived from what
/// every sidecar learns about the term (its token and holder), not drawn at
/// random by one of them. Plugins that write the leader into Flink's own
/// records compute the same id with the SDK's `flink::leader_session`: keep
/// the two recipes equal (both have a test with the same vector).
pub fn session_uuid(term: &Term) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ha-sidecar leader session\0");
    h.update(term.token.to_be_bytes());
    h.update(term.holder.id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

pub fn view(local: &Local, discovered: &Discovered) -> View {
    match local.leading() {
        Some(t) => View {
            term: Some(t.clone()),
            leading: true,
        },
        None => View {
            term: discovered.term.clone(),
            leading: false,
        },
    }
}

pub async fn run(
    mut slot: Slot,
    tx: watch::Sender<Discovered>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    retry: Duration,
) {
    let mut first = true;
    let mut refused = crate::refusals::Backoff::new(retry);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let instance = match slot.instance().await {
            Ok(i) => i,
            Err(e) => {
                tx.send_modify(|d| d.error = Some(e.to_string()));
                tokio::select! {
                    _ = slot.wait_ready() => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
                continue;
            }
        };
        let known = tx.borrow().term.as_ref().map(|t| t.token);
        let wait = if first {
            Duration::ZERO
        } else {
            DISCOVERY_WAIT
        };
        match instance.leader(known, wait).await {
            Ok(term) => {
                first = false;
                refused.reset();
                if let Some(t) = &term {
                    metrics.term.fetch_max(t.token, Relaxed);
                }
                tx.send_if_modified(|d| {
                    let changed = !d.known
                        || d.error.is_some()
                        || d.term.as_ref().map(|t| t.token) != term.as_ref().map(|t| t.token);
                    *d = Discovered {
                        term,
                        known: true,
                        error: None,
                    };
                    changed
                });
            }
            Err(e) => {
                tx.send_modify(|d| d.error = Some(e.to_string()));
                if matches!(e, CallError::Failure(_)) {
                    // A missing permission is retried ever more slowly, not
                    // at the retry period: it is no outage.
                    let wait = if metrics.refusals.is_refused() {
                        let wait = refused.wait();
                        tracing::error!(error = %e, retry_in = ?wait, "the backend refuses what discovery needs; waiting before trying again");
                        wait
                    } else {
                        refused.reset();
                        tracing::warn!(error = %e, "discovery failed");
                        retry
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|s| *s) => {}
                    }
                } else {
                    tracing::warn!(error = %e, "discovery failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Member;

    #[test]
    fn session_uuid_is_the_sdks_leader_session() {
        // The same vector as the SDK's `flink::tests` (plugins write this id
        // into Flink's own records): keep them equal.
        let term = Term {
            holder: Member {
                id: "jm-1".into(),
                address: "http://jm-1:8081".into(),
            },
            token: 7,
            handle: String::new(),
            since_ms: 0,
        };
        assert_eq!(
            session_uuid(&term).to_string(),
            "5e3483e2-7616-8c93-9da7-4c018a725887"
        );
    }
}
