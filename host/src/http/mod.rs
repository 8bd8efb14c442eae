//! The localhost HTTP API: one hyper HTTP/1 connection task per client.
//! A handler never panics on input and every failure is a JSON reply; a
//! connection that misbehaves ends that connection only. Connections are
//! capped (`conns`), so no client can take the descriptors the backend needs.
//! The API and the optional probe listener share the one cap (one
//! descriptor budget); what each listener lets through is `access`'s.

mod access;
mod candidacy;
mod components;
mod conns;
mod framing;
mod jobs;
mod leader;
mod members;
mod ops;
mod reply;
mod state;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::shared::Shared;
pub use access::{ApiToken, Face, MIN_TOKEN_LEN, TokenError};
use conns::{Gate, IDLE_NEAR_CAP, Slot, Tracked};
use framing::{Scanned, Scanner};
use reply::Reply;

/// Largest request head, and most of a request a connection buffers: a
/// bound on memory per connection (hyper's default is about 400 KiB, which
/// 1,024 slow clients would turn into 400 MiB). A longer head gets 431.
pub const MAX_BUF: usize = 64 << 10;
/// How long a connection may take to send a request's headers, and sit idle
/// between requests, while the listener is not near its cap.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection task shares.
struct Server {
    shared: Arc<Shared>,
    gate: Gate,
    /// The runtime of the election loop and the backend: requests that reach
    /// the plugin run there (see `dispatch`).
    backend: Handle,
}

/// Serves until `shutdown` turns true, then stops accepting and lets the
/// requests in flight finish (at most `drain`), so that a write the backend
/// has committed is answered, not cut off. At most `max_connections` are
/// open at once.
///
/// Runs on a runtime of its own (see `sidecar::run`): accepting, parsing and
/// holding connections then never queues in front of the election loop's
/// renewals. On one shared runtime, a flood of 4,000 connections opening and
/// closing at once delayed a renewal past the renew deadline on a loaded
/// machine, even with descriptors to spare.
pub async fn serve(
    listeners: Vec<(std::net::TcpListener, Face)>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    max_connections: usize,
    backend: Handle,
) {
    let server = Arc::new(Server {
        gate: Gate::new(max_connections, shared.metrics.clone()),
        shared,
        backend,
    });
    let mut accepting = Vec::new();
    for (listener, face) in listeners {
        match TcpListener::from_std(listener) {
            Ok(l) => accepting.push(tokio::spawn(accept(
                l,
                face,
                server.clone(),
                shutdown.clone(),
            ))),
            Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
        }
    }
    for a in accepting {
        let _ = a.await;
    }
    if tokio::time::timeout(drain, server.gate.drained())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "requests still in flight at exit");
    }
}

/// Accepts on one listener until shutdown; each connection carries the
/// listener's `face`.
async fn accept(
    listener: TcpListener,
    face: Face,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let gate = &server.gate;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut shutdown) => break,
        };
        let Some(slot) = gate.admit() else {
            // Best effort: the client may read why before the close.
            let _ = stream.try_write(gate.full_reply());
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            slot,
            face.clone(),
            server.clone(),
            shutdown.clone(),
        ));
    }
}

