//! Election, discovery and fenced state over any compare-and-set store.
//!
//! A store without sessions or ephemeral nodes (etcd's KV, a SQL table,
//! Consul, DynamoDB) implements [`CasStore`]: get, a guarded compare-and-set
//! write, list and, if it can, a bounded wait for a change. The [`Driver`]
//! turns that into the whole backend contract; [`export_cas_backend!`] exports it.
//!
//! # The recipe
//!
//! Two records under `election/`:
//! - `leader` holds the holder (or none after a resignation). It changes only
//!   when leadership changes hands, so **its version is the term's token**:
//!   versions grow strictly across every change of the store, hence every new
//!   leader's token is greater than any before it, even if the record was lost.
//! - `renewal` is rewritten by the leader on every `keep`, guarded by
//!   `leader` still being at the term's version.
//!
//! A standby takes over only after it has seen the pair (leader version,
//! renewal version) unchanged for a full lease by its own monotonic clock,
//! never by a timestamp another machine wrote.
//!
//! # Why two sidecars never claim at once
//!
//! The host reports leadership only until the start of its last successful
//! `keep` (or of the `campaign` that won) plus the renew deadline, which the
//! config keeps shorter than the lease. Every successful call of the holder
//! wrote `renewal` (or `leader`) after that start, and every write gives the
//! key a new version.
//!
//! - **Silence is measured between reads, never up to the judgement.** The
//!   pair counts as unchanged for a lease from the end of the first read that
//!   saw it to the *start* of a later read that sees it still. Equal versions
//!   prove no write in between, so the holder's last successful call started
//!   before the first read ended, and its host stopped claiming before that end
//!   plus the lease. Measured to the instant of judgement instead, a standby
//!   paused between its reads and its judgement would count its own pause as
//!   the leader's silence (issue 12 found that in the file backend).
//! - **The takeover is guarded by both versions it was judged on**: `leader`
//!   by the expected version, `renewal` by a [`Guard`] (version 0: still
//!   absent), checked by the store atomically with the write. A renewal that
//!   landed after the reads (the holder resumed in time, or an earlier
//!   instance of its process took its own term back with a `keep`) makes the
//!   takeover fail; a renewal after the takeover fails on its own guard. So
//!   the pair stayed unchanged from the first read to the takeover itself,
//!   however long the standby was paused anywhere in between, and the holder's
//!   host had stopped claiming by then.
//! - A resigned record (no holder) is free at once: its holder stepped down
//!   before it resigned, and its later renewals fail on the changed `leader`.
//!
//! Every fenced write carries the guard "`leader` is still at version =
//! token", checked by the store atomically with the write: a deposed leader's
//! write fails with `not-leader` whatever the timing.
//!
//! # Members and a handover to a chosen one
//!
//! Each candidate keeps a record under `election/members/<id>` (its address,
//! when it joined, when it was last seen), rewritten at most every half
//! lease while it campaigns or leads; the leader removes records not seen
//! for [`FORGET_AFTER_LEASES`] leases. They are for people and for refusing a
//! handover to a member long gone, never for safety: their times are the
//! writers' clocks.
//!
//! A handover writes the resigned record with a `successor`. The successor
//! takes it at once, as any resigned record; every other candidate judges it
//! like a live holder's record: free once it stayed unchanged for a full
//! lease by the candidate's own clock. So the designation only narrows who
//! may claim a free term, and a successor that died meanwhile costs one lease.

use std::time::{Duration, Instant};

use crate::{Failure, Member, Result, Setup, Term, Versioned, invalid, keys};

/// Where the leader record lives, relative to the store's own namespace.
pub const LEADER_KEY: &str = "election/leader";
/// Rewritten by the leader on every renewal.
pub const RENEWAL_KEY: &str = "election/renewal";
/// State keys live under this prefix, apart from the election records.
pub const STATE_PREFIX: &str = "state/";
/// One record per candidate, named by its member id.
pub const MEMBERS_PREFIX: &str = "election/members/";

/// A second key that must be at a given version for a write to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard<'a> {
    pub key: &'a str,
    pub version: u64,
}

