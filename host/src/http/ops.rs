//! Probes and metrics for the platform running the sidecar.

use hyper::StatusCode;
use serde_json::json;

use super::reply::{self, Reply};
use crate::shared::Shared;

/// Liveness: fails when the election loop has stopped making progress, so a
/// wedged sidecar gets restarted instead of silently never leading.
/// A missing permission does not heal by waiting either: it fails, so the
/// platform restarts the sidecar and its start check stops it with the message.
pub fn healthz(shared: &Shared) -> Reply {
    match shared.unhealthy_reason() {
        Some((code, message)) => reply::error(StatusCode::SERVICE_UNAVAILABLE, code, message),
        None => reply::json(StatusCode::OK, &json!({ "status": "ok" })),
    }
}

/// Readiness: the plugin runs and the backend has told us who leads (or that
/// nobody does). Use `/leader/self` instead to route traffic to the leader only.
pub fn readyz(shared: &Shared) -> Reply {
    match shared.not_ready_reason() {
        None => reply::json(StatusCode::OK, &json!({ "status": "ready" })),
        Some(reason) => reply::error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason),
    }
}

pub fn metrics(shared: &Shared) -> Reply {
    reply::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        shared.metrics.render(),
    )
}
