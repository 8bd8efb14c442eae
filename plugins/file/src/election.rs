//! Leadership by exclusive creation of the next term's record.
//!
//! A candidate may create `term-<n+1>` once `term-<n>` is released, or once it
//! has watched `term-<n>` stay byte-for-byte unchanged for a full lease by its
//! own monotonic clock. The holder rewrites its record (a heartbeat counter)
//! on every `keep`, so a live holder's record keeps changing. Timestamps in the
//! record are never used to judge expiry.
//!
//! Two checks close the races between a slow holder and a quick candidate:
//! `keep` re-reads the latest term after its rewrite, and a candidate that won
//! `term-<n+1>` re-reads `term-<n>` and backs off (releasing its own record) if
//! the holder wrote in the meantime. Either the holder's `keep` fails or the
//! candidate backs off; never both succeed.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_sidecar_sdk::{Failure, Member, Result, Term, log, unavailable};
use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::layout::{Layout, parse_term_record_name};

/// How many old term records the leader keeps (for people reading the directory).
const KEEP_RECORDS: u64 = 16;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TermRecord {
    pub token: u64,
    pub holder_id: String,
    pub holder_address: String,
    pub session: String,
    pub since_ms: u64,
    /// Bumped by every `keep`, so that a live holder's record always changes.
    pub beat: u64,
    pub released: bool,
}

impl TermRecord {
    pub fn to_term(&self) -> Term {
        Term {
            holder: Member {
                id: self.holder_id.clone(),
                address: self.holder_address.clone(),
            },
            token: self.token,
            handle: crate::layout::term_record_name(self.token),
            since_ms: self.since_ms,
        }
    }
}

/// The latest term record as read from disk: raw bytes (what expiry is judged
/// on) and, if it parses, the record.
pub struct Latest {
    pub token: u64,
    pub bytes: Vec<u8>,
    pub record: Option<TermRecord>,
}

/// When this instance first saw the latest record with its current content.
struct Observed {
    token: u64,
    bytes: Vec<u8>,
    since: Instant,
}

pub struct Election {
    pub me: Member,
    pub session: String,
    pub lease: Duration,
    pub poll: Duration,
    observed: Option<Observed>,
}

pub enum Vacancy {
    /// Nobody has ever led.
    Never,
    /// `token` is over (released, expired, or an earlier run of this process).
    After(Latest),
    Held,
}

impl Election {
    pub fn new(me: Member, session: String, lease: Duration, poll: Duration) -> Self {
        Self {
            me,
            session,
            lease,
            poll,
            observed: None,
        }
    }

    pub fn latest(&self, layout: &Layout) -> Result<Option<Latest>> {
        let dir = layout.election();
        let names = fsx::names(&dir).map_err(|e| unavailable("list election directory", e))?;
        let Some(token) = names.iter().filter_map(|n| parse_term_record_name(n)).max() else {
            return Ok(None);
        };
        let path = layout.term_record(token);
        match fsx::read_opt(&path).map_err(|e| unavailable("read term record", e))? {
            Some(bytes) => {
                let record = serde_json::from_slice(&bytes).ok();
                if record.is_none() {
                    log::warn(&format!(
                        "{} does not parse; treating it as held by someone unknown",
                        path.display()
                    ));
                }
                Ok(Some(Latest {
                    token,
                    bytes,
                    record,
                }))
            }
            // Pruned between list and read: a newer term exists, look again.
            None => self.latest(layout),
        }
    }

    /// Records when the latest record's content was first seen and says
    /// whether it has since stayed unchanged for a full lease.
    fn expired(&mut self, latest: &Latest) -> bool {
        let now = Instant::now();
        match &self.observed {
            Some(o) if o.token == latest.token && o.bytes == latest.bytes => {
                now.duration_since(o.since) >= self.lease
            }
            _ => {
                self.observed = Some(Observed {
                    token: latest.token,
                    bytes: latest.bytes.clone(),
                    since: now,
                });
                false
            }
        }
    }

    pub fn vacancy(&mut self, layout: &Layout) -> Result<Vacancy> {
        let Some(latest) = self.latest(layout)? else {
            return Ok(Vacancy::Never);
        };
        let over = match &latest.record {
            Some(r) if r.released => true,
            // An earlier instance of this process held it; nobody else can.
            Some(r) if r.session == self.session => true,
            _ => self.expired(&latest),
        };
        Ok(if over {
            Vacancy::After(latest)
        } else {
            Vacancy::Held
        })
    }

