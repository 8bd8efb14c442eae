//! The overlap checker: every leadership interval each sidecar claims, taken
//! from what the sidecar itself answers on its HTTP API, checked for two
//! leaders at once and for tokens that do not grow.
//!
//! # What is recorded
//!
//! Each answer in which a sidecar says whether *it* leads is an [`Event`]
//! with the instants just before the request was sent and just after the
//! answer arrived (the test and the sidecars share one monotonic clock): a
//! poller asks `GET /leader/self` every [`POLL_EVERY`]; a watcher long-polls
//! `GET /leader?wait=..&known=<token>`, the push channel, which answers as
//! soon as the sidecar's view of the term changes, so a leadership shorter
//! than one poll is seen all the same; and the writers' own `GET /leader`
//! answers and acknowledged fenced writes are added by the workload. A
//! sidecar that keeps claiming after it was deposed is caught by its own
//! answers, whatever the others say.
//!
//! # Intervals
//!
//! One sidecar's answers, in the order they arrived, split into runs of
//! claims of one term; a "not leading" answer ends a run. An answer was true
//! at some unknown instant inside its request, so a run is *certainly* claimed
//! from the earliest end of its answers to the latest start of them (and
//! possibly a little longer on both sides). Only certain intervals are
//! compared: polling granularity and request latency can hide an overlap
//! shorter than about one poll, never invent one. (A run counts as one
//! interval even across a pause of its sidecar, during which it answered
//! nothing: no other term can legitimately be claimed in between, because the
//! same term is never claimed again once another one was.)
//!
//! # The safety bound
//!
//! The host reports leadership only until its last successful renewal
//! *started* plus `renew-deadline`. A successor may take over only after the
//! old term was released (after the old leader stepped down, so no overlap),
//! or after watching it unchanged for a full `lease` (file backend) or after
//! the old holder's session expired, a full session timeout after the last
//! renewal reached ZooKeeper (ZooKeeper backend); either comes at least the
//! takeover delay after that renewal started. So two claims can overlap by
//! at most `renew-deadline - takeover delay`, which the config refuses to
//! make positive: the bound is zero, on one machine where all processes read
//! the same clock (across machines, add the clocks' drift over a lease).
//! [`safety_bound`] computes it from the timing rather than assuming it.
//!
//! # The checks
//!
//! 1. no two certain intervals of different terms overlap by more than the
//!    bound;
//! 2. tokens strictly grow: once an answer proved term `u` current (a claim
//!    or an acknowledged write, answered), no claim and no acknowledged write
//!    of an older term `t < u` comes from a request sent later. This needs
//!    no timing at all, and it catches overlaps too short to see as
//!    intervals;
//! 3. one term, one holder.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Response, request_within};

/// How often each sidecar is asked `GET /leader/self`.
pub const POLL_EVERY: Duration = Duration::from_millis(10);
/// A poll not answered in this long (a paused sidecar) is dropped.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one long poll waits for a change.
const WATCH_WAIT: Duration = Duration::from_secs(2);

/// How far two claims of different terms may overlap, given the renew
/// deadline and how long after the last renewal a successor can take over
/// (the lease for the file backend, the session timeout for ZooKeeper): see
/// the module documentation.
pub fn safety_bound(renew_deadline: Duration, takeover_after: Duration) -> Duration {
    renew_deadline.saturating_sub(takeover_after)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The sidecar answered that it leads with this term.
    Claim,
    /// The sidecar answered that it does not lead.
    NotLeading,
    /// A write fenced with this term was acknowledged through this sidecar.
    Ack,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub node: usize,
    pub kind: Kind,
    /// The claimed or fenced term (0 for `NotLeading`).
    pub term: u64,
    pub start: Instant,
    pub end: Instant,
}

impl Event {
    /// What the sidecar did for the event's term, for messages.
    pub fn action(&self) -> &'static str {
        match self.kind {
            Kind::Claim => "claimed",
            Kind::NotLeading => "disclaimed",
            Kind::Ack => "acknowledged a write fenced by",
        }
    }
}

