//! `/leader/components[/{component}]`: per-component leader information
//! (see `crate::components`). Published and deleted by the leader, fenced by
//! `X-HA-Term`; read and long-polled by anyone.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::reply::{self, Reply};
use super::state::{Preconditions, read_body, value_error};
use super::{percent_decode, query_pairs, wait_param};
use crate::components::{Entry, Info, Map, check_component, visible};
use crate::shared::Shared;

const PATH: &str = "/leader/components";

fn current_term(shared: &Shared) -> Option<u64> {
    shared.view().term.map(|t| t.token)
}

fn entry_json(component: &str, e: Option<&Entry>) -> Value {
    match e {
        Some(e) => json!({
            "component": component,
            "address": e.info.address,
            "session": e.info.session,
            "term": e.info.term,
            "version": e.version,
        }),
        None => json!({
            "component": component, "address": null, "session": null, "term": null, "version": 0,
        }),
    }
}

fn shown<'a>(map: &'a Map, component: &str, current: Option<u64>) -> Option<&'a Entry> {
    map.get(component).filter(|e| visible(e, current))
}

/// `GET /leader/components`: every entry this sidecar would hand out.
pub fn list(shared: &Shared) -> Reply {
    shared.components.start(shared.shutdown_signal());
    let map = shared.components.snapshot();
    let current = current_term(shared);
    let all: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(_, e)| visible(e, current))
        .map(|(c, e)| (c.clone(), entry_json(c, Some(e))))
        .collect();
    reply::json(StatusCode::OK, &json!({ "components": all }))
}

pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    // The method first: one this path never takes is 405 whatever the name.
    if ![Method::GET, Method::PUT, Method::DELETE].contains(req.method()) {
        return method_not_allowed();
    }
    let component = percent_decode(&req.uri().path()[PATH.len() + 1..]);
    if let Err(e) = check_component(&component) {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_component", e);
    }
    match *req.method() {
        Method::GET => get(shared, &component, req.uri().query()).await,
        Method::PUT => publish(shared, &component, req).await,
        Method::DELETE => remove(shared, &component, &req).await,
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> Reply {
    reply::method_not_allowed(
        &["GET", "PUT", "DELETE"],
        "use GET, PUT or DELETE on /leader/components/{component}",
    )
}

/// `GET …/{component}[?wait=30s&known=<version>]`.
async fn get(shared: &Shared, component: &str, query: Option<&str>) -> Reply {
    let mut wait = None;
    let mut known = None;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "wait" => match wait_param(shared, &v) {
                Ok(d) => wait = Some(d),
                Err(bad) => return *bad,
            },
            "known" => match v.parse::<u64>() {
                Ok(n) => known = Some(n),
                Err(_) => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!(
                            "known: {v:?} is not a version (a whole number from an earlier answer, 0 for none)"
                        ),
                    );
                }
            },
            other => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown query parameter {other:?} (accepted: wait, known)"),
                );
            }
        }
    }
    shared.components.start(shared.shutdown_signal());
    let version = |map: &Map| shown(map, component, current_term(shared)).map_or(0, |e| e.version);
    if let Some(wait) = wait {
        let known = known.unwrap_or_else(|| version(&shared.components.snapshot()));
        let deadline = tokio::time::Instant::now() + wait;
        let mut map = shared.components.subscribe();
        let mut discovered = shared.discovered();
        let mut local = shared.local();
        let mut shutdown = shared.shutdown_signal();
        loop {
            if version(&map.borrow_and_update()) != known {
                break;
            }
            // A term change can hide or show an entry without the map changing.
            tokio::select! {
                r = map.changed() => if r.is_err() { break },
                _ = discovered.changed() => {}
                _ = local.changed() => {}
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(deadline) => break,
                // Our own leadership can end by time alone.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    let map = shared.components.snapshot();
    reply::json(
        StatusCode::OK,
        &entry_json(component, shown(&map, component, current_term(shared))),
    )
}

/// The term a publication is fenced by; the message of a `400` otherwise.
fn fence(req: &Request<Incoming>) -> Result<u64, String> {
    match Preconditions::parse(req.headers())? {
        Preconditions {
            fence: Some(t),
            expected: None,
        } => Ok(t),
        Preconditions {
            expected: Some(_), ..
        } => Err("If-Match / If-None-Match are not supported here: the leader's term (X-HA-Term) is the only precondition".into()),
        _ => Err("X-HA-Term is required: only the leader publishes component information, fenced by its term (from GET /leader or the candidacy stream)".into()),
    }
}

/// `PUT …/{component}` with `{"address": "...", "session": "..."}`.
async fn publish(shared: &Shared, component: &str, req: Request<Incoming>) -> Reply {
    let term = match fence(&req) {
        Ok(t) => t,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let body = match read_body(shared, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Published {
        address: String,
        session: String,
    }
    let p: Published = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body must be {{\"address\": \"...\", \"session\": \"<uuid>\"}}: {e}"),
            );
        }
    };
    if p.address.len() > 4096 || p.session.len() > 128 {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "address is at most 4096 bytes and session at most 128",
        );
    }
    let info = Info {
        address: p.address,
        session: p.session,
        term,
    };
    match shared.components.publish(component, info).await {
        Ok(version) => reply::json(
            StatusCode::OK,
            &json!({ "component": component, "version": version }),
        ),
        Err(e) => value_error(shared, e),
    }
}

async fn remove(shared: &Shared, component: &str, req: &Request<Incoming>) -> Reply {
    let term = match fence(req) {
        Ok(t) => t,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    match shared.components.remove(component, term).await {
        Ok(()) => reply::empty(StatusCode::NO_CONTENT),
        Err(e) => value_error(shared, e),
    }
}
