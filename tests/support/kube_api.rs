//! An in-process Kubernetes API server for tests: no API server can be
//! installed on these machines, so this one behaves like a real one (v1.28,
//! as observed) on everything the sidecar's `kubernetes`
//! capability and plugin use, and says so exactly here. It runs on its own
//! thread and runtime, on a free loopback port, plain HTTP.
//!
//! What it implements:
//! - **Auth**: `Authorization: Bearer <token>` with the tokens it was started
//!   with; anything else is 401 `Unauthorized`. A token may be read-only:
//!   its writes are 403 `Forbidden` with the API server's RBAC wording.
//! - **RBAC** (`grant`): a token can instead authenticate as a named user
//!   (`system:serviceaccount:<ns>:<name>` for a service account) holding the
//!   rules of Roles bound in given namespaces, matched as the RBAC
//!   authorizer does: `apiGroups`, `resources`, `verbs` (each may be `*`)
//!   and `resourceNames`. The name a rule with `resourceNames` is matched
//!   against is the object's name for get, update and delete, the
//!   `fieldSelector=metadata.name=<n>` of a list or watch, and none for a
//!   create (the name is in the body, so such a rule never allows a create,
//!   as on a real server). A refusal is 403 `Forbidden` worded exactly as
//!   the API server words it: `configmaps "x" is forbidden: User
//!   "system:serviceaccount:ns:sa" cannot watch resource "configmaps" in API
//!   group "" in the namespace "ns"` (`configmaps is forbidden: …` when the
//!   request names no object). Authorization comes before everything but
//!   authentication (a refused request learns nothing, not even a 404), and
//!   rules can be changed while the server runs.
//! - **Kinds**: `configmaps` (core `v1`) and `leases`
//!   (`coordination.k8s.io/v1`), in the namespaces it was started with (any
//!   other namespace is 404 `NotFound`, as for a namespace that does not
//!   exist); any other path is 404.
//! - **resourceVersion**: one counter for the whole server, like etcd's
//!   revision; every change takes the next value, as a decimal string.
//! - **GET** of an object (404 `NotFound` with a `Status` body when absent)
//!   and of a collection (a `…List` with the list's resourceVersion).
//! - **POST** (create): 201 with `resourceVersion`, `uid`,
//!   `creationTimestamp` and `namespace` filled in; 409 `AlreadyExists` for
//!   a taken name; 422 `Invalid` without `metadata.name`; 400 `BadRequest`
//!   for a body naming another namespace; 500 for a body carrying a
//!   resourceVersion (as the etcd3 storage layer refuses it).
//! - **PUT** (replace): 404 if absent (ConfigMaps and Leases cannot be
//!   created by an update); 400 if the body names another object; with
//!   `metadata.resourceVersion` only at that version, else 409 `Conflict`
//!   ("the object has been modified"); without it, a ConfigMap is replaced
//!   unconditionally but a Lease is 422 `Invalid` ("must be specified for an
//!   update"), as observed on v1.28. A replace that changes nothing keeps the
//!   resourceVersion and sends no event, as the real server does.
//! - **DELETE**: 200 with a `Status` of `Success`; 404 if absent;
//!   `DeleteOptions.preconditions.resourceVersion` enforced with 409 `Conflict`.
//! - **Validation**: ConfigMap data keys must be `[-._a-zA-Z0-9]+` of at
//!   most 253 characters and values strings; `data` and `binaryData`
//!   together at most 1 MiB (422 `Invalid`, "Too long"). Lease
//!   `spec.acquireTime` / `spec.renewTime` must be MicroTime with exactly
//!   six fractional digits (422 otherwise, §9).
//! - **Watch**: `GET <collection>?watch=1` with `fieldSelector=metadata.name=<n>`
//!   (or none), `resourceVersion` and `timeoutSeconds`, answered at once
//!   with 200 and then one JSON line per event (`ADDED`, `MODIFIED`,
//!   `DELETED`, with the object after the change) for changes after that
//!   resourceVersion; resourceVersion `0` or absent starts with a synthetic
//!   `ADDED` of the current object. A resourceVersion older than the kept
//!   history (the last 10,000 changes) gets an `ERROR` event with a 410
//!   `Expired` Status, as the real server does. The stream ends after
//!   `timeoutSeconds` (default 30 min here).
//!
//! What it does not: TLS, field or label selectors other than
//! `metadata.name=`, PATCH and server-side apply, generateName, finalizers
//! and graceful deletion, bookmarks, list paging, other kinds, admission.
//!
//! For fault tests it can **cut off** one token (its requests get no answer,
//! its open watches go silent: a network partition as seen by that client)
//! or **pause** the whole server (nobody gets an answer), and undo either.
//! For timing it can add a **latency** to every request (before it is
//! handled, so a write commits and its watch event goes out when the reply
//! does): a real API server's round trip to etcd, which this one lacks.
//! It keeps a history of every change with the instant it happened, so a
//! test can tell exactly when a record changed hands.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const HISTORY: usize = 10_000;
const MAX_CONFIGMAP_DATA: usize = 1 << 20;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// One rule of a Role, as `rules:` in its manifest. Empty `resource_names`:
/// every object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