/// What a store offers so that the SDK can run a backend on it.
///
/// Versions: strictly greater after every change of any key, never 0 (a
/// store-wide revision, as etcd's, or a sequence), so that a deleted and
/// re-created key never repeats a version.
pub trait CasStore: Sized + 'static {
    /// Builds the store from the plugin's settings (refuse unknown ones).
    fn open(setup: &Setup) -> Result<Self>;

    fn get(&mut self, key: &str) -> Result<Option<Versioned>>;

    /// Writes `value` to `key`, or deletes it when `value` is none, only if
    /// - `expected` holds: none = any, some(0) = absent, some(v) = at version v
    ///   (else [`Failure::Conflict`] with the current value), and
    /// - `guard`'s key is at its version, or absent for version 0 (else
    ///   [`Failure::NotLeader`]; checked first, and atomically with the write).
    ///
    /// Returns the new version (for a delete, any version at or after it).
    /// Deleting an absent key without `expected` succeeds.
    fn write(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        expected: Option<u64>,
        guard: Option<Guard<'_>>,
    ) -> Result<u64>;

    /// Keys starting with `prefix`, sorted.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>>;

    /// Returns when `key` may have changed from version `seen` (none: absent),
    /// or after at most `wait`. Returning early is always allowed; the default
    /// polls by sleeping a little, which is correct for any store.
    fn wait_change(&mut self, key: &str, seen: Option<u64>, wait: Duration) -> Result<()> {
        let _ = (key, seen);
        std::thread::sleep(wait.min(Duration::from_millis(100)));
        Ok(())
    }
}

/// The leader record as stored (JSON).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct LeaderRecord {
    /// None: resigned, anyone may take over at once (but see `successor`).
    holder: Option<Holder>,
    since_ms: u64,
    /// Set by a handover: only this member may take the resigned term at
    /// once; any other waits until the record stayed unchanged for a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    successor: Option<String>,
}

/// A candidate's record under [`MEMBERS_PREFIX`] (JSON).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct MemberRecord {
    address: String,
    session: String,
    since_ms: u64,
    seen_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Holder {
    id: String,
    address: String,
    /// The holding process's run (see the contract's `setup.session`).
    session: String,
}

/// The backend contract over a [`CasStore`].
pub struct Driver<S> {
    store: S,
    me: Holder,
    lease: Duration,
    /// The (leader, renewal) versions last seen and since when, by our clock.
    observed: Option<((u64, Option<u64>), Instant)>,
    /// When this instance joined (Unix ms) and last wrote its member record.
    joined_ms: u64,
    announced: Option<Instant>,
}

impl<S: CasStore> Driver<S> {
    pub fn configure(setup: Setup) -> Result<Self> {
        let store = S::open(&setup)?;
        Ok(Self {
            store,
            me: Holder {
                id: setup.me.id,
                address: setup.me.address,
                session: setup.session,
            },
            lease: Duration::from_millis(setup.timing.lease_ms.into()),
            observed: None,
            joined_ms: now_ms(),
            announced: None,
        })
    }

    fn member_key(id: &str) -> String {
        format!("{MEMBERS_PREFIX}{id}")
    }

    /// Rewrites this candidate's member record if the last write is half a
    /// lease old (or there was none).
    fn announce(&mut self) -> Result<()> {
        if self
            .announced
            .is_some_and(|at| at.elapsed() < self.lease / 2)
        {
            return Ok(());
        }
        let key = Self::member_key(&self.me.id);
        keys::validate(&key)?;
        let record = MemberRecord {
            address: self.me.address.clone(),
            session: self.me.session.clone(),
            since_ms: self.joined_ms,
            seen_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&record).expect("a member record serializes");
        self.store.write(&key, Some(&bytes), None, None)?;
        self.announced = Some(Instant::now());
        Ok(())
    }

    /// Every member record, parsed (records that do not parse are skipped:
    /// they are only shown to people).
    fn member_records(&mut self) -> Result<Vec<(String, MemberRecord)>> {
        let mut out = Vec::new();
        for key in self.store.list(MEMBERS_PREFIX)? {
            let Some(id) = key.strip_prefix(MEMBERS_PREFIX) else {
                continue;
            };
            if let Some(v) = self.store.get(&key)?
                && let Ok(record) = serde_json::from_slice::<MemberRecord>(&v.value)
            {
                out.push((id.to_string(), record));
            }
        }
        Ok(out)
    }

