//! Leader election on a record with no server-side expiry, as client-go and
//! kubert do it.
//!
//! - **Observe**: every reader remembers the leader record as it last saw it,
//!   and *when, by its own monotonic clock*, it first saw it that way. The
//!   times written inside the record are never trusted (another machine's
//!   clock, which may be off by any amount).
//! - **Acquire**: a candidate takes the record when it is released (empty
//!   holder), or when it has stayed unchanged for a full lease as this
//!   candidate watched it (the longer of our lease and the one the record
//!   states), with one compare-and-set on the resourceVersion it read. Of
//!   two candidates, one gets `Conflict` and looks again. Every acquisition
//!   raises `leaderTransitions`, the fencing token, by one.
//! - **Renew**: the holder rewrites the record (new renewTime and renewal
//!   count) with a compare-and-set; if the record no longer names it, it is
//!   `not-leader`. The host renews every retry period and steps down by
//!   itself at the renew deadline, which it keeps shorter than the lease: a
//!   leader that cannot renew stops before any candidate can take over.
//! - **Release**: on resign the holder empties `holderIdentity`, so a
//!   watching standby takes over at once instead of after a lease.
//! - **Hand over**: a release that names a `successor` in our annotation.
//!   The successor takes it at once; every other candidate judges it like a
//!   held record (free once unchanged for a lease), so the designation only
//!   narrows who may claim a free term. Discovery reports no leader for it.
//!
//! Round trips, since each costs an etcd write or read on a real API server
//! (and a handover waits for them in turn): the holder keeps the object as
//! its last write left it and renews or releases with one compare-and-set
//! on that version, reading first only when that fails (something else,
//! such as a state write, changed the object meanwhile). A waiting
//! candidate judges the object its watch event carries instead of reading
//! it again, so a release is answered with a single write.

use std::time::{Duration, Instant};

use ha_sidecar_sdk::{Failure, Member, Result, Term, log};

use crate::object::{ConfigMap, Object, Wake, Written};
use crate::record::{
    Holder, LeaderRecord, Leadership, lease_seconds, lock_identity, micro_time_now, now_ms,
};

/// How often a reader looks again when there is no object to watch yet.
const POLL_ABSENT: Duration = Duration::from_millis(100);
/// Attempts of one renewal or release against concurrent writes (state
/// writes change the same object's resourceVersion).
const CAS_ATTEMPTS: usize = 8;
/// Up to this much data, a renewal or release is tried on the object as
/// our last write left it, without reading it first.
const CACHED_BASE_MAX: usize = 64 << 10;

/// The record as this reader first saw it in its current form.
struct Observed {
    raw: String,
    since: Instant,
}

/// What a reader makes of the record right now.
pub enum Judgement {
    /// Nobody holds it: released, or never written.
    Vacant,
    /// Held by an earlier instance of this very process (its plugin instance
    /// was replaced): nobody else can hold our session, so it is ours to retake.
    OursFromBefore,
    /// Unchanged for a full lease: the holder is gone.
    Expired,
    /// Held, and alive as far as we can tell, for at least this much longer.
    Held(Duration),
}

pub struct Lease {
    pub me: Member,
    /// The `holderIdentity` we write: the sidecar's per-run session, as
    /// Flink writes its lock identity (a dashed UUID).
    session: String,
    lease: Duration,
    components: Vec<String>,
    observed: Option<Observed>,
    /// The object as our last successful write of the leader record left
    /// it: the base of the next renewal or release.
    written: Option<ConfigMap>,
}

impl Lease {
    pub fn new(me: Member, session: String, lease: Duration, components: Vec<String>) -> Self {
        Self {
            me,
            session: lock_identity(&session),
            lease,
            components,
            observed: None,
            written: None,
        }
    }