impl Rule {
    fn allows(&self, kind: &Kind, verb: &str, name: Option<&str>) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        has(&self.api_groups, kind.group)
            && has(&self.resources, kind.plural)
            && has(&self.verbs, verb)
            && (self.resource_names.is_empty()
                || name.is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }
}

/// What a token is allowed.
#[derive(Clone, Debug)]
enum Grant {
    Access(Access),
    /// A named user with the rules of the Roles bound to it, per namespace.
    Rbac {
        user: String,
        rules: Vec<(String, Rule)>,
    },
}

/// One change, as kept in the history.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: Instant,
    pub resource_version: u64,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// ADDED, MODIFIED or DELETED.
    pub change: &'static str,
    pub object: Value,
    /// The token that made it.
    pub by: String,
}

#[derive(Default)]
struct Store {
    revision: u64,
    /// (namespace, plural, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    history: VecDeque<Change>,
}

#[derive(Default)]
struct Control {
    cut: HashSet<String>,
    paused: bool,
    /// Added to every request before it is handled.
    latency: Duration,
}

struct Shared {
    tokens: Mutex<HashMap<String, Grant>>,
    namespaces: HashSet<String>,
    store: Mutex<Store>,
    /// Tells watchers the revision moved.
    revision: tokio::sync::watch::Sender<u64>,
    control: Mutex<Control>,
}

pub struct KubeApiServer {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Kind {
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    group: &'static str,
}

const KINDS: [Kind; 2] = [
    Kind {
        api_version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        group: "",
    },
    Kind {
        api_version: "coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        group: "coordination.k8s.io",
    },
];

impl KubeApiServer {
    /// Starts a server that knows `tokens` and `namespaces`.
    pub fn start(tokens: &[(&str, Access)], namespaces: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (revision, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            tokens: Mutex::new(
                tokens
                    .iter()
                    .map(|(t, a)| (t.to_string(), Grant::Access(*a)))
                    .collect(),
            ),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            store: Mutex::new(Store {
                // Real clusters are far from revision 0; versions are opaque anyway.
                revision: 1000,
                ..Store::default()
            }),
            revision,
            control: Mutex::new(Control::default()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kube-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a runtime for the test API server");
                rt.block_on(serve(listener, s, stopped));
                // Open watches and hung requests end with the runtime.
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn the test API server");
        Self {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes a kubeconfig for `token` in `namespace` and returns its path.
    pub fn kubeconfig(&self, dir: &Path, token: &str, namespace: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: {token}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {token}\n    namespace: {namespace}\ncurrent-context: test\n",
                self.url()
            ),
        )
        .expect("write kubeconfig");
        path
    }

    /// From now on `token` authenticates as `user` and may do what `rules`
    /// (namespace, rule) allow: the Roles bound to it. Replaces whatever the
    /// token was allowed before, at once (open watches keep running, as on
    /// a real server).
    pub fn grant(&self, token: &str, user: &str, rules: &[(&str, Rule)]) {
        self.shared.tokens.lock().unwrap().insert(
            token.into(),
            Grant::Rbac {
                user: user.into(),
                rules: rules
                    .iter()
                    .map(|(ns, r)| (ns.to_string(), r.clone()))
                    .collect(),
            },
        );
    }

    /// Every request waits this long before it is handled (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.control.lock().unwrap().latency = latency;
    }

    /// From now on, requests made with `token` get no answer and its open
    /// watches go silent, until `restore`.
    pub fn cut_off(&self, token: &str) {
        self.shared.control.lock().unwrap().cut.insert(token.into());
    }

    pub fn restore(&self, token: &str) {
        self.shared.control.lock().unwrap().cut.remove(token);
    }

    /// Nobody gets an answer until `resume`.
    pub fn pause(&self) {
        self.shared.control.lock().unwrap().paused = true;
    }

    pub fn resume(&self) {
        self.shared.control.lock().unwrap().paused = false;
    }

    pub fn object(&self, namespace: &str, plural: &str, name: &str) -> Option<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .objects
            .get(&(namespace.into(), plural.into(), name.into()))
            .cloned()
    }

