//! The sidecar's one Kubernetes API client, built
//! with `kube` from the pod's service account or a kubeconfig file, confined
//! to one namespace.
//!
//! The plugin owns the object layout; the host owns the credentials, the
//! namespace and time. Every request is bounded by the configured request
//! timeout (well under the renew deadline, so one hung request cannot cost
//! the lease by itself) and by what is left of the plugin call's deadline, so
//! a slow API server makes calls answer `unavailable` instead of getting the
//! plugin instance killed. The client is created on first use: `kube` starts
//! background tasks that need the runtime, and `ha-sidecar validate` has none.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use kube::config::Kubeconfig;

use crate::bindings::ha::kubernetes::client::{KubeError, ObjectKind, WatchEvent};
use crate::metrics::Metrics;

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Connection settings (`capabilities.kubernetes` in the sidecar config).
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// None: the pod's service account (in-cluster config).
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context other than its current one.
    pub context: Option<String>,
    /// None: the kubeconfig context's namespace, or the pod's own.
    pub namespace: Option<String>,
    pub request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "capabilities.kubernetes.kubeconfig: cannot use {path}: {reason}; point it at a readable kubeconfig file"
    )]
    Kubeconfig { path: PathBuf, reason: String },
    #[error(
        "capabilities.kubernetes.context: {context:?} is not a context of {path} (it has: {known}); name one of them or leave the key out for the current context"
    )]
    NoContext {
        path: PathBuf,
        context: String,
        known: String,
    },
    #[error(
        "capabilities.kubernetes: no kubeconfig is set and this is not a pod with a service account ({reason}); run the sidecar in a pod with a service account, or set capabilities.kubernetes.kubeconfig"
    )]
    NotInCluster { reason: String },
}

pub struct KubeApi {
    config: kube::Config,
    /// Where refusals (401/403) are recorded, per verb.
    metrics: Arc<Metrics>,
    client: OnceLock<kube::Client>,
    namespace: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("server", &self.config.cluster_url)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl KubeApi {
    /// Reads the credentials and settles the namespace; connects on first use.
    pub fn new(settings: &KubeSettings, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let mut config = match &settings.kubeconfig {
            Some(path) => from_kubeconfig(path, settings.context.as_deref())?,
            None => kube::Config::incluster().map_err(|e| SetupError::NotInCluster {
                reason: e.to_string(),
            })?,
        };
        // We bound and retry calls ourselves: kube's own retries of 429/5xx
        // would spend time the renew deadline does not have.
        config.default_retry = false;
        config.connect_timeout = Some(settings.request_timeout);
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Self {
            config,
            metrics,
            client: OnceLock::new(),
            namespace,
            request_timeout: settings.request_timeout,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn server(&self) -> String {
        self.config.cluster_url.to_string()
    }

    fn client(&self) -> Result<kube::Client, KubeError> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        crate::capabilities::ensure_tls_provider();
        let client = kube::Client::try_from(self.config.clone()).map_err(|e| {
            KubeError::Unavailable(format!("cannot build a Kubernetes client: {e}"))
        })?;
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// The API path of a kind's collection in our namespace, or of one object.
    pub fn path(&self, kind: &ObjectKind, name: Option<&str>) -> Result<String, KubeError> {
        let av = &kind.api_version;
        let av_ok = !av.is_empty()
            && av.split('/').count() <= 2
            && av.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
            });
        if !av_ok {
            return Err(KubeError::Invalid(format!(
                "api-version {av:?} is not a Kubernetes API version such as v1 or coordination.k8s.io/v1"
            )));
        }
        let plural = &kind.plural;
        if plural.is_empty()
            || !plural
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(KubeError::Invalid(format!(
                "plural {plural:?} is not a resource name such as configmaps"
            )));
        }
        let base = if av.contains('/') {
            format!("/apis/{av}")
        } else {
            format!("/api/{av}")
        };
        let mut path = format!("{base}/namespaces/{}/{plural}", self.namespace);
        if let Some(name) = name {
            check_name(name)?;
            path.push('/');
            path.push_str(name);
        }
        Ok(path)
    }

