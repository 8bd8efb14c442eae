//! Candidate records for the members view: `members/<id>` under the
//! cluster's directory, one small JSON file per candidate (its address, when
//! it joined, when it was last seen), rewritten at most every half lease
//! while it campaigns or leads. The leader forgets records not rewritten for
//! a long time. They are for people and for refusing a handover to a member
//! long gone, never for safety (their times are the writers' clocks), so
//! they are written without fsync.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_sidecar_sdk::{Candidate, Member, Result, unavailable};
use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::layout::Layout;

#[derive(Serialize, Deserialize)]
struct Record {
    address: String,
    session: String,
    since_ms: u64,
    seen_ms: u64,
}

pub struct Members {
    me: Member,
    session: String,
    lease: Duration,
    joined_ms: u64,
    written: Option<Instant>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn dir(layout: &Layout) -> PathBuf {
    layout.root.join("members")
}

impl Members {
    pub fn new(me: Member, session: String, lease: Duration) -> Self {
        Self {
            me,
            session,
            lease,
            joined_ms: now_ms(),
            written: None,
        }
    }

    /// Rewrites this candidate's record if the last write is half a lease
    /// old; whether it wrote.
    pub fn announce(&mut self, layout: &Layout) -> Result<bool> {
        if self.written.is_some_and(|at| at.elapsed() < self.lease / 2) {
            return Ok(false);
        }
        let record = Record {
            address: self.me.address.clone(),
            session: self.session.clone(),
            since_ms: self.joined_ms,
            seen_ms: now_ms(),
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| unavailable("encode member record", e))?;
        let dir = dir(layout);
        fsx::ensure_dir(&dir).map_err(|e| unavailable("create the members directory", e))?;
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        std::fs::write(&tmp, &bytes).map_err(|e| unavailable("write member record", e))?;
        std::fs::rename(&tmp, dir.join(&self.me.id)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            unavailable("publish member record", e)
        })?;
        self.written = Some(Instant::now());
        Ok(true)
    }

    fn records(layout: &Layout) -> Result<Vec<(String, Record)>> {
        let dir = dir(layout);
        let names = match fsx::names(&dir) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable("list the members directory", e)),
        };
        let mut out = Vec::new();
        for name in names {
            // Gone between the listing and the read, or not a record: skip.
            if let Ok(Some(bytes)) = fsx::read_opt(&dir.join(&name))
                && let Ok(record) = serde_json::from_slice::<Record>(&bytes)
            {
                out.push((name, record));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every recorded candidate; `leader`: the current leader's id.
    pub fn list(layout: &Layout, leader: Option<&str>) -> Result<Vec<Candidate>> {
        Ok(Self::records(layout)?
            .into_iter()
            .map(|(id, r)| Candidate {
                leads: leader == Some(id.as_str()),
                member: Member {
                    id,
                    address: r.address,
                },
                since_ms: r.since_ms,
                seen_ms: Some(r.seen_ms),
            })
            .collect())
    }

    /// Refuses a handover to anyone but a live standby.
    pub fn check_successor(&self, layout: &Layout, to: &str) -> Result<()> {
        let records = Self::records(layout)?;
        ha_sidecar_sdk::roster::check_successor(
            &self.me.id,
            to,
            records.iter().map(|(id, r)| (id.as_str(), r.seen_ms)),
            now_ms(),
            self.lease,
        )
    }

    /// The leader's housekeeping; best effort.
    pub fn forget_gone(&self, layout: &Layout) {
        let cutoff = ha_sidecar_sdk::roster::forget_before_ms(now_ms(), self.lease);
        for (id, r) in Self::records(layout).unwrap_or_default() {
            if r.seen_ms < cutoff && id != self.me.id {
                let _ = std::fs::remove_file(dir(layout).join(id));
            }
        }
    }
}