/// Every event of a run, from any thread.
#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    pub fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    /// What an answer to `GET /leader` or `GET /leader/self` says about the
    /// answering sidecar itself; returns the term it claims, if it does.
    pub fn record_answer(
        &self,
        node: usize,
        start: Instant,
        end: Instant,
        r: &Response,
    ) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let (kind, term) = match (r.status, v["leading"].as_bool()) {
            (200, Some(true)) => (Kind::Claim, v["term"].as_u64()?),
            (200 | 503, Some(false)) => (Kind::NotLeading, 0),
            _ => return None,
        };
        self.record(Event {
            node,
            kind,
            term,
            start,
            end,
        });
        (kind == Kind::Claim).then_some(term)
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// The pollers and watchers of a run.
pub struct Watchers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(u64, u64)>>,
}

/// Starts a poller and a long-poll watcher for each sidecar port.
pub fn watch(history: &Arc<History>, ports: &[u16]) -> Watchers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (node, &port) in ports.iter().enumerate() {
        let (h, s) = (history.clone(), stop.clone());
        threads.push(std::thread::spawn(move || poller(node, port, &h, &s)));
        let (h, s) = (history.clone(), stop.clone());
        threads.push(std::thread::spawn(move || watcher(node, port, &h, &s)));
    }
    Watchers { stop, threads }
}

impl Watchers {
    /// Stops them; returns (requests sent, requests unanswered).
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a watcher thread panicked"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

fn poller(node: usize, port: u16, history: &History, stop: &AtomicBool) -> (u64, u64) {
    let (mut asked, mut unanswered) = (0, 0);
    while !stop.load(Relaxed) {
        asked += 1;
        let start = Instant::now();
        match request_within(port, "GET", "/leader/self", &[], b"", POLL_TIMEOUT) {
            Ok(r) => {
                history.record_answer(node, start, Instant::now(), &r);
            }
            Err(_) => unanswered += 1,
        }
        std::thread::sleep(POLL_EVERY);
    }
    (asked, unanswered)
}

fn watcher(node: usize, port: u16, history: &History, stop: &AtomicBool) -> (u64, u64) {
    let (mut asked, mut unanswered) = (0, 0);
    let mut known = "none".to_string();
    while !stop.load(Relaxed) {
        asked += 1;
        let path = format!("/leader?wait={}ms&known={known}", WATCH_WAIT.as_millis());
        let start = Instant::now();
        match request_within(
            port,
            "GET",
            &path,
            &[],
            b"",
            WATCH_WAIT + Duration::from_secs(1),
        ) {
            Ok(r) => {
                history.record_answer(node, start, Instant::now(), &r);
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                    known = v["term"]
                        .as_u64()
                        .map_or("none".to_string(), |t| t.to_string());
                }
            }
            Err(_) => {
                unanswered += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    (asked, unanswered)
}

/// One run of claims of one term by one sidecar.
#[derive(Clone, Debug)]
pub struct Interval {
    pub node: usize,
    pub term: u64,
    /// Claimed for certain from the first to the second instant (empty when
    /// the answers alone cannot show it lasted: e.g. a single answer).
    pub certain: Option<(Instant, Instant)>,
    pub claims: usize,
}

/// The runs of claims, per sidecar, in the order their answers arrived.
pub fn intervals(events: &[Event]) -> Vec<Interval> {
    let mut per_node: BTreeMap<usize, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind != Kind::Ack) {
        per_node.entry(e.node).or_default().push(e);
    }
    let mut out = Vec::new();
    for (node, mut answers) in per_node {
        // By answer: a long poll's answer is decided when it returns.
        answers.sort_by_key(|e| e.end);
        let mut run: Vec<&Event> = Vec::new();
        let close = |run: &mut Vec<&Event>, out: &mut Vec<Interval>| {
            if let Some(first) = run.first() {
                let from = run.iter().map(|e| e.end).min().unwrap();
                let to = run.iter().map(|e| e.start).max().unwrap();
                out.push(Interval {
                    node,
                    term: first.term,
                    certain: (from < to).then_some((from, to)),
                    claims: run.len(),
                });
            }
            run.clear();
        };
        for e in answers {
            let continues = run.last().is_some_and(|last| last.term == e.term);
            if e.kind == Kind::NotLeading || !continues {
                close(&mut run, &mut out);
            }
            if e.kind == Kind::Claim {
                run.push(e);
            }
        }
        close(&mut run, &mut out);
    }
    out
}

/// Check 1: pairs of intervals of different terms that certainly overlap by
/// more than `bound`.
pub fn overlaps(intervals: &[Interval], bound: Duration) -> Vec<String> {
    let mut found = Vec::new();
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            let (Some((a0, a1)), Some((b0, b1))) = (a.certain, b.certain) else {
                continue;
            };
            if a.term == b.term {
                continue;
            }
            let (from, to) = (a0.max(b0), a1.min(b1));
            if to > from && to - from > bound {
                found.push(format!(
                    "overlap: s{} claimed term {} and s{} claimed term {} at the same time for at least {:?} (bound {bound:?})",
                    a.node + 1,
                    a.term,
                    b.node + 1,
                    b.term,
                    to - from
                ));
            }
        }
    }
    found
}

