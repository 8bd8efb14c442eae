//! `POST /candidacy` (a stream of this sidecar's own leadership while the
//! candidacy is open), `PUT /candidacy/{id}` (renew), `DELETE
//! /candidacy/{id}` (close). See `crate::candidacy` for the rules.
//!
//! The stream is also how the client learns of every change it must act on
//! at once: a line for every grant, loss and renewal, each with the instant
//! until which it holds, and a heartbeat line every [`HEARTBEAT`] so that
//! a client that died is noticed when its line cannot be written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::leader::leadership_json;
use super::reply::{self, Reply};
use crate::candidacy::Closed;
use crate::config::Candidacy;
use crate::shared::Shared;

/// How often a line goes out when nothing changes: bounds how long a dead
/// client's socket goes unnoticed.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

pub fn open(shared: &Arc<Shared>) -> Reply {
    match shared.config.election.candidacy {
        Candidacy::Client => {}
        Candidacy::Always => {
            return reply::error(
                StatusCode::CONFLICT,
                "candidacy_not_client",
                "this sidecar campaigns on its own (election.candidacy: always); for a client that owns the candidacy, such as Flink's JobManager, set election.candidacy: client in the sidecar config",
            );
        }
        Candidacy::Never => {
            return reply::error(
                StatusCode::CONFLICT,
                "observer",
                "this sidecar is an observer (election.candidacy: never) and never campaigns; point the JobManager at its own candidate sidecar (election.candidacy: client)",
            );
        }
    }
    let id = shared.candidacies.open();
    let (reply, tx) = reply::stream("application/x-ndjson");
    tokio::spawn(feed(shared.clone(), id, tx));
    reply
}

fn line(v: &Value) -> Bytes {
    Bytes::from(v.to_string() + "\n")
}

/// Writes the candidacy's lines until it is closed or the client is gone.
async fn feed(shared: Arc<Shared>, id: String, tx: mpsc::Sender<Bytes>) {
    let mut local = shared.local();
    let mut discovered = shared.discovered();
    let mut closings = shared.candidacies.closings();
    let mut first = true;
    loop {
        let closed = closings
            .borrow_and_update()
            .clone()
            .filter(|(c, _)| *c == id)
            .map(|(_, why)| why);
        if closed.is_some() || !shared.candidacies.is_open(&id) {
            let why = closed.map_or("closed", |w| w.as_str());
            let _ = tokio::time::timeout(HEARTBEAT, tx.send(line(&json!({ "closed": why })))).await;
            return;
        }
        let l = local.borrow_and_update().clone();
        let mine = l.leading_for(&id).cloned();
        let leading = mine.is_some();
        let shown = mine.or_else(|| shared.view().term);
        let until = if leading { l.valid_until() } else { None };
        let mut v = leadership_json(shown.as_ref(), leading, until);
        if first && let Some(o) = v.as_object_mut() {
            o.insert("candidacy".into(), json!(id));
            o.insert(
                "ttl_ms".into(),
                json!(shared.candidacies.ttl().as_millis() as u64),
            );
        }
        first = false;
        match tokio::time::timeout(HEARTBEAT, tx.send(line(&v))).await {
            Ok(Ok(())) => {}
            // The body is gone: hyper dropped it with the client's connection.
            Ok(Err(_)) => {
                if shared.candidacies.close(&id, Closed::Disconnected) {
                    tracing::warn!(candidacy = %id, "the client's connection is gone: its process died or closed it");
                }
                return;
            }
            // The client does not read; the next line says the same, newer.
            Err(_) => {}
        }
        let lapse = until
            .filter(|u| *u > Instant::now())
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = local.changed() => {}
            _ = discovered.changed() => {}
            _ = closings.changed() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = tokio::time::sleep_until(lapse.unwrap_or_else(|| tokio::time::Instant::now() + HEARTBEAT)), if lapse.is_some() => {}
        }
    }
}

/// `PUT /candidacy/{id}`: the client is alive; the TTL starts again.
pub fn renew(shared: &Shared, id: &str) -> Reply {
    if shared.candidacies.renew(id) {
        reply::empty(StatusCode::NO_CONTENT)
    } else {
        no_candidacy(id)
    }
}

/// `DELETE /candidacy/{id}`: answers once this sidecar no longer calls
/// itself leader for it (the release in the backend follows at once).
pub async fn close(shared: &Shared, id: &str) -> Reply {
    if !shared.candidacies.close(id, Closed::ByClient) {
        return no_candidacy(id);
    }
    let mut local = shared.local();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        local.wait_for(|l| l.leading_for(id).is_none()),
    )
    .await;
    reply::empty(StatusCode::NO_CONTENT)
}

fn no_candidacy(id: &str) -> Reply {
    reply::error(
        StatusCode::NOT_FOUND,
        "no_candidacy",
        format!(
            "{id:?} is not the open candidacy (it was closed, replaced or expired); open a new one with POST /candidacy"
        ),
    )
}
