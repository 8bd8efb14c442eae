//! `GET /members` (every candidate the backend records, with its role) and
//! `POST /leader/handover?to=<id>` (hand the leadership to that member).

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::query_pairs;
use super::reply::{self, Reply};
use crate::config::parse_duration;
use crate::leadership::ResignError;
use crate::roster::{self, Roster, TargetRefusal};
use crate::shared::Shared;

fn unavailable(e: impl std::fmt::Display) -> Reply {
    reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
        format!("could not read the members from the backend: {e}"),
    )
}

/// `GET /members`: the same answer on every sidecar, read from the backend.
pub async fn list(shared: &Shared) -> Reply {
    let roster = match roster::read(&shared.values.state, shared.config.timing.lease).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let view = shared.view();
    let leader = view
        .term
        .as_ref()
        .map(|t| json!({ "id": t.holder.id, "address": t.holder.address, "term": t.token, "since_ms": t.since_ms }));
    let now = roster::now_ms();
    let body = match roster {
        Roster::Recorded(members) => json!({
            "recorded": true,
            "leader": leader,
            "members": members.iter().map(|m| json!({
                "id": m.id,
                "address": m.address,
                "role": if m.leads { "leader" } else { "standby" },
                "since_ms": m.since_ms,
                "seen_ms": m.seen_ms,
                "seen_ago_ms": m.seen_ms.map(|s| now.saturating_sub(s)),
                "live": m.live,
            })).collect::<Vec<Value>>(),
        }),
        // Only the leader is known: show it, and say why no more.
        Roster::Unrecorded(why) => json!({
            "recorded": false,
            "note": why,
            "leader": leader,
            "members": view.term.iter().map(|t| json!({
                "id": t.holder.id,
                "address": t.holder.address,
                "role": "leader",
                "since_ms": t.since_ms,
                "seen_ms": null,
                "seen_ago_ms": null,
                "live": true,
            })).collect::<Vec<Value>>(),
        }),
    };
    reply::json(StatusCode::OK, &body)
}

/// `POST /leader/handover?to=<id>[&holdoff=5s]`: the leader checks that `to`
/// is a live standby, steps down, and releases its term so that only `to`
/// may take the next one at once. Refused before anything changes when `to`
/// is not a live candidate or the plugin cannot hand over.
pub async fn handover(shared: &Shared, query: Option<&str>) -> Reply {
    let mut to = None;
    let mut holdoff = shared.config.timing.resign_holdoff;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "to" if !v.is_empty() => to = Some(v),
            "holdoff" => match parse_duration(&v) {
                Ok(d) if d <= Duration::from_secs(3600) => holdoff = d,
                Ok(_) => return bad_request("holdoff: at most 1h"),
                Err(e) => return bad_request(&format!("holdoff: {e}")),
            },
            other => {
                return bad_request(&format!(
                    "unknown or empty query parameter {other:?} (accepted: to, holdoff)"
                ));
            }
        }
    }
    let Some(to) = to else {
        return bad_request(
            "to: the member id of the standby to hand over to is required (GET /members lists them); POST /leader/resign hands over to any",
        );
    };
    if !shared.view().leading {
        return reply::error(
            StatusCode::CONFLICT,
            "not_leader",
            "this sidecar does not lead, so it has nothing to hand over",
        );
    }
    let roster = match roster::read(&shared.values.state, shared.config.timing.lease).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    if let Err(refusal) = roster::check_target(&roster, &shared.config.member_id, &to) {
        let (status, code) = match refusal {
            TargetRefusal::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "handover_unsupported"),
            _ => (StatusCode::CONFLICT, "not_a_live_candidate"),
        };
        return reply::error(status, code, refusal.to_string());
    }
    match shared.resign(holdoff, Some(to.clone())).await {
        Ok(term) => reply::json(
            StatusCode::OK,
            &json!({ "handed_over": true, "to": to, "term": term.token, "holdoff_ms": holdoff.as_millis() as u64 }),
        ),
        Err(e @ ResignError::NotLeader) => {
            reply::error(StatusCode::CONFLICT, "not_leader", e.to_string())
        }
        Err(e @ ResignError::HandoverRefused(_)) => {
            reply::error(StatusCode::CONFLICT, "handover_refused", e.to_string())
        }
        Err(e @ ResignError::NotReleased(_)) => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "resign_incomplete",
            e.to_string(),
        ),
    }
}

fn bad_request(message: &str) -> Reply {
    reply::error(StatusCode::BAD_REQUEST, "bad_request", message)
}
