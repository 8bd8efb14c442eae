//! Leadership by exclusive creation of the next term's record.
//!
//! A candidate may create `term-<n+1>` once `term-<n>` is over: confirmed and
//! released, confirmed and held by an earlier instance of this process, or
//! watched byte-for-byte unchanged for a full lease by this instance's own
//! monotonic clock. The holder rewrites its record (a heartbeat counter) on
//! every `keep`, so a live holder's record keeps changing. Timestamps in the
//! record are never used to judge expiry.
//!
//! # Why two sidecars never claim at once
//!
//! The host reports leadership only until the start of its last successful
//! `keep` (or of the `campaign` that won) plus the renew deadline, which the
//! config keeps shorter than the lease (`host/src/leadership.rs`). Every
//! successful call of a holder wrote its record after that start, and every
//! write changes the record's bytes (the heartbeat grows).
//!
//! 1. **Expiry is judged on the instant a read started, not the instant of
//!    judgement.** Equal bytes at an earlier read A and a later read B prove
//!    that nothing was written between A's end and B's start. So the silent
//!    holder's last successful call wrote before A ended, started earlier
//!    still, and its host stopped claiming by that start plus the renew
//!    deadline, before `A.end + lease`. The record counts as expired once
//!    `B.start - A.end >= lease` ([`Latest::read_started`], and `since` is
//!    taken after A completed): then its host has stopped by B's start. A
//!    candidate paused between B and its judgement cannot count its own pause
//!    as the holder's silence (issue 12: it did, when judged on `now`).
//! 2. **Writes after B are caught after the fact, by one side or the other.**
//!    The winner of `term-<n+1>` re-reads `term-<n>` after creating its own
//!    record and backs off if it changed; the holder lists the directory after
//!    every rewrite and fails (`not-leader`) on any newer record. A holder's
//!    write that landed before the re-read is seen by the re-read; one that
//!    landed after it is followed by a listing that sees `term-<n+1>` (or a
//!    newer record: one that passed its re-read is never deleted, only pruned
//!    far behind the latest).
//! 3. **Backing off leaves nothing behind.** The candidate that backs off
//!    deletes its own record (it is unconfirmed, see 4, so nobody trusts it);
//!    a concurrent reader that listed it and finds it gone looks again. The
//!    term number is used again later, which is fine: nobody ever held it.
//!    (Before issue 12 it was marked released, and the released successor of
//!    a live term was taken as a free slot at once: a split brain.)
//! 4. **A record proves its term was held only once confirmed.** After the
//!    re-read of 2 found the predecessor unchanged, the winner rewrites its
//!    record with `confirmed: true` and checks, as `keep` does, that no newer
//!    record appeared; only then is the term returned to the host. A
//!    confirmed record thus proves that the term before it is over (by 1 and
//!    2), so only its `released` flag frees the slot at once, and only a
//!    confirmed record of this process's own session (held by an earlier
//!    instance; the host campaigns only when it does not lead) may be taken
//!    over at once. An unconfirmed record (a winner between creating and
//!    confirming, one that crashed there, or any record without the flag,
//!    like one planted by another program or left `released` by an older
//!    version's back-off) is judged like a live one: free only after it
//!    stayed unchanged for a full lease. That wait covers the term below it
//!    too: a holder of an older term that renewed successfully after the
//!    record appeared would have failed its listing, and if the record is
//!    deleted meanwhile, the re-read of 2 sees it gone. Discovery reports no
//!    leader for an unconfirmed record, and fenced writes need a confirmed one.
//!
//! The leader's `keep` still fails on *any* newer record, confirmed or not: it
//! cannot know whether that record's creator has already re-read its term.
//! So a planted record costs a spurious step-down, never an overlap.
//!
//! A record is never deleted and created again with the same bytes (which
//! would hide the gap from a watcher): a back-off means the term below
//! changed, so a new attempt waits a fresh lease and gets a new `since_ms`;
//! another process's record differs in its session.
//!
//! Upgrading from a version without `confirmed`: its records count as
//! unconfirmed, so the first takeover after the upgrade waits a lease even
//! from a released record, and while an older sidecar still leads, upgraded
//! ones report no leader for it (they still never take over from it while it
//! renews). Older sidecars read the new records as before (they ignore the
//! field) and keep their own flaw until replaced; discovery is right again
//! once all run this version.

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
    /// Set once the winner re-read the term before it unchanged: only then
    /// does the record prove its holder held the term (module docs, 4).
    /// Records of older versions have none and count as unconfirmed.
    #[serde(default)]
    pub confirmed: bool,
    /// Set by a handover, with `released`: only this member may take the
    /// next term at once; any other judges the record like a live one (free
    /// once unchanged for a lease). Older versions ignore it and take a
    /// released record at once, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
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

    /// Whether the record proves that its term was held (module docs, 4).
    fn held(&self) -> bool {
        self.confirmed && !self.released
    }
}