    /// The time a request may take: the request timeout, cut to what is left
    /// of the plugin call's deadline (less a little for the plugin to turn
    /// the answer into its own).
    pub fn bound(&self, deadline: Option<Instant>) -> Duration {
        let left = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_millis(100))
        });
        left.map_or(self.request_timeout, |l| l.min(self.request_timeout))
    }

    /// One request: the body of a 2xx answer, or the error the status means.
    pub async fn call(
        &self,
        deadline: Option<Instant>,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, KubeError> {
        let bound = self.bound(deadline);
        let client = self.client()?;
        let request = request(method.clone(), path, body)?;
        let exchange = async {
            let response = client
                .send(request)
                .await
                .map_err(|e| KubeError::Unavailable(format!("{method} {path}: {e}")))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| KubeError::Unavailable(format!("{method} {path}: {e}")))?
                .to_bytes()
                .to_vec();
            Ok::<_, KubeError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(bound, exchange).await.map_err(|_| {
            KubeError::Unavailable(format!(
                "{method} {path}: no answer from the API server within {bound:?}"
            ))
        })??;
        let verb = verb_of(&method, path);
        if status.is_success() {
            self.note(verb, None);
            Ok(bytes)
        } else {
            let e = status_error(status.as_u16(), &bytes);
            self.note(verb, Some(&e));
            Err(e)
        }
    }

    /// Records what the API server said to a request of `verb`: any answer
    /// but 401/403 means it was authorized.
    fn note(&self, verb: &str, error: Option<&KubeError>) {
        let refused = match error {
            Some(KubeError::Forbidden(m)) => Some(m.as_str()),
            _ => None,
        };
        self.metrics.refusals.record(verb, refused);
    }

    /// Waits for the first event on one object after `resource_version`,
    /// at most `wait` (and never past the call's deadline).
    pub async fn watch(
        &self,
        deadline: Option<Instant>,
        kind: &ObjectKind,
        name: &str,
        resource_version: &str,
        wait: Duration,
    ) -> Result<Option<WatchEvent>, KubeError> {
        let collection = self.path(kind, None)?;
        check_name(name)?;
        if resource_version.is_empty()
            || !resource_version.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(KubeError::Invalid(format!(
                "resource-version {resource_version:?} is not a resourceVersion read from the API server"
            )));
        }
        let wait = deadline.map_or(wait, |d| {
            wait.min(
                d.saturating_duration_since(Instant::now())
                    .saturating_sub(Duration::from_millis(100)),
            )
        });
        // The server ends the watch by itself a little after our wait, so a
        // dropped connection never lingers there.
        let server_timeout = wait.as_secs() + 2;
        let path = format!(
            "{collection}?watch=1&fieldSelector=metadata.name%3D{name}&resourceVersion={resource_version}&allowWatchBookmarks=false&timeoutSeconds={server_timeout}"
        );
        let until = tokio::time::Instant::now() + wait;
        let client = self.client()?;
        // The API server sends the headers at once and the events as they come.
        let opened = tokio::time::timeout(self.bound(deadline), async {
            client
                .send(request(http::Method::GET, &path, None)?)
                .await
                .map_err(|e| KubeError::Unavailable(format!("watch {collection}/{name}: {e}")))
        })
        .await;
        let response = opened.map_err(|_| {
            KubeError::Unavailable(format!(
                "watch {collection}/{name}: no answer from the API server within {:?}",
                self.bound(deadline)
            ))
        })??;
        let status = response.status();
        if !status.is_success() {
            // The refusal's body comes at once; do not wait out `wait` for it.
            let bytes = tokio::time::timeout(self.bound(deadline), response.into_body().collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let e = status_error(status.as_u16(), &bytes);
            self.note("watch", Some(&e));
            return Err(e);
        }
        self.note("watch", None);
        let mut body = response.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if let Some(event) = parse_event(&line)? {
                    return Ok(Some(event));
                }
            }
            let frame = match tokio::time::timeout_at(until, body.frame()).await {
                Err(_) => return Ok(None), // the wait is over
                Ok(None) => {
                    // The server ended the stream; a last line may lack its newline.
                    return parse_event(&buf);
                }
                Ok(Some(Err(e))) => {
                    return Err(KubeError::Unavailable(format!(
                        "watch {collection}/{name}: {e}"
                    )));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
        }
    }
}

/// The RBAC verb of a request on `path` (a watch goes through `watch`).
fn verb_of(method: &http::Method, path: &str) -> &'static str {
    // An object's path has one more segment than its collection's:
    // .../namespaces/<ns>/<plural>[/<name>].
    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    let named = segments
        .iter()
        .position(|s| *s == "namespaces")
        .is_some_and(|i| segments.len() > i + 3);
    match *method {
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

fn from_kubeconfig(path: &PathBuf, context: Option<&str>) -> Result<kube::Config, SetupError> {
    let bad = |reason: String| SetupError::Kubeconfig {
        path: path.clone(),
        reason,
    };
    let mut kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    if let Some(ctx) = context {
        if !kc.contexts.iter().any(|c| c.name == ctx) {
            return Err(SetupError::NoContext {
                path: path.clone(),
                context: ctx.into(),
                known: kc
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        kc.current_context = Some(ctx.into());
    }
    kube::Config::try_from(kc).map_err(|e| bad(e.to_string()))
}

fn request(
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<http::Request<kube::client::Body>, KubeError> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::ACCEPT, "application/json");
    if body.is_some() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    b.body(kube::client::Body::from(body.unwrap_or_default()))
        .map_err(|e| KubeError::Invalid(format!("cannot build the request for {path}: {e}")))
}

/// Object names are DNS subdomains: lower case, digits, '-' and '.', at most 253.
fn check_name(name: &str) -> Result<(), KubeError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(KubeError::Invalid(format!(
            "{name:?} is not an object name (lower case letters, digits, '-' and '.', at most 253)"
        )))
    }
}

/// A watch line: an event to report, or none for a bookmark or an empty line.
fn parse_event(line: &[u8]) -> Result<Option<WatchEvent>, KubeError> {
    let text = std::str::from_utf8(line).unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        KubeError::Unavailable(format!("the watch sent a line that is not JSON: {e}"))
    })?;
    let change = v["type"].as_str().unwrap_or_default().to_string();
    match change.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" => Ok(Some(WatchEvent {
            change,
            object: v["object"].to_string(),
        })),
        "BOOKMARK" => Ok(None),
        "ERROR" => {
            let status = &v["object"];
            let code = status["code"].as_u64().unwrap_or(500) as u16;
            Err(status_error(code, status.to_string().as_bytes()))
        }
        other => Err(KubeError::Unavailable(format!(
            "the watch sent an event of unknown type {other:?}"
        ))),
    }
}