    /// Every change kept, oldest first.
    pub fn history(&self) -> Vec<Change> {
        self.shared
            .store
            .lock()
            .unwrap()
            .history
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<ApiBody>;

/// A whole body, or a stream of watch lines.
pub enum ApiBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(f) => Pin::new(f).poll_frame(cx),
            ApiBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    // A whole body goes out with its content-length, as the real server sends it.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ApiBody::Full(f) => f.size_hint(),
            ApiBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Full(f) => f.is_end_stream(),
            ApiBody::Stream(_) => false,
        }
    }
}

fn json_reply(status: StatusCode, v: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(ApiBody::Full(Full::new(Bytes::from(v.to_string()))))
        .unwrap()
}

/// A failure `Status`, as the API server words it.
fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Reply {
    json_reply(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(kind: &Kind, name: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", resource_name(kind)),
        json!({"name": name, "group": kind.group, "kind": kind.plural}),
    )
}

fn invalid(kind: &Kind, name: &str, cause: String) -> Reply {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{}.{} \"{name}\" is invalid: {cause}",
            kind.kind, kind.group
        )
        .replace(". \"", " \""),
        json!({"name": name, "group": kind.group, "kind": kind.kind}),
    )
}

fn bad_request(message: String) -> Reply {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

/// `configmaps` or `leases.coordination.k8s.io`, as messages name them.
fn resource_name(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (kind, namespace, name) of `/api/v1/namespaces/<ns>/<plural>[/<name>]`
/// or `/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]`.
fn route(path: &str) -> Option<(&'static Kind, String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural] => (ns, plural, None),
        ["namespaces", ns, plural, name] => (ns, plural, Some(name.to_string())),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.plural == *plural)?;
    Some((kind, ns.to_string(), name))
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Reply {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    // A cut-off client or a paused server gets no answer; the client's
    // own timeout ends the request.
    loop {
        let hang = {
            let c = shared.control.lock().unwrap();
            c.paused || token.as_ref().is_some_and(|t| c.cut.contains(t))
        };
        if !hang {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latency = shared.control.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let grant = token
        .as_ref()
        .and_then(|t| shared.tokens.lock().unwrap().get(t).cloned());
    let Some(grant) = grant else {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
            json!({}),
        );
    };
    let token = token.unwrap_or_default();
    let path = req.uri().path().to_string();
    let Some((kind, ns, name)) = route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        );
    };
    let q = query(&req);
    let method = req.method().clone();
    let verb = match (&method, &name) {
        (&Method::GET, _) if q.get("watch").is_some_and(|w| w == "1" || w == "true") => "watch",
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::DELETE, Some(_)) => "delete",
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
                json!({}),
            );
        }
    };
    // The name RBAC sees: a list or watch takes it from its field selector.
    let authz_name = match verb {
        "list" | "watch" => q
            .get("fieldSelector")
            .and_then(|s| s.strip_prefix("metadata.name="))
            .map(str::to_string),
        _ => name.clone(),
    };
    let (user, allowed) = match &grant {
        Grant::Access(Access::ReadWrite) => (format!("system:serviceaccount:{ns}:{token}"), true),
        Grant::Access(Access::ReadOnly) => (
            format!("system:serviceaccount:{ns}:{token}"),
            matches!(verb, "get" | "list" | "watch"),
        ),
        Grant::Rbac { user, rules } => (
            user.clone(),
            rules
                .iter()
                .any(|(n, r)| *n == ns && r.allows(kind, verb, authz_name.as_deref())),
        ),
    };
    if !allowed {
        let named = authz_name.clone().unwrap_or_default();
        let what = if named.is_empty() {
            format!("{} is forbidden", resource_name(kind))
        } else {
            format!("{} \"{named}\" is forbidden", resource_name(kind))
        };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{what}: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{ns}\"",
                kind.plural, kind.group
            ),
            json!({"name": named, "group": kind.group, "kind": kind.plural}),
        );
    }
    if !shared.namespaces.contains(&ns) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            json!({"name": ns, "kind": "namespaces"}),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad_request("cannot read the request body".into()),
    };
    let parsed = || -> Result<Value, String> {
        serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))
    };
    match verb {
        "watch" => watch(shared, kind, ns, &q, token),
        "get" => get(shared, kind, &ns, &name.unwrap_or_default()),
        "list" => list(shared, kind, &ns),
        "create" => match parsed() {
            Ok(obj) => create(shared, kind, &ns, obj, &token),
            Err(e) => bad_request(e),
        },
        "update" => match parsed() {
            Ok(obj) => replace(shared, kind, &ns, &name.unwrap_or_default(), obj, &token),
            Err(e) => bad_request(e),
        },
        _ => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                match parsed() {
                    Ok(v) => v,
                    Err(e) => return bad_request(e),
                }
            };
            delete(
                shared,
                kind,
                &ns,
                &name.unwrap_or_default(),
                &options,
                &token,
            )
        }
    }
}