    /// The leader's housekeeping: forget members not seen for a long time.
    fn forget_gone_members(&mut self) -> Result<()> {
        let cutoff = crate::roster::forget_before_ms(now_ms(), self.lease);
        for (id, record) in self.member_records()? {
            if record.seen_ms < cutoff && id != self.me.id {
                self.store.write(&Self::member_key(&id), None, None, None)?;
            }
        }
        Ok(())
    }

    pub fn members(&mut self) -> Result<Vec<crate::Candidate>> {
        let leader = self
            .read_leader()?
            .and_then(|(record, _)| record.holder.map(|h| h.id));
        let mut members: Vec<crate::Candidate> = self
            .member_records()?
            .into_iter()
            .map(|(id, r)| crate::Candidate {
                leads: leader.as_deref() == Some(id.as_str()),
                member: Member {
                    id,
                    address: r.address,
                },
                since_ms: r.since_ms,
                seen_ms: Some(r.seen_ms),
            })
            .collect();
        members.sort_by(|a, b| a.member.id.cmp(&b.member.id));
        Ok(members)
    }

    pub fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        let members = self.member_records()?;
        crate::roster::check_successor(
            &self.me.id,
            to,
            members.iter().map(|(id, r)| (id.as_str(), r.seen_ms)),
            now_ms(),
            self.lease,
        )?;
        self.release(term, Some(to.to_string()))
    }

    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    fn read_leader(&mut self) -> Result<Option<(LeaderRecord, u64)>> {
        let Some(v) = self.store.get(LEADER_KEY)? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&v.value).map_err(|e| {
            Failure::Unavailable(format!(
                "{LEADER_KEY} holds something that is not a leader record ({e}); was it written by another program?"
            ))
        })?;
        Ok(Some((record, v.version)))
    }

    fn term(record: &LeaderRecord, version: u64) -> Option<Term> {
        record.holder.as_ref().map(|h| Term {
            holder: Member {
                id: h.id.clone(),
                address: h.address.clone(),
            },
            token: version,
            handle: version.to_string(),
            since_ms: record.since_ms,
        })
    }

    /// Since when (the end of the first read that saw it) the pair of
    /// versions has been seen unchanged; `read_done`: the end of this read.
    fn observe(&mut self, seen: (u64, Option<u64>), read_done: Instant) -> Instant {
        match self.observed {
            Some((s, since)) if s == seen => since,
            _ => {
                self.observed = Some((seen, read_done));
                read_done
            }
        }
    }

    pub fn campaign(&mut self, wait_ms: u32) -> Result<Option<Term>> {
        let started = Instant::now();
        let wait = Duration::from_millis(wait_ms.into());
        self.announce()?;
        loop {
            // Before the reads: silence is judged up to this instant (module docs).
            let read_started = Instant::now();
            let current = self.read_leader()?;
            let (expected, guard, takeover) = match &current {
                None => (0, None, true),
                Some((record, version)) => match &record.holder {
                    None if record.successor.as_ref().is_none_or(|s| *s == self.me.id) => {
                        (*version, None, true)
                    }
                    // Handed over to another member: judged like a live
                    // holder's record (module docs), so free after a lease.
                    None => {
                        let since = self.observe((*version, None), Instant::now());
                        let expired = read_started.saturating_duration_since(since) >= self.lease;
                        (*version, None, expired)
                    }
                    // Our own process holds it (a lost reply, or a recreated
                    // instance): nobody took over since, so it is still ours.
                    // Renew before answering: a standby may have been timing
                    // our silence, and the host starts counting from now.
                    Some(h) if *h == self.me => {
                        let term = Self::term(record, *version).expect("the record has a holder");
                        match self.keep(term.clone()) {
                            Ok(()) => return Ok(Some(term)),
                            Err(Failure::NotLeader) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    Some(_) => {
                        let renewal = self.store.get(RENEWAL_KEY)?.map(|v| v.version);
                        let since = self.observe((*version, renewal), Instant::now());
                        let renewed = Guard {
                            key: RENEWAL_KEY,
                            version: renewal.unwrap_or(0),
                        };
                        let expired = read_started.saturating_duration_since(since) >= self.lease;
                        (*version, Some(renewed), expired)
                    }
                },
            };
            if takeover {
                let record = LeaderRecord {
                    holder: Some(self.me.clone()),
                    since_ms: now_ms(),
                    successor: None,
                };
                let bytes = serde_json::to_vec(&record).expect("a leader record serializes");
                let guarded = guard.is_some();
                match self
                    .store
                    .write(LEADER_KEY, Some(&bytes), Some(expected), guard)
                {
                    Ok(version) => {
                        self.observed = None;
                        return Ok(Self::term(&record, version));
                    }
                    // Another candidate won the race: observe the new holder.
                    Err(Failure::Conflict(_)) => continue,
                    // The holder renewed after our reads: it lives; observe afresh.
                    Err(Failure::NotLeader) if guarded => continue,
                    Err(e) => return Err(e),
                }
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            // Wake on a resignation at once; otherwise re-check when the lease
            // we are timing could have run out.
            let until_expiry = self
                .observed
                .map(|(_, since)| self.lease.saturating_sub(since.elapsed()))
                .unwrap_or(left);
            let seen = current.map(|(_, v)| v);
            self.store.wait_change(
                LEADER_KEY,
                seen,
                left.min(until_expiry).max(Duration::from_millis(1)),
            )?;
            // A wait that returned late (a slow store) ends the campaign
            // rather than starting another round past its bound.
            if started.elapsed() >= wait {
                return Ok(None);
            }
        }
    }

    pub fn keep(&mut self, term: Term) -> Result<()> {
        let renewal =
            serde_json::json!({ "id": self.me.id, "token": term.token, "at_ms": now_ms() });
        self.store.write(
            RENEWAL_KEY,
            Some(renewal.to_string().as_bytes()),
            None,
            Some(Guard {
                key: LEADER_KEY,
                version: term.token,
            }),
        )?;
        // Member records are for people: failing to write one must not cost
        // the leadership that the renewal above just proved.
        let due = self
            .announced
            .is_none_or(|at| at.elapsed() >= self.lease / 2);
        if due && let Err(e) = self.announce().and_then(|()| self.forget_gone_members()) {
            crate::log::warn(&format!("could not update the member records: {e:?}"));
        }
        Ok(())
    }

    pub fn resign(&mut self, term: Term) -> Result<()> {
        self.release(term, None)
    }

    /// Writes the resigned record, naming the successor of a handover.
    fn release(&mut self, term: Term, successor: Option<String>) -> Result<()> {
        let record = LeaderRecord {
            holder: None,
            since_ms: now_ms(),
            successor,
        };
        let bytes = serde_json::to_vec(&record).expect("a leader record serializes");
        match self
            .store
            .write(LEADER_KEY, Some(&bytes), Some(term.token), None)
        {
            Ok(_) => Ok(()),
            Err(Failure::Conflict(_)) => Err(Failure::NotLeader),
            Err(e) => Err(e),
        }
    }

    pub fn leader(&mut self, known: Option<u64>, wait_ms: u32) -> Result<Option<Term>> {
        let started = Instant::now();
        let wait = Duration::from_millis(wait_ms.into());
        loop {
            let current = self.read_leader()?;
            let term = current
                .as_ref()
                .and_then(|(record, version)| Self::term(record, *version));
            let left = wait.saturating_sub(started.elapsed());
            if term.as_ref().map(|t| t.token) != known || left.is_zero() {
                return Ok(term);
            }
            self.store
                .wait_change(LEADER_KEY, current.map(|(_, v)| v), left)?;
        }
    }

    pub fn get(&mut self, key: String) -> Result<Option<Versioned>> {
        keys::validate(&key)?;
        self.store.get(&state_key(&key))
    }

    pub fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64> {
        keys::validate(&key)?;
        self.store
            .write(&state_key(&key), Some(&value), expected, guard(fence))
    }

    pub fn delete(&mut self, key: String, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        keys::validate(&key)?;
        if expected == Some(0) {
            return Err(invalid(
                "delete with expected version 0 (\"only if absent\") has nothing to delete",
            ));
        }
        self.store
            .write(&state_key(&key), None, expected, guard(fence))
            .map(drop)
    }

    pub fn list(&mut self, prefix: String) -> Result<Vec<String>> {
        let full = state_key(&prefix);
        let mut keys: Vec<String> = self
            .store
            .list(&full)?
            .into_iter()
            .filter_map(|k| k.strip_prefix(STATE_PREFIX).map(str::to_string))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

fn state_key(key: &str) -> String {
    format!("{STATE_PREFIX}{key}")
}

fn guard(fence: Option<u64>) -> Option<Guard<'static>> {
    fence.map(|version| Guard {
        key: LEADER_KEY,
        version,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The recipe as a whole backend, for [`export_cas_backend!`]: the
/// contract's checks run before these calls (see [`crate::stateful`]).
impl<S: CasStore> crate::stateful::StatefulBackend for Driver<S> {
    fn configure(setup: Setup) -> Result<Self> {
        Driver::configure(setup)
    }
    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>> {
        Driver::campaign(self, millis(wait))
    }
    fn keep(&mut self, term: Term) -> Result<()> {
        Driver::keep(self, term)
    }
    fn resign(&mut self, term: Term) -> Result<()> {
        Driver::resign(self, term)
    }
    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        Driver::leader(self, known, millis(wait))
    }
    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        Driver::get(self, key.into())
    }
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64> {
        Driver::put(self, key.into(), value, expected, fence)
    }
    fn delete(&mut self, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        Driver::delete(self, key.into(), expected, fence)
    }
    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        Driver::list(self, prefix.into())
    }
    fn members(&mut self) -> Result<Vec<crate::Candidate>> {
        Driver::members(self)
    }
    fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        Driver::hand_over(self, term, to)
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Exports a [`CasStore`] as a complete backend plugin:
/// `ha_sidecar_sdk::export_cas_backend!(MyStore);`
#[macro_export]
macro_rules! export_cas_backend {
    ($store:ty) => {
        $crate::export_backend!($crate::cas::Driver<$store>);
    };
}

#[cfg(test)]
mod tests {
    //! The recipe against an in-memory store with a store-wide revision, so
    //! that the SDK's own logic is shown apart from any real store (the etcd
    //! plugin's tests run it against etcd).

    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::thread::sleep;

    use super::*;
    use crate::{Member, Timing};

    type Hook = Option<(&'static str, Box<dyn FnOnce()>)>;

    thread_local! {
        static MEMORY: RefCell<(u64, BTreeMap<String, Versioned>)> = const { RefCell::new((0, BTreeMap::new())) };
        /// Runs once, right after the next read of its key has taken its answer.
        static AFTER_READ: RefCell<Hook> = const { RefCell::new(None) };
        /// Runs once, right before the next write of its key.
        static BEFORE_WRITE: RefCell<Hook> = const { RefCell::new(None) };
    }

    fn set_hook(
        slot: &'static std::thread::LocalKey<RefCell<Hook>>,
        key: &'static str,
        f: impl FnOnce() + 'static,
    ) {
        slot.with(|h| *h.borrow_mut() = Some((key, Box::new(f))));
    }

    fn run_hook(slot: &'static std::thread::LocalKey<RefCell<Hook>>, key: &str) {
        let hook = slot.with(|h| {
            let mut h = h.borrow_mut();
            match h.as_ref() {
                Some((k, _)) if *k == key => h.take(),
                _ => None,
            }
        });
        if let Some((_, f)) = hook {
            f();
        }
    }

    struct Memory;

    impl CasStore for Memory {
        fn open(_: &Setup) -> Result<Self> {
            Ok(Memory)
        }
        fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
            let found = MEMORY.with(|m| m.borrow().1.get(key).cloned());
            run_hook(&AFTER_READ, key);
            Ok(found)
        }
        fn write(
            &mut self,
            key: &str,
            value: Option<&[u8]>,
            expected: Option<u64>,
            guard: Option<Guard<'_>>,
        ) -> Result<u64> {
            run_hook(&BEFORE_WRITE, key);
            MEMORY.with(|m| {
                let (rev, map) = &mut *m.borrow_mut();
                if let Some(g) = guard
                    && map.get(g.key).map_or(0, |v| v.version) != g.version
                {
                    return Err(Failure::NotLeader);
                }
                let current = map.get(key).cloned();
                if let Some(e) = expected
                    && current.as_ref().map_or(0, |v| v.version) != e
                {
                    return Err(Failure::Conflict(current));
                }
                *rev += 1;
                match value {
                    Some(v) => {
                        map.insert(
                            key.into(),
                            Versioned {
                                value: v.to_vec(),
                                version: *rev,
                            },
                        );
                    }
                    None => {
                        map.remove(key);
                    }
                }
                Ok(*rev)
            })
        }
        fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
            Ok(MEMORY.with(|m| {
                m.borrow()
                    .1
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            }))
        }
    }

    fn driver(id: &str) -> Driver<Memory> {
        Driver::configure(Setup {
            me: Member {
                id: id.into(),
                address: format!("{id}:1"),
            },
            session: format!("session-{id}"),
            timing: Timing {
                lease_ms: 200,
                renew_deadline_ms: 150,
                retry_ms: 50,
            },
            settings: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_silent_leader_is_replaced_after_the_lease_and_fenced_out() {
        let (mut a, mut b) = (driver("a"), driver("b"));
        let ta = a
            .campaign(0)
            .unwrap()
            .expect("a free election is won at once");
        assert_eq!(
            b.leader(None, 0).unwrap().map(|t| t.holder.id),
            Some("a".into())
        );
        assert!(
            a.put("k".into(), b"1".into(), Some(0), Some(ta.token))
                .is_ok()
        );
        // While a renews, b never wins, however long it waits.
        for _ in 0..6 {
            assert!(b.campaign(60).unwrap().is_none());
            a.keep(ta.clone()).unwrap();
        }
        // Once a is silent for a full lease, b takes over with a greater token.
        let started = Instant::now();
        let tb = loop {
            if let Some(t) = b.campaign(50).unwrap() {
                break t;
            }
        };
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(tb.token > ta.token);
        assert!(matches!(a.keep(ta.clone()), Err(Failure::NotLeader)));
        assert!(matches!(
            a.put("k".into(), b"stale".into(), None, Some(ta.token)),
            Err(Failure::NotLeader)
        ));
        assert_eq!(a.get("k".into()).unwrap().unwrap().value, b"1");
        assert!(b.put("k".into(), b"2".into(), None, Some(tb.token)).is_ok());
    }

    #[test]
    fn a_resignation_hands_over_at_once_and_versions_conflict() {
        let (mut a, mut b) = (driver("a"), driver("b"));
        let ta = a.campaign(0).unwrap().unwrap();
        a.resign(ta.clone()).unwrap();
        let tb = b
            .campaign(0)
            .unwrap()
            .expect("a resigned record is free at once");
        assert!(tb.token > ta.token);
        assert!(matches!(a.resign(ta), Err(Failure::NotLeader)));
        let v = b.put("x/1".into(), b"a".into(), Some(0), None).unwrap();
        match b.put("x/1".into(), b"b".into(), Some(0), None) {
            Err(Failure::Conflict(Some(cur))) => assert_eq!(cur.version, v),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(b.list("x/".into()).unwrap(), vec!["x/1".to_string()]);
        assert!(b.delete("x/1".into(), Some(0), None).is_err());
    }

    /// A standby stopped between its reads and its judgement, for longer
    /// than the lease, while the leader went on renewing: its pause is not
    /// the leader's silence (issue 12).
    #[test]
    fn a_standby_paused_after_its_reads_does_not_take_over_from_a_renewing_leader() {
        let a = Rc::new(RefCell::new(driver("a")));
        let mut b = driver("b");
        let ta = a.borrow_mut().campaign(0).unwrap().expect("a wins");
        a.borrow_mut().keep(ta.clone()).unwrap();
        assert!(b.campaign(0).unwrap().is_none(), "b first observes");
        let (leader, term) = (a.clone(), ta.clone());
        set_hook(&AFTER_READ, RENEWAL_KEY, move || {
            // b is stopped here, its answers read; a renews every 60 ms.
            for _ in 0..5 {
                sleep(Duration::from_millis(60));
                leader.borrow_mut().keep(term.clone()).unwrap();
            }
        });
        let won = b.campaign(0).unwrap();
        assert!(
            won.is_none(),
            "b took over from a leader that renewed throughout b's pause: {won:?}"
        );
        a.borrow_mut().keep(ta).expect("a still leads");
    }

    /// The leader renews between a standby's (correct) judgement that it was
    /// silent and the standby's takeover write: here an earlier instance of
    /// the leader's process takes its own term back. The takeover must fail.
    #[test]
    fn a_renewal_between_the_judgement_and_the_takeover_defeats_the_takeover() {
        let a = Rc::new(RefCell::new(driver("a")));
        let mut b = driver("b");
        let ta = a.borrow_mut().campaign(0).unwrap().expect("a wins");
        assert!(b.campaign(0).unwrap().is_none(), "b first observes");
        sleep(Duration::from_millis(250)); // a silent for longer than the lease
        let (leader, retaken) = (a.clone(), Rc::new(RefCell::new(None)));
        let r = retaken.clone();
        set_hook(&BEFORE_WRITE, LEADER_KEY, move || {
            *r.borrow_mut() = leader.borrow_mut().campaign(0).unwrap();
        });
        let won = b.campaign(0).unwrap();
        let retaken = retaken.borrow().clone();
        assert_eq!(
            retaken.as_ref().map(|t| t.token),
            Some(ta.token),
            "a takes its own term back with a renewal"
        );
        assert!(
            won.is_none(),
            "b took over although a renewed after b's reads: {won:?}"
        );
        a.borrow_mut().keep(ta.clone()).expect("a still leads");
        // Not vacuous: once a is silent for a lease, b wins.
        let tb = loop {
            if let Some(t) = b.campaign(50).unwrap() {
                break t;
            }
        };
        assert!(tb.token > ta.token);
    }

    #[test]
    fn members_are_listed_and_a_handover_lets_only_the_successor_in_at_once() {
        let (mut a, mut b, mut c) = (driver("ho-a"), driver("ho-b"), driver("ho-c"));
        let ta = a.campaign(0).unwrap().expect("a wins");
        assert!(b.campaign(0).unwrap().is_none());
        assert!(c.campaign(0).unwrap().is_none());
        let members = a.members().unwrap();
        let ids: Vec<(&str, bool)> = members
            .iter()
            .filter(|m| m.member.id.starts_with("ho-"))
            .map(|m| (m.member.id.as_str(), m.leads))
            .collect();
        assert_eq!(ids, vec![("ho-a", true), ("ho-b", false), ("ho-c", false)]);
        // To nobody known, or to itself: refused, and a still leads.
        assert!(matches!(
            a.hand_over(ta.clone(), "ho-x"),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            a.hand_over(ta.clone(), "ho-a"),
            Err(Failure::Invalid(_))
        ));
        a.keep(ta.clone())
            .expect("a still leads after refused handovers");
        a.hand_over(ta.clone(), "ho-c").unwrap();
        assert!(
            b.campaign(0).unwrap().is_none(),
            "b took a term handed over to c"
        );
        assert!(a.keep(ta.clone()).is_err(), "a's term is gone");
        let tc = c
            .campaign(0)
            .unwrap()
            .expect("the successor takes over at once");
        assert!(tc.token > ta.token);
        assert_eq!(b.leader(None, 0).unwrap().unwrap().holder.id, "ho-c");
    }

    #[test]
    fn a_successor_that_never_comes_costs_one_lease() {
        let (mut a, mut b, mut c) = (driver("gone-a"), driver("gone-b"), driver("gone-c"));
        let ta = a.campaign(0).unwrap().expect("a wins");
        assert!(c.campaign(0).unwrap().is_none());
        assert!(b.campaign(0).unwrap().is_none());
        a.hand_over(ta.clone(), "gone-c").unwrap();
        drop(c); // the successor dies before it claims
        let started = Instant::now();
        let tb = loop {
            if let Some(t) = b.campaign(50).unwrap() {
                break t;
            }
        };
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(tb.token > ta.token);
    }
}