/// Check 2: claims and acknowledged writes of a term in requests sent after a
/// newer term was proven current. Returns (claims, acknowledged writes).
pub fn order_violations(events: &[Event]) -> (Vec<String>, Vec<String>) {
    let proofs: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind != Kind::NotLeading)
        .collect();
    // For each term, the earliest instant an answer proved it current.
    let mut first_end: BTreeMap<u64, Instant> = BTreeMap::new();
    for e in &proofs {
        let slot = first_end.entry(e.term).or_insert(e.end);
        *slot = (*slot).min(e.end);
    }
    // For each term, the earliest proof that some newer term was current.
    let mut newer_seen: BTreeMap<u64, (Instant, u64)> = BTreeMap::new();
    let mut best: Option<(Instant, u64)> = None;
    for (&term, &end) in first_end.iter().rev() {
        if let Some(b) = best {
            newer_seen.insert(term, b);
        }
        if best.is_none_or(|(b, _)| end < b) {
            best = Some((end, term));
        }
    }
    let mut late: Vec<&&Event> = proofs
        .iter()
        .filter(|e| newer_seen.get(&e.term).is_some_and(|(at, _)| *at < e.start))
        .collect();
    late.sort_by_key(|e| e.start);
    let describe = |e: &Event| {
        let (at, newer) = newer_seen[&e.term];
        format!(
            "s{} {} term {} in a request sent {:?} after term {newer} was seen current",
            e.node + 1,
            e.action(),
            e.term,
            e.start - at
        )
    };
    let claims = late
        .iter()
        .filter(|e| e.kind == Kind::Claim)
        .map(|e| describe(e))
        .collect();
    let acks = late
        .iter()
        .filter(|e| e.kind == Kind::Ack)
        .map(|e| describe(e))
        .collect();
    (claims, acks)
}

/// Check 3: terms claimed or written through more than one sidecar.
pub fn shared_terms(events: &[Event]) -> Vec<String> {
    let mut holders: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind != Kind::NotLeading) {
        holders.entry(e.term).or_default().insert(e.node);
    }
    holders
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, nodes)| {
            let names: Vec<String> = nodes.iter().map(|n| format!("s{}", n + 1)).collect();
            format!(
                "two leaders: term {term} was held by {}",
                names.join(" and ")
            )
        })
        .collect()
}

/// What the checks found in one history.
pub struct Verdict {
    pub intervals: Vec<Interval>,
    pub terms: BTreeSet<u64>,
    pub overlaps: Vec<String>,
    pub late_claims: Vec<String>,
    pub deposed_acks: Vec<String>,
    pub shared_terms: Vec<String>,
}

pub fn check(events: &[Event], bound: Duration) -> Verdict {
    let intervals = intervals(events);
    let terms = intervals.iter().map(|i| i.term).collect();
    let (late_claims, deposed_acks) = order_violations(events);
    Verdict {
        overlaps: overlaps(&intervals, bound),
        intervals,
        terms,
        late_claims,
        deposed_acks,
        shared_terms: shared_terms(events),
    }
}

impl Verdict {
    /// Leadership changes: every term claimed after the first.
    pub fn changes(&self) -> usize {
        self.terms.len().saturating_sub(1)
    }

    /// The split-brain findings, for the problem list.
    pub fn problems(&self) -> Vec<String> {
        let cap = |v: &[String]| -> Vec<String> {
            let mut out: Vec<String> = v.iter().take(10).cloned().collect();
            if v.len() > 10 {
                out.push(format!("... {} in all", v.len()));
            }
            out
        };
        [
            cap(&self.overlaps),
            cap(&self.late_claims),
            cap(&self.deposed_acks),
            cap(&self.shared_terms),
        ]
        .concat()
    }
}