fn key(kind: &Kind, ns: &str, name: &str) -> (String, String, String) {
    (ns.into(), kind.plural.into(), name.into())
}

fn get(shared: &Shared, kind: &'static Kind, ns: &str, name: &str) -> Reply {
    match shared
        .store
        .lock()
        .unwrap()
        .objects
        .get(&key(kind, ns, name))
    {
        Some(obj) => json_reply(StatusCode::OK, obj),
        None => not_found(kind, name),
    }
}

fn list(shared: &Shared, kind: &'static Kind, ns: &str) -> Reply {
    let store = shared.store.lock().unwrap();
    let items: Vec<&Value> = store
        .objects
        .iter()
        .filter(|((n, p, _), _)| n == ns && p == kind.plural)
        .map(|(_, v)| v)
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": store.revision.to_string()},
            "items": items,
        }),
    )
}

/// What the API server's validation says about an object, if anything.
fn validate(kind: &Kind, obj: &Value) -> Option<String> {
    match kind.plural {
        "configmaps" => {
            let mut size = 0;
            for field in ["data", "binaryData"] {
                let Some(map) = obj[field].as_object() else {
                    if !obj[field].is_null() {
                        return Some(format!("{field}: Invalid value: must be a map"));
                    }
                    continue;
                };
                for (k, v) in map {
                    let key_ok = !k.is_empty()
                        && k.len() <= 253
                        && k
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                    if !key_ok {
                        return Some(format!(
                            "{field}[{k}]: Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                        ));
                    }
                    let Some(text) = v.as_str() else {
                        return Some(format!("{field}[{k}]: Invalid value: must be a string"));
                    };
                    size += k.len() + text.len();
                }
            }
            (size > MAX_CONFIGMAP_DATA)
                .then(|| format!("[]: Too long: must have at most {MAX_CONFIGMAP_DATA} bytes"))
        }
        "leases" => ["acquireTime", "renewTime"].iter().find_map(|f| {
            let v = &obj["spec"][*f];
            if v.is_null() {
                return None;
            }
            let ok = v.as_str().is_some_and(is_micro_time);
            (!ok).then(|| {
                format!("spec.{f}: Invalid value: {v}: must be a MicroTime, RFC 3339 with exactly 6 fractional digits")
            })
        }),
        _ => None,
    }
}

/// `2026-11-21T05:25:45.459640Z`
fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Days to a civil date (enough for creationTimestamp, which nobody reads here).
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Which object a change is to, and who makes it.
struct Target<'a> {
    kind: &'static Kind,
    ns: &'a str,
    name: &'a str,
    by: &'a str,
}

/// Records a change: next revision, history, and a wake-up for watchers.
fn commit(
    shared: &Shared,
    store: &mut Store,
    t: &Target,
    change: &'static str,
    mut obj: Value,
) -> Value {
    let Target { kind, ns, name, by } = *t;
    store.revision += 1;
    let rv = store.revision;
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    if change == "DELETED" {
        store.objects.remove(&key(kind, ns, name));
    } else {
        store.objects.insert(key(kind, ns, name), obj.clone());
    }
    store.history.push_back(Change {
        at: Instant::now(),
        resource_version: rv,
        kind: kind.plural,
        namespace: ns.into(),
        name: name.into(),
        change,
        object: obj.clone(),
        by: by.into(),
    });
    while store.history.len() > HISTORY {
        store.history.pop_front();
    }
    shared.revision.send_replace(rv);
    obj
}

fn create(shared: &Shared, kind: &'static Kind, ns: &str, mut obj: Value, by: &str) -> Reply {
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return invalid(
            kind,
            "",
            "metadata.name: Required value: name or generateName is required".into(),
        );
    };
    if let Some(other) = obj["metadata"]["namespace"].as_str()
        && other != ns
    {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        );
    }
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created".into(),
            json!({}),
        );
    }
    if let Some(cause) = validate(kind, &obj) {
        return invalid(kind, &name, cause);
    }
    let mut store = shared.store.lock().unwrap();
    if store.objects.contains_key(&key(kind, ns, &name)) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource_name(kind)),
            json!({"name": name, "group": kind.group, "kind": kind.plural}),
        );
    }
    obj["apiVersion"] = json!(kind.api_version);
    obj["kind"] = json!(kind.kind);
    obj["metadata"]["namespace"] = json!(ns);
    obj["metadata"]["uid"] = json!(format!("{:032x}", store.revision + 1));
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    let t = Target {
        kind,
        ns,
        name: &name,
        by,
    };
    let stored = commit(shared, &mut store, &t, "ADDED", obj);
    json_reply(StatusCode::CREATED, &stored)
}