    /// The current leader for discovery: none when released or expired.
    pub fn current(&mut self, layout: &Layout) -> Result<Option<Term>> {
        let Some(latest) = self.latest(layout)? else {
            return Ok(None);
        };
        if self.expired(&latest) {
            return Ok(None);
        }
        Ok(latest.record.filter(|r| !r.released).map(|r| r.to_term()))
    }

    /// Tries to create the record of term `token`. `previous` is the record the
    /// decision to take over was based on; if it changed since, back off.
    pub fn try_acquire(
        &mut self,
        layout: &Layout,
        token: u64,
        previous: Option<&Latest>,
    ) -> Result<Option<TermRecord>> {
        let record = TermRecord {
            token,
            holder_id: self.me.id.clone(),
            holder_address: self.me.address.clone(),
            session: self.session.clone(),
            since_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            beat: 0,
            released: false,
        };
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        write_record(&tmp, &record)?;
        match fsx::publish_new(&tmp, &layout.term_record(token)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(unavailable("create term record", e)),
        }
        if let Some(prev) = previous {
            let now = fsx::read_opt(&layout.term_record(prev.token))
                .map_err(|e| unavailable("re-read previous term", e))?;
            if now.as_deref() != Some(prev.bytes.as_slice()) {
                log::info(&format!(
                    "term {} changed while term {token} was being taken; backing off",
                    prev.token
                ));
                self.release(layout, &record)?;
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// Rewrites the record with a new heartbeat, then checks no newer term
    /// appeared meanwhile.
    pub fn keep(&mut self, layout: &Layout, token: u64) -> Result<()> {
        let mut record = self.own_record(layout, token)?;
        record.beat += 1;
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        write_record(&tmp, &record)?;
        fsx::publish_replace(&tmp, &layout.term_record(token))
            .map_err(|e| unavailable("renew term record", e))?;
        match self.latest(layout)? {
            Some(l) if l.token == token => Ok(()),
            _ => Err(Failure::NotLeader),
        }
    }

    pub fn resign(&mut self, layout: &Layout, token: u64) -> Result<()> {
        match self.own_record(layout, token) {
            Ok(record) => self.release(layout, &record),
            // Already gone: resigning is idempotent.
            Err(Failure::NotLeader) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn release(&self, layout: &Layout, record: &TermRecord) -> Result<()> {
        let released = TermRecord {
            released: true,
            ..record.clone()
        };
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        write_record(&tmp, &released)?;
        fsx::publish_replace(&tmp, &layout.term_record(record.token))
            .map_err(|e| unavailable("release term record", e))
    }

    /// The record of `token`, if it is the latest, held by this process and not released.
    pub fn own_record(&self, layout: &Layout, token: u64) -> Result<TermRecord> {
        match self.latest(layout)? {
            Some(Latest {
                token: t,
                record: Some(r),
                ..
            }) if t == token && r.session == self.session && !r.released => Ok(r),
            _ => Err(Failure::NotLeader),
        }
    }

    /// The term this process currently holds, if any.
    pub fn held_by_me(&self, layout: &Layout) -> Result<Option<u64>> {
        Ok(match self.latest(layout)? {
            Some(Latest {
                token,
                record: Some(r),
                ..
            }) if r.session == self.session && !r.released => Some(token),
            _ => None,
        })
    }

    /// Deletes term records far behind `token`; best effort.
    pub fn prune(&self, layout: &Layout, token: u64) {
        let Ok(names) = fsx::names(&layout.election()) else {
            return;
        };
        for t in names.iter().filter_map(|n| parse_term_record_name(n)) {
            if t + KEEP_RECORDS < token {
                let _ = std::fs::remove_file(layout.term_record(t));
            }
        }
        fsx::sweep_tmp(
            &layout.election_tmp(),
            &self.session,
            self.lease.max(Duration::from_secs(60)),
        );
    }
}

fn write_record(tmp: &Path, record: &TermRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(|e| unavailable("encode term record", e))?;
    fsx::write_durable(tmp, &bytes).map_err(|e| unavailable("write term record", e))
}
