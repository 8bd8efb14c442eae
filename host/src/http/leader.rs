//! Leader discovery: who leads, am I leader, wake me when that changes, resign.

use std::time::{Duration, Instant, UNIX_EPOCH};

use hyper::StatusCode;
use serde_json::{Value, json};

use super::reply::{self, Reply};
use super::{query_pairs, wait_param};
use crate::config::parse_duration;
use crate::discovery::{View, session_uuid};
use crate::leadership::ResignError;
use crate::runtime::Term;
use crate::shared::Shared;

pub(super) fn term_json(shared: &Shared, v: &View) -> Value {
    let until = if v.leading {
        shared.local().borrow().valid_until()
    } else {
        None
    };
    let mut j = leadership_json(v.term.as_ref(), v.leading, until);
    if let Some(o) = j.as_object_mut() {
        o.insert("member".into(), json!(shared.config.member_id));
        o.insert(
            "candidacy".into(),
            json!(shared.config.election.candidacy.as_str()),
        );
        o.insert(
            "candidacy_open".into(),
            json!(shared.candidacies.any_open()),
        );
    }
    j
}

/// Who leads, under which term and session, and whether (and until when)
/// this sidecar does: what `GET /leader` and the candidacy stream share.
pub(super) fn leadership_json(term: Option<&Term>, leading: bool, until: Option<Instant>) -> Value {
    let (valid_for_ms, valid_until_ns) = match until.filter(|_| leading) {
        Some(u) => {
            let left = u.saturating_duration_since(Instant::now());
            (
                Some(left.as_millis() as u64),
                Some(monotonic_now_ns().saturating_add(left.as_nanos() as u64)),
            )
        }
        None => (None, None),
    };
    json!({
        "leader": term.map(|t| json!({ "id": t.holder.id, "address": t.holder.address })),
        "term": term.map(|t| t.token),
        "session": term.map(|t| session_uuid(t).to_string()),
        "since": term.filter(|t| t.since_ms > 0).map(since),
        "leading": leading,
        "valid_for_ms": valid_for_ms,
        "valid_until_monotonic_ns": valid_until_ns,
    })
}

/// Now on the machine's `CLOCK_MONOTONIC`, the clock a client beside the
/// sidecar (Java's `System.nanoTime()` on Linux) compares deadlines with.
fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn since(t: &Term) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.since_ms)).to_string()
}

/// `GET /`: the classic Kubernetes leader-elector sidecar's answer.
pub fn elector_compat(shared: &Shared) -> Reply {
    let name = shared.view().term.map(|t| t.holder.id).unwrap_or_default();
    reply::json(StatusCode::OK, &json!({ "name": name }))
}

/// `GET /leader[?wait=30s&known=<token>|none&leading=true|false]`: with
/// `wait`, holds the request until the leader's term differs from `known`
/// (default: the current one), or this sidecar's own leadership differs from
/// `leading`, or the wait ends; either way it answers with the view then.
pub async fn get(shared: &Shared, query: Option<&str>) -> Reply {
    let mut wait = None;
    let mut known = None;
    let mut leading = None;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "wait" => match wait_param(shared, &v) {
                Ok(d) => wait = Some(d),
                Err(bad) => return *bad,
            },
            "known" => match v.as_str() {
                "" | "none" => known = Some(None),
                n => match n.parse::<u64>() {
                    Ok(t) => known = Some(Some(t)),
                    Err(_) => {
                        return reply::error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("known: {n:?} is not a term token (a whole number, or 'none')"),
                        );
                    }
                },
            },
            "leading" => match v.as_str() {
                "true" => leading = Some(true),
                "false" => leading = Some(false),
                other => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("leading: {other:?} must be true or false"),
                    );
                }
            },
            other => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown query parameter {other:?} (accepted: wait, known, leading)"),
                );
            }
        }
    }
    if let Some(wait) = wait {
        let known = known.unwrap_or_else(|| shared.view().term.map(|t| t.token));
        shared.wait_for_change(known, leading, wait).await;
    }
    reply::json(StatusCode::OK, &term_json(shared, &shared.view()))
}

/// `GET /leader/self`: 200 only while this sidecar leads (a readiness probe
/// that routes traffic to the leader alone).
pub fn is_self(shared: &Shared) -> Reply {
    let v = shared.view();
    if v.leading {
        return reply::json(StatusCode::OK, &term_json(shared, &v));
    }
    let who = match &v.term {
        Some(t) => format!("the leader is {} (term {})", t.holder.id, t.token),
        None => "no leader is known".into(),
    };
    reply::error_with(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_leader",
        format!("this sidecar does not lead; {who}"),
        term_json(shared, &v),
    )
}

/// `POST /leader/resign[?holdoff=5s]`: step down, release the term in the
/// backend, and stay out of the election for the holdoff (default:
/// timing.resign-holdoff) so that a standby takes over.
pub async fn resign(shared: &Shared, query: Option<&str>) -> Reply {
    let mut holdoff = shared.config.timing.resign_holdoff;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "holdoff" => match parse_duration(&v) {
                Ok(d) if d <= Duration::from_secs(3600) => holdoff = d,
                Ok(_) => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "holdoff: at most 1h",
                    );
                }
                Err(e) => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("holdoff: {e}"),
                    );
                }
            },
            other => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("unknown query parameter {other:?} (accepted: holdoff)"),
                );
            }
        }
    }
    if !shared.view().leading {
        return reply::error(
            StatusCode::CONFLICT,
            "not_leader",
            "this sidecar does not lead, so it has nothing to resign",
        );
    }
    match shared.resign(holdoff, None).await {
        Ok(term) => reply::json(
            StatusCode::OK,
            &json!({ "resigned": true, "term": term.token, "holdoff_ms": holdoff.as_millis() as u64 }),
        ),
        Err(e @ ResignError::NotLeader) => {
            reply::error(StatusCode::CONFLICT, "not_leader", e.to_string())
        }
        Err(e @ (ResignError::NotReleased(_) | ResignError::HandoverRefused(_))) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "resign_incomplete",
            e.to_string(),
        ),
    }
}
