//! Candidate records for the members view, in the annotation
//! `ha-sidecar/members` of the leader ConfigMap: a JSON map from member id
//! to its address, when it joined and when it was last seen. Each candidate
//! rewrites its own entry at most every half lease while it campaigns or
//! leads (a compare-and-set on the object, so no entry is lost to a
//! concurrent writer); the leader also drops entries not rewritten for a
//! long time. One annotation on the object Flink's RBAC already grants, so
//! a cluster needs no new permission. The times are the writers' clocks:
//! for people, and for refusing a handover to a member long gone, never for
//! safety.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ha_sidecar_sdk::{Candidate, Member, Result};
use serde::{Deserialize, Serialize};

use crate::object::{ConfigMap, Object, Written};
use crate::record::now_ms;

pub const MEMBERS_ANNOTATION: &str = "ha-sidecar/members";
const CAS_ATTEMPTS: usize = 8;

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub address: String,
    pub since_ms: u64,
    pub seen_ms: u64,
}

pub fn read(cm: &ConfigMap) -> BTreeMap<String, Entry> {
    cm.annotation(MEMBERS_ANNOTATION)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

pub struct Members {
    me: Member,
    lease: Duration,
    joined_ms: u64,
    written: Option<Instant>,
}

impl Members {
    pub fn new(me: Member, lease: Duration) -> Self {
        Self {
            me,
            lease,
            joined_ms: now_ms(),
            written: None,
        }
    }

    /// Rewrites our entry if the last write is half a lease old; the
    /// leader (`prune`) also drops entries long gone. Nothing to do before
    /// the object exists (the first candidate creates it by leading).
    pub fn announce(&mut self, object: &Object, prune: bool) -> Result<()> {
        if self.written.is_some_and(|at| at.elapsed() < self.lease / 2) {
            return Ok(());
        }
        let cutoff = ha_sidecar_sdk::roster::forget_before_ms(now_ms(), self.lease);
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut cm) = object.get()? else {
                return Ok(());
            };
            let mut entries = read(&cm);
            if prune {
                entries.retain(|id, e| e.seen_ms >= cutoff || *id == self.me.id);
            }
            entries.insert(
                self.me.id.clone(),
                Entry {
                    address: self.me.address.clone(),
                    since_ms: self.joined_ms,
                    seen_ms: now_ms(),
                },
            );
            cm.set_annotation(
                MEMBERS_ANNOTATION,
                Some(serde_json::to_string(&entries).expect("serializes")),
            );
            match object.replace(&cm)? {
                Written::Done(_) => {
                    self.written = Some(Instant::now());
                    return Ok(());
                }
                Written::Raced => continue,
            }
        }
        Ok(()) // busy object: try again at the next call
    }

    /// Every recorded candidate; `leader`: the current leader's id.
    pub fn list(cm: Option<&ConfigMap>, leader: Option<&str>) -> Vec<Candidate> {
        cm.map(read)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, e)| Candidate {
                leads: leader == Some(id.as_str()),
                member: Member {
                    id,
                    address: e.address,
                },
                since_ms: e.since_ms,
                seen_ms: Some(e.seen_ms),
            })
            .collect()
    }

    /// Refuses a handover to anyone but a live standby.
    pub fn check_successor(&self, cm: &ConfigMap, to: &str) -> Result<()> {
        let entries = read(cm);
        ha_sidecar_sdk::roster::check_successor(
            &self.me.id,
            to,
            entries.iter().map(|(id, e)| (id.as_str(), e.seen_ms)),
            now_ms(),
            self.lease,
        )
    }
}