fn replace(
    shared: &Shared,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    mut obj: Value,
    by: &str,
) -> Reply {
    if obj["metadata"]["name"].as_str() != Some(name) {
        return bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    let mut store = shared.store.lock().unwrap();
    let Some(current) = store.objects.get(&key(kind, ns, name)).cloned() else {
        return not_found(kind, name);
    };
    let given = obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    match &given {
        None if kind.plural == "leases" => {
            return invalid(
                kind,
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    .into(),
            );
        }
        Some(rv) if Some(rv.as_str()) != current["metadata"]["resourceVersion"].as_str() => {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource_name(kind)
                ),
                json!({"name": name, "group": kind.group, "kind": kind.plural}),
            );
        }
        _ => {}
    }
    if let Some(cause) = validate(kind, &obj) {
        return invalid(kind, name, cause);
    }
    // Identity the server owns survives a replace.
    obj["apiVersion"] = json!(kind.api_version);
    obj["kind"] = json!(kind.kind);
    for field in ["namespace", "uid", "creationTimestamp", "resourceVersion"] {
        obj["metadata"][field] = current["metadata"][field].clone();
    }
    if obj == current {
        return json_reply(StatusCode::OK, &current); // no change, no new version
    }
    let t = Target { kind, ns, name, by };
    let stored = commit(shared, &mut store, &t, "MODIFIED", obj);
    json_reply(StatusCode::OK, &stored)
}

