//! `GET/PUT/DELETE /state/{key}` and `GET /state?prefix=`, plus what the job
//! routes share with them: reading bodies, preconditions, error replies.
//!
//! Versions travel as ETags. `If-Match: "<v>"` makes a write a
//! compare-and-set, `If-None-Match: *` makes a put create-only, and
//! `X-HA-Term: <token>` fences a write to that leadership term. A lost
//! compare-and-set is 412, a stale term 409 (`not_leader`), a backend that
//! cannot answer 503: three different things for the caller to do.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, IF_MATCH, IF_NONE_MATCH};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::reply::{self, Reply};
use super::{percent_decode, query_pairs};
use crate::runtime::{CallError, Failure};
use crate::shared::Shared;
use crate::state::{check_key, check_prefix};
use crate::storage::ValueError;

pub const TERM_HEADER: &str = "x-ha-term";

pub async fn list(shared: &Shared, query: Option<&str>) -> Reply {
    let mut prefix = String::new();
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "prefix" => prefix = v,
            other => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown query parameter {other:?} (accepted: prefix)"),
                );
            }
        }
    }
    if let Err(e) = check_prefix(&prefix) {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_key", e);
    }
    match shared.values.list(&prefix).await {
        Ok(keys) => reply::json(StatusCode::OK, &json!({ "keys": keys })),
        Err(e) => value_error(shared, e),
    }
}

pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    // The method first: a method /state/{key} never takes is 405 whatever the key.
    if ![Method::GET, Method::PUT, Method::DELETE].contains(req.method()) {
        return method_not_allowed();
    }
    let key = percent_decode(&req.uri().path()["/state/".len()..]);
    if let Err(e) = check_key(&key) {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_key", e);
    }
    if key.starts_with(crate::components::PREFIX) {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!(
                "keys under {:?} are reserved for component leader information: use /leader/components/{{component}}",
                crate::components::PREFIX
            ),
        );
    }
    let pre = match Preconditions::parse(req.headers()) {
        Ok(p) => p,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    match *req.method() {
        Method::GET => match shared.values.get(&key).await {
            Ok(Some((value, version))) => reply::etag(reply::bytes(StatusCode::OK, value), version),
            Ok(None) => reply::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no key {key:?}"),
            ),
            Err(e) => value_error(shared, e),
        },
        Method::PUT => {
            let body = match read_body(shared, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match shared
                .values
                .put(&key, &body, pre.expected, pre.fence)
                .await
            {
                Ok(version) => reply::etag(
                    reply::json(StatusCode::OK, &json!({ "key": key, "version": version })),
                    version,
                ),
                Err(e) => value_error(shared, e),
            }
        }
        Method::DELETE => {
            if pre.expected == Some(0) {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "If-None-Match: * makes no sense on DELETE",
                );
            }
            match shared.values.delete(&key, pre.expected, pre.fence).await {
                Ok(()) => reply::empty(StatusCode::NO_CONTENT),
                Err(e) => value_error(shared, e),
            }
        }
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> Reply {
    reply::method_not_allowed(
        &["GET", "PUT", "DELETE"],
        "use GET, PUT or DELETE on /state/{key}",
    )
}

/// The request body, at most `http.max-body` bytes.
pub async fn read_body(shared: &Shared, req: Request<Incoming>) -> Result<Bytes, Reply> {
    let max = shared.config.max_body;
    let too_large = || {
        reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than http.max-body ({max} bytes)"),
        )
    };
    // A declared length over the limit is refused before reading a byte,
    // rather than after waiting for the first max-body bytes to arrive.
    if req.body().size_hint().lower() > max {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), max as usize).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("cannot read the request body: {e}"),
        )),
    }
}

pub struct Preconditions {
    /// As in the contract: some(0) = must be absent, some(v) = must be at v.
    pub expected: Option<u64>,
    pub fence: Option<u64>,
}

impl Preconditions {
    pub fn parse(headers: &HeaderMap) -> Result<Self, String> {
        let text = |name| {
            headers.get(name).map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| format!("{name} is not ASCII"))
            })
        };
        let if_match = text(IF_MATCH.as_str()).transpose()?;
        let if_none_match = text(IF_NONE_MATCH.as_str()).transpose()?;
        let expected = match (if_match, if_none_match) {
            (Some(_), Some(_)) => return Err("send If-Match or If-None-Match, not both".into()),
            (Some(etag), None) => {
                let v = etag.trim_start_matches("W/").trim_matches('"');
                match v.parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "If-Match: {etag:?} is not a version this API issued (an ETag such as \"42\")"
                        ));
                    }
                }
            }
            (None, Some("*")) => Some(0),
            (None, Some(other)) => {
                return Err(format!("If-None-Match: only * is supported, got {other:?}"));
            }
            (None, None) => None,
        };
        let fence = match text(TERM_HEADER).transpose()? {
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                format!("X-HA-Term: {raw:?} is not a term token (a whole number from GET /leader)")
            })?),
            None => None,
        };
        Ok(Self { expected, fence })
    }
}

pub fn value_error(shared: &Shared, e: ValueError) -> Reply {
    match e {
        ValueError::Call(e) => call_error(shared, e),
        ValueError::TooLarge { .. } => reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        ValueError::Storage(m) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("the storage dir cannot be used now: {m}; nothing was changed"),
        ),
        ValueError::Corrupt { .. } => reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt_value",
            format!("{e}; the value is not returned"),
        ),
    }
}

fn call_error(shared: &Shared, e: CallError) -> Reply {
    match e {
        CallError::Failure(Failure::Conflict(current)) => {
            let version = current.as_ref().map(|v| v.version);
            let message = match version {
                Some(v) => format!("the key is at version {v}; read it again and retry"),
                None => "the key does not exist".into(),
            };
            let r = reply::error_with(
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                message,
                json!({ "current_version": version }),
            );
            match version {
                Some(v) => reply::etag(r, v),
                None => r,
            }
        }
        CallError::Failure(Failure::NotLeader) => {
            let leader = match shared.view().term {
                Some(t) => format!(
                    "the current leader is {} with term {}",
                    t.holder.id, t.token
                ),
                None => "no leader is known right now".into(),
            };
            reply::error(
                StatusCode::CONFLICT,
                "not_leader",
                format!(
                    "fenced: the write's term is not the current one, or this sidecar cannot write for it; {leader}. Nothing was changed"
                ),
            )
        }
        CallError::Failure(Failure::Invalid(m)) => {
            reply::error(StatusCode::BAD_REQUEST, "invalid", m)
        }
        CallError::Failure(Failure::Unavailable(m)) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the backend cannot answer now: {m}; retry"),
        ),
        other => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_failed",
            format!("{other}; retry"),
        ),
    }
}
