//! The localhost HTTP API: one hyper HTTP/1 connection task per client.
//! A handler never panics on input and every failure is a JSON reply; a
//! connection that misbehaves ends that connection only.

mod candidacy;
mod components;
mod jobs;
mod leader;
mod ops;
mod reply;
mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sidecar::Shared;
use reply::Reply;

/// Serves until `shutdown` turns true, then stops accepting and lets the
/// requests in flight finish (at most `drain`), so that a write the backend
/// has committed is answered, not cut off.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "requests still in flight at exit");
    }
}

/// Resolves once shutdown is requested (the guard `wait_for` returns is not
/// `Send`, so it must not live in the accept loop's future).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Requests that reach the plugin run in their own task, so they finish even
/// if the client goes away: hyper drops a handler whose connection closes,
/// and dropping a plugin call halfway would leave its instance unusable (and
/// a multi-step job operation half done). Requests served from memory, such
/// as long polls, run in place and may be dropped freely.
async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path();
    let in_memory = matches!(
        path,
        "/" | "/leader" | "/leader/self" | "/healthz" | "/readyz" | "/metrics" | "/candidacy"
    ) || path.starts_with("/candidacy/")
        || (req.method() == Method::GET && path.starts_with("/leader/components"));
    if in_memory {
        return route(&shared, req).await;
    }
    match tokio::spawn(async move { route(&shared, req).await }).await {
        Ok(reply) => reply,
        Err(e) => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request handler failed: {e}"),
        ),
    }
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/") => leader::elector_compat(shared),
        (Method::GET, "/leader") => leader::get(shared, req.uri().query()).await,
        (Method::GET, "/leader/self") => leader::is_self(shared),
        (Method::POST, "/leader/resign") => leader::resign(shared, req.uri().query()).await,
        (Method::GET, "/leader/components") => components::list(shared),
        (_, p) if p.starts_with("/leader/components/") => components::handle(shared, req).await,
        (Method::POST, "/candidacy") => candidacy::open(shared),
        (Method::PUT, p) if p.starts_with("/candidacy/") => {
            candidacy::renew(shared, &p["/candidacy/".len()..])
        }
        (Method::DELETE, p) if p.starts_with("/candidacy/") => {
            candidacy::close(shared, &p["/candidacy/".len()..]).await
        }
        (Method::GET, "/healthz") => ops::healthz(shared),
        (Method::GET, "/readyz") => ops::readyz(shared),
        (Method::GET, "/metrics") => ops::metrics(shared),
        (Method::GET, "/state") => state::list(shared, req.uri().query()).await,
        (Method::GET, "/jobs") => jobs::list(shared).await,
        (Method::GET, "/recovery") => jobs::recovery(shared).await,
        (_, p) if p.starts_with("/jobs/") => jobs::handle(shared, req).await,
        (_, p) if p.starts_with("/state/") => state::handle(shared, req).await,
        (
            _,
            "/" | "/leader" | "/leader/self" | "/healthz" | "/readyz" | "/metrics" | "/state"
            | "/jobs" | "/recovery" | "/candidacy" | "/leader/components",
        ) => reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not supported on {path}", req.method()),
        ),
        (_, "/leader/resign") => reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST /leader/resign",
        ),
        _ => reply::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {path} (see the README for the API)"),
        ),
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
    fn query_decoding() {
        let q = query_pairs(Some("wait=30s&known=7&prefix=jobs%2Fa&bad=%zz&tail=%4"));
        assert_eq!(q[0], ("wait".into(), "30s".into()));
        assert_eq!(q[2], ("prefix".into(), "jobs/a".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("tail".into(), "%4".into()));
    }
}
