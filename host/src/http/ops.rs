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

/// The API's OpenAPI document, built in from `docs/openapi.yaml`: the
/// served copy cannot drift from the one in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// `GET /openapi.yaml`.
pub fn openapi() -> Reply {
    reply::static_text(StatusCode::OK, "application/yaml", OPENAPI)
}

pub fn metrics(shared: &Shared) -> Reply {
    reply::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        shared.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn the_served_document_is_the_file_in_the_repository() {
        let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .expect("docs/openapi.yaml is readable");
        let reply = openapi();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()["content-type"], "application/yaml");
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), file.as_slice());
        let doc: serde_yaml::Value = serde_yaml::from_slice(&file).expect("the document is YAML");
        assert_eq!(doc["openapi"].as_str(), Some("3.0.3"));
    }
}