/// Serves one connection until it ends, shutdown ends it gracefully, or it
/// sits idle while the listener is near its cap.
async fn connection(
    stream: TcpStream,
    slot: Slot,
    face: Face,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let scanner = Arc::new(Mutex::new(Scanner::new(MAX_BUF)));
    let activity = slot.activity.clone();
    let service = {
        let scanner = scanner.clone();
        let activity = activity.clone();
        let server = server.clone();
        let face = Arc::new(face);
        service_fn(move |req| {
            let server = server.clone();
            let scanner = scanner.clone();
            let face = face.clone();
            let busy = activity.busy();
            async move {
                let reply = framed(&server, &face, &scanner, req).await;
                Ok::<_, Infallible>(reply.map(|body| Tracked::new(body, busy)))
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(Scanned::new(stream, scanner)), service);
    tokio::pin!(conn);
    let mut stopping_now = false;
    loop {
        let idle = activity.idle_for();
        let recheck = IDLE_NEAR_CAP
            .saturating_sub(idle)
            .max(Duration::from_millis(100));
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = stopping(&mut shutdown), if !stopping_now => {
                stopping_now = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(recheck) => {
                // Dropping the connection with no request in flight cuts
                // nothing off: handlers that reach the plugin run in their
                // own task anyway.
                if server.gate.near_cap() && activity.idle_for() >= IDLE_NEAR_CAP {
                    server.gate.record_eviction();
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// Refuses a request whose length is ambiguous before anything reads its
/// body, and closes the connection after any chunked request (the framing
/// scan does not follow chunked bodies).
async fn framed(
    server: &Server,
    face: &Face,
    scanner: &Mutex<Scanner>,
    req: Request<Incoming>,
) -> Reply {
    let shared = server.shared.clone();
    let backend = &server.backend;
    let head = framing::lock(scanner).next_head();
    let chunked = req.headers().contains_key(TRANSFER_ENCODING);
    let mut reply = if chunked {
        let seen =
            head.filter(|h| h.method == req.method().as_str() && h.target == req.uri().to_string());
        match seen {
            Some(h) if !h.content_length => dispatch(shared, backend, face, req).await,
            Some(_) => reply::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request has both Content-Length and Transfer-Encoding, so its length is ambiguous (the shape of request smuggling); send one of them",
            ),
            None => reply::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "cannot tell how this chunked request was framed; send it with Content-Length, on a new connection",
            ),
        }
    } else {
        dispatch(shared, backend, face, req).await
    };
    if chunked {
        reply
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    reply
}

/// Resolves once shutdown is requested (the guard `wait_for` returns is not
/// `Send`, so it must not live in the accept loop's future).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// What a path names. The route table below maps paths to these; `route`
/// maps each to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ElectorCompat,
    Leader,
    LeaderSelf,
    Resign,
    Handover,
    Members,
    Components,
    Component,
    Candidacies,
    Candidacy,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    States,
    State,
    Jobs,
    Job,
    Recovery,
}

/// Which methods a route answers.
#[derive(Debug, Clone, Copy)]
enum Methods {
    /// Only these; any other gets 405 from the table.
    Only(&'static [&'static str]),
    /// The handler tells the methods apart (and answers 405 itself).
    Handler,
}

struct Route {
    path: &'static str,
    /// Also every path below `path/` (the rest is the handler's to parse).
    below: bool,
    methods: Methods,
    /// Methods answered from memory (see `dispatch`).
    from_memory: &'static [&'static str],
    endpoint: Endpoint,
}

const fn exact(
    path: &'static str,
    methods: &'static [&'static str],
    from_memory: &'static [&'static str],
    endpoint: Endpoint,
) -> Route {
    Route {
        path,
        below: false,
        methods: Methods::Only(methods),
        from_memory,
        endpoint,
    }
}

const fn below(
    path: &'static str,
    methods: Methods,
    from_memory: &'static [&'static str],
    endpoint: Endpoint,
) -> Route {
    Route {
        path,
        below: true,
        methods,
        from_memory,
        endpoint,
    }
}

const GET: &[&str] = &["GET"];
const NONE: &[&str] = &[];

/// Every endpoint of the API, once: routing, the 404 and 405 answers and
/// which requests run on the backend's runtime all read this table.
const ROUTES: &[Route] = &[
    exact("/", GET, GET, Endpoint::ElectorCompat),
    exact("/leader", GET, GET, Endpoint::Leader),
    exact("/leader/self", GET, GET, Endpoint::LeaderSelf),
    exact("/leader/resign", &["POST"], NONE, Endpoint::Resign),
    exact("/leader/handover", &["POST"], NONE, Endpoint::Handover),
    exact("/members", GET, NONE, Endpoint::Members),
    exact("/leader/components", GET, GET, Endpoint::Components),
    below(
        "/leader/components",
        Methods::Handler,
        GET,
        Endpoint::Component,
    ),
    exact("/candidacy", &["POST"], &["POST"], Endpoint::Candidacies),
    below(
        "/candidacy",
        Methods::Only(&["PUT", "DELETE"]),
        &["PUT", "DELETE"],
        Endpoint::Candidacy,
    ),
    exact("/healthz", GET, GET, Endpoint::Healthz),
    exact("/readyz", GET, GET, Endpoint::Readyz),
    exact("/metrics", GET, GET, Endpoint::Metrics),
    exact("/openapi.yaml", GET, GET, Endpoint::OpenApi),
    exact("/state", GET, NONE, Endpoint::States),
    below("/state", Methods::Handler, NONE, Endpoint::State),
    exact("/jobs", GET, NONE, Endpoint::Jobs),
    below("/jobs", Methods::Handler, NONE, Endpoint::Job),
    exact("/recovery", GET, NONE, Endpoint::Recovery),
];

/// Where a request goes: a handler, or an answer from the table itself.
enum Routed {
    To {
        endpoint: Endpoint,
        /// The part of the path after the route's own (`below` routes).
        rest: String,
        from_memory: bool,
    },
    NotAllowed(&'static [&'static str]),
    NotFound,
}

fn lookup(method: &Method, path: &str) -> Routed {
    let matched = ROUTES.iter().find_map(|r| {
        if !r.below {
            return (path == r.path).then_some((r, ""));
        }
        path.strip_prefix(r.path)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| (r, rest))
    });
    let Some((route, rest)) = matched else {
        return Routed::NotFound;
    };
    match route.methods {
        Methods::Only(allowed) if !allowed.contains(&method.as_str()) => {
            Routed::NotAllowed(allowed)
        }
        _ => Routed::To {
            endpoint: route.endpoint,
            rest: rest.to_string(),
            from_memory: route.from_memory.contains(&method.as_str()),
        },
    }
}