/// What a non-2xx answer means, with the API server's own message.
pub fn status_error(code: u16, body: &[u8]) -> KubeError {
    let status: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reason = status["reason"].as_str().unwrap_or_default();
    let message = match status["message"].as_str() {
        Some(m) if !m.is_empty() => format!("{code} {reason}: {m}"),
        _ => format!("{code}: {}", String::from_utf8_lossy(body).trim()),
    };
    match code {
        404 => KubeError::NotFound,
        409 if reason == "AlreadyExists" => KubeError::AlreadyExists(message),
        409 => KubeError::Conflict(message),
        410 => KubeError::Gone(message),
        400 | 422 => KubeError::Invalid(message),
        401 | 403 => KubeError::Forbidden(message),
        _ => KubeError::Unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> KubeApi {
        KubeApi {
            config: kube::Config::new("http://127.0.0.1:1".parse().unwrap()),
            metrics: Arc::default(),
            client: OnceLock::new(),
            namespace: "ns".into(),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn paths_stay_in_the_namespace() {
        let a = api();
        let cm = ObjectKind {
            api_version: "v1".into(),
            plural: "configmaps".into(),
        };
        assert_eq!(
            a.path(&cm, Some("x-cluster-config-map")).unwrap(),
            "/api/v1/namespaces/ns/configmaps/x-cluster-config-map"
        );
        let lease = ObjectKind {
            api_version: "coordination.k8s.io/v1".into(),
            plural: "leases".into(),
        };
        assert_eq!(
            a.path(&lease, None).unwrap(),
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
        );
        for name in ["../secrets", "a/b", "A", "", "x?watch=1", "-a"] {
            assert!(
                matches!(a.path(&cm, Some(name)), Err(KubeError::Invalid(_))),
                "{name:?} accepted"
            );
        }
        let sneaky = ObjectKind {
            api_version: "v1/../../x".into(),
            plural: "configmaps".into(),
        };
        assert!(a.path(&sneaky, None).is_err());
    }

    #[test]
    fn statuses_become_errors() {
        let body = br#"{"kind":"Status","reason":"AlreadyExists","message":"configmaps \"x\" already exists","code":409}"#;
        assert!(
            matches!(status_error(409, body), KubeError::AlreadyExists(m) if m.contains("already exists"))
        );
        assert!(matches!(
            status_error(409, br#"{"reason":"Conflict"}"#),
            KubeError::Conflict(_)
        ));
        assert!(matches!(status_error(404, b""), KubeError::NotFound));
        assert!(matches!(status_error(422, b"{}"), KubeError::Invalid(_)));
        assert!(matches!(status_error(403, b"{}"), KubeError::Forbidden(_)));
        assert!(matches!(
            status_error(503, b"busy"),
            KubeError::Unavailable(m) if m.contains("busy")
        ));
    }

    #[test]
    fn verbs_of_requests() {
        let get = http::Method::GET;
        assert_eq!(verb_of(&get, "/api/v1/namespaces/ns/configmaps/x"), "get");
        assert_eq!(verb_of(&get, "/api/v1/namespaces/ns/configmaps"), "list");
        assert_eq!(
            verb_of(
                &http::Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x"
            ),
            "update"
        );
        assert_eq!(
            verb_of(&http::Method::POST, "/api/v1/namespaces/ns/configmaps"),
            "create"
        );
    }

    #[test]
    fn refusals_are_recorded_per_verb_until_allowed_again() {
        let a = api();
        a.note(
            "update",
            Some(&KubeError::Forbidden("403 Forbidden: no".into())),
        );
        a.note("get", Some(&KubeError::NotFound));
        assert!(a.metrics.refusals.current().unwrap().contains("update"));
        a.note("update", Some(&KubeError::Conflict("modified".into())));
        assert_eq!(a.metrics.refusals.current(), None);
    }

    #[test]
    fn watch_lines() {
        let e =
            parse_event(br#"{"type":"MODIFIED","object":{"metadata":{"resourceVersion":"7"}}}"#)
                .unwrap()
                .unwrap();
        assert_eq!(e.change, "MODIFIED");
        assert!(e.object.contains("\"7\""));
        assert!(
            parse_event(br#"{"type":"BOOKMARK","object":{}}"#)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            parse_event(br#"{"type":"ERROR","object":{"code":410,"reason":"Expired","message":"too old resource version"}}"#),
            Err(KubeError::Gone(_))
        ));
    }
}