    /// `campaigning`: a record of our own session is ours to retake; a
    /// mere reader (discovery) judges it like anyone else's.
    pub fn judge(&mut self, leadership: Option<&Leadership>, campaigning: bool) -> Judgement {
        let Some(l) = leadership else {
            return Judgement::Vacant;
        };
        let blocked = campaigning
            && l.holder
                .successor
                .as_ref()
                .is_some_and(|s| *s != self.me.id);
        if l.is_released() && !blocked {
            return Judgement::Vacant;
        }
        if campaigning && l.record.holder_identity == self.session {
            return Judgement::OursFromBefore;
        }
        let lease = self.lease.max(l.record.lease());
        let now = Instant::now();
        match &self.observed {
            Some(o) if o.raw == l.raw => match lease.checked_sub(now.duration_since(o.since)) {
                Some(left) if !left.is_zero() => Judgement::Held(left),
                _ => Judgement::Expired,
            },
            _ => {
                self.observed = Some(Observed {
                    raw: l.raw.clone(),
                    since: now,
                });
                Judgement::Held(lease)
            }
        }
    }

    /// Tries to become leader, waiting at most `wait` for the holder to go.
    pub fn campaign(&mut self, object: &Object, wait: Duration) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        // The object as a watch event showed it (none: deleted), not yet judged.
        let mut shown: Option<Option<ConfigMap>> = None;
        loop {
            let current = match shown.take() {
                Some(cm) => cm,
                None => object.get()?,
            };
            let Some(cm) = current else {
                // No ConfigMap yet: the first candidate creates it, holding the lease.
                let mut cm = object.blank();
                let term = self.claim(&mut cm, 1);
                match object.create(&cm)? {
                    Written::Done(stored) => {
                        self.written = stored;
                        return Ok(Some(term));
                    }
                    Written::Raced => continue,
                }
            };
            let leadership = Leadership::read(&cm);
            match self.judge(leadership.as_ref(), true) {
                Judgement::Vacant | Judgement::OursFromBefore | Judgement::Expired => {
                    let previous = leadership.as_ref().map(|l| &l.record);
                    let token = previous.map_or(0, |r| r.leader_transitions) + 1;
                    if let Some(prev) = previous.filter(|r| !r.holder_identity.is_empty()) {
                        log::info(&format!(
                            "taking over from {} (term {}), unchanged for a lease",
                            prev.holder_identity, prev.leader_transitions
                        ));
                    }
                    let mut next = cm.clone();
                    let term = self.claim(&mut next, token);
                    match object.replace(&next)? {
                        Written::Done(stored) => {
                            self.written = stored;
                            return Ok(Some(term));
                        }
                        Written::Raced => continue,
                    }
                }
                Judgement::Held(left) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    // Wake for any change (a release, a renewal) or when the lease would end.
                    let wait = left.min(deadline - now);
                    if let Wake::Changed(next) = object.wait_change(&cm.resource_version, wait)? {
                        shown = Some(next);
                    }
                }
            }
        }
    }

    /// Writes our record into `cm` for term `token`.
    fn claim(&self, cm: &mut ConfigMap, token: u64) -> Term {
        let now = micro_time_now();
        let since_ms = now_ms();
        Leadership {
            record: LeaderRecord {
                holder_identity: self.session.clone(),
                lease_duration: lease_seconds(self.lease),
                acquire_time: now.clone(),
                renew_time: now,
                leader_transitions: token,
            },
            holder: Holder {
                id: self.me.id.clone(),
                address: self.me.address.clone(),
                since_ms,
                renewals: 0,
                successor: None,
            },
            raw: String::new(),
        }
        .write(cm, &self.components);
        Term {
            holder: self.me.clone(),
            token,
            handle: self.session.clone(),
            since_ms,
        }
    }

    /// Our record for `term`, if the object still holds it.
    fn ours(&self, cm: &ConfigMap, term: &Term) -> Option<Leadership> {
        Leadership::read(cm).filter(|l| {
            l.record.holder_identity == self.session && l.record.leader_transitions == term.token
        })
    }

    /// The object to base a change of `term`'s record on: as our last write
    /// left it, or else as read now. A large object (much state) is read
    /// first: sending it whole to learn that a state write changed it
    /// meanwhile would cost more than the read saves.
    fn base(&mut self, object: &Object, term: &Term) -> Result<Option<ConfigMap>> {
        match self.written.take() {
            Some(cm) if cm.data_size() <= CACHED_BASE_MAX && self.ours(&cm, term).is_some() => {
                Ok(Some(cm))
            }
            _ => object.get(),
        }
    }

    /// Renews `term`: a new renewTime and renewal count, at the version read.
    pub fn keep(&mut self, object: &Object, term: &Term) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let cm = self.base(object, term)?.ok_or(Failure::NotLeader)?;
            let mut l = self.ours(&cm, term).ok_or(Failure::NotLeader)?;
            l.record.renew_time = micro_time_now();
            l.record.lease_duration = lease_seconds(self.lease);
            l.holder.renewals += 1;
            let mut next = cm.clone();
            l.write(&mut next, &self.components);
            match object.replace(&next)? {
                Written::Done(stored) => {
                    self.written = stored;
                    return Ok(());
                }
                Written::Raced => continue,
            }
        }
        Err(Failure::Unavailable(format!(
            "configmap {} kept changing during the renewal",
            object.name
        )))
    }

    /// Releases `term`: the holder becomes empty and the leader keys go.
    /// Idempotent: a term that is already gone is released.
    pub fn resign(&mut self, object: &Object, term: &Term) -> Result<()> {
        self.release(object, term, None, |_| Ok(()))
    }

    /// Releases `term` so that only `to` may take the next one at once;
    /// `check` refuses a successor that is not a live candidate (on the
    /// object as read, so nothing changes then). `not-leader` if the term
    /// is gone.
    pub fn hand_over(
        &mut self,
        object: &Object,
        term: &Term,
        to: &str,
        check: impl Fn(&ConfigMap) -> Result<()>,
    ) -> Result<()> {
        // The cached base may predate the successor's last member record.
        self.written = None;
        let cm = object.get()?.ok_or(Failure::NotLeader)?;
        self.ours(&cm, term).ok_or(Failure::NotLeader)?;
        self.release(object, term, Some(to.to_string()), check)
    }

    fn release(
        &mut self,
        object: &Object,
        term: &Term,
        successor: Option<String>,
        check: impl Fn(&ConfigMap) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(cm) = self.base(object, term)? else {
                return successor.map_or(Ok(()), |_| Err(Failure::NotLeader));
            };
            let Some(mut l) = self.ours(&cm, term) else {
                return successor.map_or(Ok(()), |_| Err(Failure::NotLeader));
            };
            check(&cm)?;
            l.holder.successor = successor.clone();
            l.record.holder_identity.clear();
            l.record.renew_time = micro_time_now();
            let mut next = cm.clone();
            l.write(&mut next, &self.components);
            match object.replace(&next)? {
                Written::Done(_) => return Ok(()),
                Written::Raced => continue,
            }
        }
        Err(Failure::Unavailable(format!(
            "configmap {} kept changing during the release",
            object.name
        )))
    }

    /// The current leader as this reader judges it: none if released or
    /// expired. Returns at once if its token differs from `known`, else waits
    /// at most `wait` for that to change.
    pub fn leader(
        &mut self,
        object: &Object,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        let mut shown: Option<Option<ConfigMap>> = None;
        loop {
            let cm = match shown.take() {
                Some(cm) => cm,
                None => object.get()?,
            };
            let leadership = cm.as_ref().and_then(Leadership::read);
            let (current, left) = match self.judge(leadership.as_ref(), false) {
                Judgement::Held(left) => (leadership.as_ref().map(term_of), Some(left)),
                Judgement::Vacant | Judgement::Expired | Judgement::OursFromBefore => (None, None),
            };
            let now = Instant::now();
            if current.as_ref().map(|t| t.token) != known || now >= deadline {
                return Ok(current);
            }
            let until_change = deadline - now;
            match &cm {
                Some(cm) => {
                    let wait = left.map_or(until_change, |l| l.min(until_change));
                    if let Wake::Changed(next) = object.wait_change(&cm.resource_version, wait)? {
                        shown = Some(next);
                    }
                }
                None => std::thread::sleep(POLL_ABSENT.min(until_change)),
            }
        }
    }
}

fn term_of(l: &Leadership) -> Term {
    Term {
        holder: Member {
            id: l.holder.id.clone(),
            address: l.holder.address.clone(),
        },
        token: l.record.leader_transitions,
        handle: l.record.holder_identity.clone(),
        since_ms: l.holder.since_ms,
    }
}