/// Requests that reach the plugin run in their own task, so they finish even
/// if the client goes away: hyper drops a handler whose connection closes,
/// and dropping a plugin call halfway would leave its instance unusable (and
/// a multi-step job operation half done). Requests served from memory, such
/// as long polls, run in place and may be dropped freely. The task runs on
/// the backend's runtime, where the plugin's sessions and connections live.
async fn dispatch(
    shared: Arc<Shared>,
    backend: &Handle,
    face: &Face,
    req: Request<Incoming>,
) -> Reply {
    let path = req.uri().path().to_string();
    let (endpoint, rest) = match lookup(req.method(), &path) {
        Routed::NotFound => {
            return reply::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such endpoint: {path} (see the README for the API)"),
            );
        }
        Routed::NotAllowed(allowed) => {
            return reply::method_not_allowed(
                allowed,
                format!(
                    "{} is not supported on {path}; use {}",
                    req.method(),
                    allowed.join(" or ")
                ),
            );
        }
        Routed::To {
            endpoint,
            rest,
            from_memory,
        } => {
            // Before any handler: a refused request changes nothing.
            if let Some(refused) = access::refusal(face, req.method(), endpoint, req.headers()) {
                return refused;
            }
            if from_memory {
                return route(&shared, endpoint, &rest, req).await;
            }
            (endpoint, rest)
        }
    };
    match backend
        .spawn(async move { route(&shared, endpoint, &rest, req).await })
        .await
    {
        Ok(reply) => reply,
        Err(e) => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request handler failed: {e}"),
        ),
    }
}

async fn route(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    rest: &str,
    req: Request<Incoming>,
) -> Reply {
    let query = req.uri().query();
    match endpoint {
        Endpoint::ElectorCompat => leader::elector_compat(shared),
        Endpoint::Leader => leader::get(shared, query).await,
        Endpoint::LeaderSelf => leader::is_self(shared),
        Endpoint::Resign => leader::resign(shared, query).await,
        Endpoint::Handover => members::handover(shared, query).await,
        Endpoint::Members => members::list(shared).await,
        Endpoint::Components => components::list(shared),
        Endpoint::Component => components::handle(shared, req).await,
        Endpoint::Candidacies => candidacy::open(shared),
        Endpoint::Candidacy if req.method() == Method::PUT => candidacy::renew(shared, rest),
        Endpoint::Candidacy => candidacy::close(shared, rest).await,
        Endpoint::Healthz => ops::healthz(shared),
        Endpoint::Readyz => ops::readyz(shared),
        Endpoint::Metrics => ops::metrics(shared),
        Endpoint::OpenApi => ops::openapi(),
        Endpoint::States => state::list(shared, query).await,
        Endpoint::State => state::handle(shared, req).await,
        Endpoint::Jobs => jobs::list(shared).await,
        Endpoint::Job => jobs::handle(shared, req).await,
        Endpoint::Recovery => jobs::recovery(shared).await,
    }
}

/// The `wait=` of a long poll (`GET /leader`, `GET /leader/components/…`),
/// capped at `http.max-wait`; a bad value is the 400 to answer.
fn wait_param(shared: &Shared, value: &str) -> Result<Duration, Box<Reply>> {
    match crate::config::parse_duration(value) {
        Ok(d) => Ok(d.min(shared.config.max_wait)),
        Err(e) => Err(Box::new(reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("wait: {e}"),
        ))),
    }
}

/// `name=value` pairs of a query string, percent-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_the_one_table() {
        let to = |m: Method, p: &str| match lookup(&m, p) {
            Routed::To {
                endpoint,
                rest,
                from_memory,
            } => Some((endpoint, rest, from_memory)),
            _ => None,
        };
        assert_eq!(
            to(Method::GET, "/leader"),
            Some((Endpoint::Leader, String::new(), true))
        );
        assert_eq!(
            to(Method::PUT, "/leader/components/dispatcher"),
            Some((Endpoint::Component, "dispatcher".into(), false))
        );
        assert_eq!(
            to(Method::GET, "/leader/components/dispatcher"),
            Some((Endpoint::Component, "dispatcher".into(), true))
        );
        assert_eq!(
            to(Method::DELETE, "/candidacy/c1"),
            Some((Endpoint::Candidacy, "c1".into(), true))
        );
        assert_eq!(
            to(Method::GET, "/state/a/b"),
            Some((Endpoint::State, "a/b".into(), false))
        );
        assert!(matches!(
            lookup(&Method::DELETE, "/leader"),
            Routed::NotAllowed(["GET"])
        ));
        assert!(matches!(
            lookup(&Method::GET, "/leader/resign"),
            Routed::NotAllowed(["POST"])
        ));
        assert_eq!(
            to(Method::GET, "/openapi.yaml"),
            Some((Endpoint::OpenApi, String::new(), true))
        );
        assert!(matches!(lookup(&Method::GET, "/leaders"), Routed::NotFound));
        assert!(matches!(lookup(&Method::GET, "/statex"), Routed::NotFound));
    }

    #[test]
    fn query_decoding() {
        let q = query_pairs(Some("wait=30s&known=7&prefix=jobs%2Fa&bad=%zz&tail=%4"));
        assert_eq!(q[0], ("wait".into(), "30s".into()));
        assert_eq!(q[2], ("prefix".into(), "jobs/a".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("tail".into(), "%4".into()));
    }
}