fn delete(
    shared: &Shared,
    kind: &'static Kind,
    ns: &str,
    name: &str,
    options: &Value,
    by: &str,
) -> Reply {
    let mut store = shared.store.lock().unwrap();
    let Some(current) = store.objects.get(&key(kind, ns, name)).cloned() else {
        return not_found(kind, name);
    };
    if let Some(rv) = options["preconditions"]["resourceVersion"].as_str() {
        let actual = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("");
        if rv != actual {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}",
                    resource_name(kind)
                ),
                json!({"name": name, "group": kind.group, "kind": kind.plural}),
            );
        }
    }
    let t = Target { kind, ns, name, by };
    commit(shared, &mut store, &t, "DELETED", current.clone());
    json_reply(
        StatusCode::OK,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": current["metadata"]["uid"]},
        }),
    )
}

fn watch(
    shared: &Arc<Shared>,
    kind: &'static Kind,
    ns: String,
    q: &HashMap<String, String>,
    token: String,
) -> Reply {
    let name = match q.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(sel) => match sel.strip_prefix("metadata.name=") {
            Some(n) => Some(n.to_string()),
            None => {
                return bad_request(format!(
                    "unable to parse requested field selector {sel:?}: only metadata.name= is implemented by the test server"
                ));
            }
        },
    };
    let from: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse() {
            Ok(v) => Some(v),
            Err(_) => return bad_request(format!("invalid resource version {rv:?}")),
        },
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let shared = shared.clone();
    let matches = move |plural: &str, namespace: &str, object: &str| {
        plural == kind.plural && namespace == ns && name.as_ref().is_none_or(|n| n == object)
    };
    let line = |change: &str, obj: &Value| {
        Bytes::from(format!("{}\n", json!({"type": change, "object": obj})))
    };
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + timeout;
        let mut revisions = shared.revision.subscribe();
        let mut last = {
            let store = shared.store.lock().unwrap();
            match from {
                Some(rv) => {
                    let oldest = store
                        .history
                        .front()
                        .map_or(store.revision, |c| c.resource_version);
                    if rv + 1 < oldest {
                        let expired = json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure",
                            "message": format!("too old resource version: {rv} ({})", oldest - 1),
                            "reason": "Expired", "code": 410,
                        });
                        let _ = tx.try_send(line("ERROR", &expired));
                        return;
                    }
                    rv
                }
                None => {
                    // The current state first, as the real server does.
                    for ((n, p, nm), obj) in &store.objects {
                        if matches(p, n, nm) {
                            let _ = tx.try_send(line("ADDED", obj));
                        }
                    }
                    store.revision
                }
            }
        };
        loop {
            // A cut-off client hears nothing, though its connection stays open.
            let cut = {
                let c = shared.control.lock().unwrap();
                c.paused || c.cut.contains(&token)
            };
            if !cut {
                let (pending, head): (Vec<Change>, u64) = {
                    let store = shared.store.lock().unwrap();
                    let pending = store
                        .history
                        .iter()
                        .filter(|c| {
                            c.resource_version > last && matches(c.kind, &c.namespace, &c.name)
                        })
                        .cloned()
                        .collect();
                    (pending, store.revision)
                };
                for c in pending {
                    if tx.send(line(c.change, &c.object)).await.is_err() {
                        return; // the client went away
                    }
                }
                last = last.max(head);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = revisions.changed() => {}
                // Wakes a silenced stream to check whether it was restored.
                _ = tokio::time::sleep(Duration::from_millis(20)), if cut => {}
                _ = tx.closed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(ApiBody::Stream(rx))
        .unwrap()
}