/// The latest term record as read from disk: raw bytes (what expiry is judged
/// on) and, if it parses, the record.
pub struct Latest {
    pub token: u64,
    pub bytes: Vec<u8>,
    pub record: Option<TermRecord>,
    /// Taken before the directory was listed: the read began no earlier.
    pub read_started: Instant,
    /// Taken after the record was read: the read ended no later.
    pub read_done: Instant,
}

/// When this instance first saw the latest record with its current content.
struct Observed {
    token: u64,
    bytes: Vec<u8>,
    /// The end of the first read that saw this content.
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
        self.latest_since(layout, Instant::now())
    }

    fn latest_since(&self, layout: &Layout, read_started: Instant) -> Result<Option<Latest>> {
        let dir = layout.election();
        let names = fsx::names(&dir).map_err(|e| unavailable("list election directory", e))?;
        let Some(token) = names.iter().filter_map(|n| parse_term_record_name(n)).max() else {
            return Ok(None);
        };
        let path = layout.term_record(token);
        match fsx::read_opt(&path).map_err(|e| unavailable("read term record", e))? {
            Some(bytes) => {
                let read_done = Instant::now();
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
                    read_started,
                    read_done,
                }))
            }
            // Pruned, or deleted by a candidate that backed off, between list
            // and read: look again.
            None => self.latest_since(layout, read_started),
        }
    }

    /// Records when the latest record's content was first seen and says
    /// whether it stayed unchanged for a full lease: from the end of that
    /// first read to the start of this one (module docs, 1).
    fn expired(&mut self, latest: &Latest) -> bool {
        match &self.observed {
            Some(o) if o.token == latest.token && o.bytes == latest.bytes => {
                latest.read_started.saturating_duration_since(o.since) >= self.lease
            }
            _ => {
                self.observed = Some(Observed {
                    token: latest.token,
                    bytes: latest.bytes.clone(),
                    since: latest.read_done,
                });
                false
            }
        }
    }

    pub fn vacancy(&mut self, layout: &Layout) -> Result<Vacancy> {
        let latest = self.latest(layout)?;
        Ok(self.judge(latest))
    }

    /// Whether the term of a record read by `latest` is over.
    pub fn judge(&mut self, latest: Option<Latest>) -> Vacancy {
        let Some(latest) = latest else {
            return Vacancy::Never;
        };
        let over = match &latest.record {
            // Confirmed: the term before it is over. Released by its holder
            // after stepping down, or held by an earlier instance of this
            // process, which does not lead while it campaigns.
            // A handover's successor is named: only it takes the slot at once.
            Some(r)
                if r.confirmed
                    && ((r.released && r.successor.as_ref().is_none_or(|s| *s == self.me.id))
                        || r.session == self.session) =>
            {
                true
            }
            _ => self.expired(&latest),
        };
        if over {
            Vacancy::After(latest)
        } else {
            Vacancy::Held
        }
    }

    /// The current leader for discovery: none when released, expired or
    /// not confirmed yet.
    pub fn current(&mut self, layout: &Layout) -> Result<Option<Term>> {
        let Some(latest) = self.latest(layout)? else {
            return Ok(None);
        };
        if self.expired(&latest) {
            return Ok(None);
        }
        Ok(latest.record.filter(TermRecord::held).map(|r| r.to_term()))
    }

    /// Tries to create the record of term `token`. `previous` is the record the
    /// decision to take over was based on; if it changed since, back off.
    /// The record returned is confirmed (module docs, 4).
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
            confirmed: false,
            successor: None,
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
                return match std::fs::remove_file(layout.term_record(token)) {
                    Ok(()) => Ok(None),
                    Err(e) => Err(unavailable(
                        "withdraw term record after backing off (it stays unconfirmed, so it is judged like a live one)",
                        e,
                    )),
                };
            }
        }
        let confirmed = TermRecord {
            confirmed: true,
            ..record
        };
        match self.rewrite(layout, &confirmed) {
            Ok(()) => Ok(Some(confirmed)),
            // A newer record appeared before ours was confirmed: whoever made
            // it may have judged ours expired. We never held the term.
            Err(Failure::NotLeader) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rewrites the record with a new heartbeat, then checks no newer term
    /// appeared meanwhile.
    pub fn keep(&mut self, layout: &Layout, token: u64) -> Result<()> {
        let mut record = self.own_record(layout, token)?;
        record.beat += 1;
        self.rewrite(layout, &record)
    }

    /// Replaces our record, then fails with `not-leader` if the latest record
    /// is not ours any more (module docs, 2). Any newer record counts,
    /// confirmed or not.
    fn rewrite(&self, layout: &Layout, record: &TermRecord) -> Result<()> {
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        write_record(&tmp, record)?;
        fsx::publish_replace(&tmp, &layout.term_record(record.token))
            .map_err(|e| unavailable("rewrite term record", e))?;
        match self.latest(layout)? {
            Some(l) if l.token == record.token => Ok(()),
            _ => Err(Failure::NotLeader),
        }
    }

    pub fn resign(&mut self, layout: &Layout, token: u64) -> Result<()> {
        match self.own_record(layout, token) {
            Ok(record) => self.release(layout, &record, None),
            // Already gone: resigning is idempotent.
            Err(Failure::NotLeader) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Releases our term so that only `to` may take the next one at once.
    pub fn hand_over(&mut self, layout: &Layout, token: u64, to: &str) -> Result<()> {
        let record = self.own_record(layout, token)?;
        self.release(layout, &record, Some(to.to_string()))
    }

    /// Marks our confirmed record released: the slot is free at once (for
    /// the successor only, if one is named).
    fn release(
        &self,
        layout: &Layout,
        record: &TermRecord,
        successor: Option<String>,
    ) -> Result<()> {
        let released = TermRecord {
            released: true,
            successor,
            ..record.clone()
        };
        let tmp = fsx::tmp_path(&layout.election_tmp(), &self.session);
        write_record(&tmp, &released)?;
        fsx::publish_replace(&tmp, &layout.term_record(record.token))
            .map_err(|e| unavailable("release term record", e))
    }

    /// The record of `token`, if it is the latest, held by this process,
    /// confirmed and not released.
    pub fn own_record(&self, layout: &Layout, token: u64) -> Result<TermRecord> {
        match self.latest(layout)? {
            Some(Latest {
                token: t,
                record: Some(r),
                ..
            }) if t == token && r.session == self.session && r.held() => Ok(r),
            _ => Err(Failure::NotLeader),
        }
    }

    /// The term this process currently holds (confirmed), if any.
    pub fn held_by_me(&self, layout: &Layout) -> Result<Option<u64>> {
        Ok(match self.latest(layout)? {
            Some(Latest {
                token,
                record: Some(r),
                ..
            }) if r.session == self.session && r.held() => Some(token),
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

#[cfg(test)]
mod tests {
    //! The election against a real directory, with the leader renewing in a
    //! thread the way the host does (every retry period, valid until the start
    //! of its last successful renewal plus the renew deadline), and a
    //! candidate driven step by step so that a test can pause it anywhere.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::thread::{JoinHandle, sleep};

    use super::*;

    const LEASE: Duration = Duration::from_millis(300);
    /// The host's renew deadline, shorter than the lease (as the config demands).
    const RENEW_DEADLINE: Duration = Duration::from_millis(225);
    const RETRY: Duration = Duration::from_millis(50);

    /// A fresh directory, removed at the end of the test.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "ha-plugin-file-{name}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            fsx::ensure_dir(&path.join("election/tmp")).unwrap();
            Dir(path)
        }
        fn layout(&self) -> Layout {
            Layout {
                root: self.0.clone(),
            }
        }
        /// Writes a term record as another program (or an older version of
        /// this one) would have left it.
        fn plant(&self, token: u64, json: &str) {
            std::fs::write(self.layout().term_record(token), json).unwrap();
        }
        fn tokens(&self) -> Vec<u64> {
            let mut t: Vec<u64> = fsx::names(&self.layout().election())
                .unwrap()
                .iter()
                .filter_map(|n| parse_term_record_name(n))
                .collect();
            t.sort_unstable();
            t
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn candidate(id: &str) -> Election {
        Election::new(
            Member {
                id: id.into(),
                address: format!("http://{id}:1"),
            },
            format!("session-{id}"),
            LEASE,
            RETRY,
        )
    }

    /// One step of a campaign on a record already read: judge it, and
    /// create the next term if it is over.
    fn step(e: &mut Election, layout: &Layout, read: Option<Latest>) -> Option<TermRecord> {
        let (token, previous) = match e.judge(read) {
            Vacancy::Never => (1, None),
            Vacancy::After(latest) => (latest.token + 1, Some(latest)),
            Vacancy::Held => return None,
        };
        e.try_acquire(layout, token, previous.as_ref()).unwrap()
    }

    /// Campaigns every retry period until it wins or `within` has passed.
    fn campaign(e: &mut Election, layout: &Layout, within: Duration) -> Option<TermRecord> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let read = e.latest(layout).unwrap();
            if let Some(record) = step(e, layout, read) {
                return Some(record);
            }
            sleep(RETRY);
        }
        None
    }

    /// What the renewing leader's host would say about itself.
    #[derive(Default)]
    struct Host {
        /// The start of the last successful `keep` (or of the campaign).
        last_ok: Option<Instant>,
        /// When a `keep` failed, and how.
        failed: Option<(Instant, String)>,
    }

    impl Host {
        fn valid_until(&self) -> Instant {
            self.last_ok.expect("the leader won its term") + RENEW_DEADLINE
        }
    }

    struct Leader {
        host: Arc<Mutex<Host>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Leader {
        /// Wins the first term as `id` and renews it every retry period
        /// until a renewal fails or the leader is stopped.
        fn start(dir: &Dir, id: &str) -> (Leader, u64) {
            let layout = dir.layout();
            let mut e = candidate(id);
            let started = Instant::now();
            let record = campaign(&mut e, &layout, LEASE).expect("a free election is won at once");
            let host = Arc::new(Mutex::new(Host {
                last_ok: Some(started),
                failed: None,
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let (h, s, token) = (host.clone(), stop.clone(), record.token);
            let thread = std::thread::spawn(move || {
                while !s.load(Relaxed) {
                    sleep(RETRY);
                    let started = Instant::now();
                    match e.keep(&layout, token) {
                        Ok(()) => {
                            h.lock().unwrap_or_else(PoisonError::into_inner).last_ok = Some(started)
                        }
                        Err(f) => {
                            h.lock().unwrap_or_else(PoisonError::into_inner).failed =
                                Some((Instant::now(), format!("{f:?}")));
                            return;
                        }
                    }
                }
            });
            (
                Leader {
                    host,
                    stop,
                    thread: Some(thread),
                },
                record.token,
            )
        }

        fn stop(&mut self) {
            self.stop.store(true, Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().expect("the leader thread panicked");
            }
        }
    }

    impl Drop for Leader {
        fn drop(&mut self) {
            self.stop.store(true, Relaxed);
        }
    }

    /// The natural path of issue 12: a standby stopped (SIGSTOP) after it
    /// read the latest record and before it judged it. Its pause must not
    /// make the live leader's record look expired, and nothing it does on
    /// resuming may hand it a term while the leader still validly leads.
    #[test]
    fn a_standby_paused_between_reading_and_judging_never_wins_from_a_live_leader() {
        let dir = Dir::new("paused");
        let layout = dir.layout();
        let (mut leader, token) = Leader::start(&dir, "a");
        let mut b = candidate("b");
        for round in 0..8 {
            // An ordinary poll: the record is (re)observed.
            let read = b.latest(&layout).unwrap();
            let won = step(&mut b, &layout, read).map(|r| (r, "an ordinary poll"));
            // A poll paused between the read and the judgement.
            let won = won.or_else(|| {
                let read = b.latest(&layout).unwrap();
                sleep(LEASE + Duration::from_millis(100));
                step(&mut b, &layout, read).map(|r| (r, "a paused poll"))
            });
            if let Some((record, how)) = won {
                let host = leader.host.lock().unwrap();
                let left = host.valid_until().saturating_duration_since(Instant::now());
                panic!(
                    "round {round}: b won term {} in {how} while a renewed term {token} (a's host leads {left:?} longer; a's renewal failed: {:?})",
                    record.token, host.failed
                );
            }
        }
        let failed = leader.host.lock().unwrap().failed.clone();
        assert!(failed.is_none(), "a's renewal failed: {failed:?}");
        assert_eq!(
            dir.tokens(),
            vec![token],
            "backing off left a record behind"
        );
        // Not vacuous: once the leader is silent, b does win, the next term.
        leader.stop();
        let record = campaign(&mut b, &layout, 3 * LEASE).expect("b wins once a is silent");
        assert_eq!(record.token, token + 1);
    }

    /// A record `term-(n+1)` with `released: true` appears while term n is
    /// led (what a candidate that backed off left behind before the fix, or
    /// any other program): it proves nothing about term n, so a standby may
    /// not win before it stayed unchanged for a full lease, and the leader of
    /// term n steps down (its renewal fails) rather than going on leading.
    #[test]
    fn a_planted_released_successor_is_not_a_free_slot() {
        let dir = Dir::new("planted");
        let layout = dir.layout();
        let (mut leader, token) = Leader::start(&dir, "a");
        let mut b = candidate("b");
        // b has been watching the leader for a while.
        assert!(campaign(&mut b, &layout, 2 * LEASE).is_none());
        dir.plant(
            token + 1,
            &format!(
                r#"{{"token":{},"holder_id":"x","holder_address":"http://x:1","session":"session-x","since_ms":0,"beat":0,"released":true}}"#,
                token + 1
            ),
        );
        let planted = Instant::now();
        let record = campaign(&mut b, &layout, 4 * LEASE).expect("b wins after a lease");
        let won = Instant::now();
        let host = leader.host.lock().unwrap();
        assert!(
            won - planted >= LEASE,
            "b won term {} {:?} after the plant, before a full lease ({LEASE:?}); a's host leads until {:?} after b won",
            record.token,
            won - planted,
            host.valid_until().saturating_duration_since(won)
        );
        assert_eq!(record.token, token + 2);
        let (failed_at, how) = host.failed.clone().expect("a's renewal must fail");
        assert!(how.contains("NotLeader"), "a's renewal failed with {how}");
        assert!(failed_at < won, "a stepped down only after b won");
        assert!(
            host.valid_until() <= won,
            "a's host leads {:?} past b's win",
            host.valid_until() - won
        );
        drop(host);
        leader.stop();
    }

    /// A record of our own session that our instance created but never
    /// confirmed (it trapped between creating and re-reading): the old
    /// leader may still live, so it is no free slot for us either.
    #[test]
    fn our_own_unconfirmed_record_is_not_taken_over_at_once() {
        let dir = Dir::new("own");
        let layout = dir.layout();
        let (mut leader, token) = Leader::start(&dir, "a");
        dir.plant(
            token + 1,
            &format!(
                r#"{{"token":{},"holder_id":"b","holder_address":"http://b:1","session":"session-b","since_ms":0,"beat":0,"released":false}}"#,
                token + 1
            ),
        );
        let planted = Instant::now();
        let mut b = candidate("b");
        let record = campaign(&mut b, &layout, 4 * LEASE).expect("b wins after a lease");
        assert!(
            planted.elapsed() >= LEASE,
            "b took over its own unconfirmed term-{} after {:?}",
            token + 1,
            planted.elapsed()
        );
        assert_eq!(record.token, token + 2);
        let host = leader.host.lock().unwrap();
        assert!(host.failed.is_some(), "a must step down");
        assert!(host.valid_until() <= Instant::now());
        drop(host);
        leader.stop();
    }

    /// A resignation still hands over at once, and a crashed leader's term
    /// is taken after a lease.
    #[test]
    fn a_resigned_term_is_free_at_once_and_a_silent_one_after_a_lease() {
        let dir = Dir::new("resign");
        let layout = dir.layout();
        let (mut leader, token) = Leader::start(&dir, "a");
        let mut b = candidate("b");
        assert!(campaign(&mut b, &layout, LEASE).is_none());
        leader.stop();
        candidate("a").resign(&layout, token).unwrap();
        let resigned = Instant::now();
        let tb = campaign(&mut b, &layout, LEASE).expect("a resigned term is free at once");
        assert!(resigned.elapsed() < LEASE, "took {:?}", resigned.elapsed());
        assert_eq!(tb.token, token + 1);
        // b goes silent (a crash): c takes over after a full lease.
        let mut c = candidate("c");
        let silent = Instant::now();
        let tc = campaign(&mut c, &layout, 4 * LEASE).expect("c wins after a lease");
        assert!(silent.elapsed() >= LEASE, "took {:?}", silent.elapsed());
        assert_eq!(tc.token, token + 2);
    }

    /// A candidate that judged the leader's record over (say, from a read
    /// taken before the leader renewed) backs off without leaving a record
    /// that could look like a free slot, and never wins while the leader's
    /// host still claims.
    #[test]
    fn a_candidate_that_backs_off_leaves_no_successor() {
        let dir = Dir::new("backoff");
        let layout = dir.layout();
        let (mut leader, token) = Leader::start(&dir, "a");
        let mut b = candidate("b");
        let stale = b.latest(&layout).unwrap().expect("a's record");
        sleep(3 * RETRY); // a renews meanwhile
        assert!(
            b.try_acquire(&layout, token + 1, Some(&stale))
                .unwrap()
                .is_none(),
            "b won over a record that changed"
        );
        assert_eq!(dir.tokens(), vec![token], "backing off left a record");
        if let Some(record) = campaign(&mut b, &layout, 2 * LEASE) {
            let won = Instant::now();
            let host = leader.host.lock().unwrap();
            assert!(
                host.valid_until() <= won,
                "b won term {} while a's host leads {:?} longer",
                record.token,
                host.valid_until() - won
            );
        }
        leader.stop();
    }

    /// Discovery and fenced writes trust a record only once confirmed.
    #[test]
    fn an_unconfirmed_record_names_no_leader_and_fences_no_write() {
        let dir = Dir::new("discovery");
        let layout = dir.layout();
        let mut a = candidate("a");
        let record = campaign(&mut a, &layout, LEASE).expect("a free election is won");
        assert!(record.confirmed);
        let mut observer = candidate("o");
        assert_eq!(
            observer.current(&layout).unwrap().map(|t| t.token),
            Some(record.token)
        );
        assert_eq!(a.held_by_me(&layout).unwrap(), Some(record.token));
        // a's instance created the next record and trapped before confirming.
        dir.plant(
            record.token + 1,
            &format!(
                r#"{{"token":{},"holder_id":"a","holder_address":"http://a:1","session":"session-a","since_ms":0,"beat":0,"released":false}}"#,
                record.token + 1
            ),
        );
        assert_eq!(observer.current(&layout).unwrap().map(|t| t.token), None);
        assert_eq!(a.held_by_me(&layout).unwrap(), None);
        assert!(matches!(
            a.keep(&layout, record.token + 1),
            Err(Failure::NotLeader)
        ));
        assert!(matches!(
            a.keep(&layout, record.token),
            Err(Failure::NotLeader)
        ));
    }

    /// Expiry is measured from the end of the first read to the start of
    /// the last one, so a pause between a read and its judgement does not
    /// count as the holder's silence (module docs, 1).
    #[test]
    fn a_pause_after_the_read_does_not_count_as_silence() {
        let dir = Dir::new("silence");
        let layout = dir.layout();
        dir.plant(
            1,
            r#"{"token":1,"holder_id":"a","holder_address":"http://a:1","session":"session-a","since_ms":0,"beat":0,"released":false,"confirmed":true}"#,
        );
        let mut b = candidate("b");
        let first = b.latest(&layout).unwrap();
        assert!(matches!(b.judge(first), Vacancy::Held));
        let read = b.latest(&layout).unwrap();
        sleep(LEASE + Duration::from_millis(50));
        assert!(
            matches!(b.judge(read), Vacancy::Held),
            "a read taken right after the first one was judged expired"
        );
        let fresh = b.latest(&layout).unwrap();
        assert!(
            matches!(b.judge(fresh), Vacancy::After(l) if l.token == 1),
            "a record unchanged for a lease between reads is expired"
        );
    }
}
