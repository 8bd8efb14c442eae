//! Jepsen-lite on the file backend: the README's safety claims, checked
//! against real sidecar processes under a seeded fault schedule.
//!
//! Three sidecars (five with `CHAOS_SIDECARS=5`) share a directory through
//! the file backend, built with fault injection (`plugins/fixtures/faults`:
//! the same sources, inert until a test arms a trigger). The schedule
//! (`tests/support/schedule.rs`) pauses, kills, stops and resigns them and
//! makes their plugin trap, spin, hang or blow its memory, while the overlap
//! checker (`tests/support/overlap.rs`) records every leadership interval
//! each sidecar claims and the writers (`tests/support/workload.rs`) write
//! through whichever leads. It fails on two overlapping claims, a token that
//! does not grow, an acknowledged write lost, or a deposed term's write
//! accepted, and prints a summary of faults and figures.
//!
//! The CI run lasts 25 s; a soak sets `CHAOS_SECS` (and `CHAOS_SEED` to
//! replay one), see the README's "Fault injection".

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::overlap::{self, Event, Kind};
use support::schedule::{self, Backend, Settings};
use support::workload::{self, AppStats, Append, FinalState, Outcome, Sighting};
use support::*;

struct FileBackend;

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn config(&self, _node: usize, id: &str, port: u16, data: &Path) -> String {
        schedule::chaos_yaml(id, port, "fixture_faults_file", data)
            .plugin_key("call-timeout: 2s")
            .settings("cluster-id: test, poll-interval-ms: 20")
            .build()
            + workload::CONFIG_EXTRA
    }

    fn takeover_after(&self) -> Duration {
        LEASE
    }

    /// The newest term record's bytes change on every renewal.
    fn await_renewal(&mut self, data: &Path, within: Duration) -> bool {
        let election = data.join("test/election");
        let newest = || {
            let names = std::fs::read_dir(&election).ok()?;
            let name = names
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("term-"))
                .max()?;
            std::fs::read(election.join(&name)).ok().map(|b| (name, b))
        };
        let Some(before) = newest() else {
            return false;
        };
        let until = Instant::now() + within;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
            match newest() {
                Some(now) if now != before => return true,
                _ => {}
            }
        }
        false
    }
}

#[test]
fn no_split_brain_and_no_lost_or_deposed_writes_on_the_file_backend() {
    schedule::run(&mut FileBackend, &Settings::from_env(25));
}

// ------------------------------------------------------------ the checkers

/// The checkers themselves, on made-up histories: each flags what it should
/// and passes a correct history (a fault schedule that never fails proves
/// little if its checks cannot fail).
#[test]
fn the_overlap_checker_flags_split_brain_and_passes_a_clean_handover() {
    let t = Instant::now();
    let ev = |node, kind, term, start: u64, end: u64| Event {
        node,
        kind,
        term,
        start: t + Duration::from_millis(start),
        end: t + Duration::from_millis(end),
    };
    use Kind::{Ack, Claim, NotLeading};

    // A clean handover: s1 leads term 1, steps down, s2 leads term 2.
    // Overlapping requests around the handover prove nothing.
    let clean = [
        ev(0, Claim, 1, 0, 5),
        ev(0, Ack, 1, 4, 8),
        ev(0, Claim, 1, 20, 25),
        ev(1, NotLeading, 0, 20, 24),
        ev(0, NotLeading, 0, 40, 45),
        ev(1, Claim, 2, 38, 50),
        ev(0, Ack, 1, 30, 52),
        ev(1, Claim, 2, 60, 65),
    ];
    let v = overlap::check(&clean, Duration::ZERO);
    assert!(v.problems().is_empty(), "{:?}", v.problems());
    assert_eq!(v.terms.len(), 2);
    assert_eq!(v.changes(), 1);
    let s1 = &v.intervals[0];
    assert_eq!((s1.node, s1.term, s1.claims), (0, 1, 2));
    assert_eq!(
        s1.certain,
        Some((t + Duration::from_millis(5), t + Duration::from_millis(20)))
    );

    // s1 keeps claiming term 1 while s2 claims term 2: an overlap of at
    // least 30 ms, and claims of a superseded term.
    let split = [
        ev(0, Claim, 1, 0, 5),
        ev(1, Claim, 2, 10, 15),
        ev(0, Claim, 1, 50, 55),
        ev(1, Claim, 2, 60, 65),
    ];
    let v = overlap::check(&split, Duration::ZERO);
    assert_eq!(v.overlaps.len(), 1, "{:?}", v.overlaps);
    assert!(v.overlaps[0].contains("35ms"), "{:?}", v.overlaps);
    assert_eq!(v.late_claims.len(), 1, "{:?}", v.late_claims);
    // Within the bound it is no overlap, but the late claim still counts.
    let v = overlap::check(&split, Duration::from_millis(40));
    assert!(v.overlaps.is_empty());
    assert_eq!(v.late_claims.len(), 1);

    // A "not leading" answer in between splits s1's claims into two runs,
    // neither of which certainly overlaps s2's; the late claim is still seen.
    let mut gap = split.to_vec();
    gap.push(ev(0, NotLeading, 0, 20, 21));
    let v = overlap::check(&gap, Duration::ZERO);
    assert!(v.overlaps.is_empty(), "{:?}", v.overlaps);
    assert_eq!(v.late_claims.len(), 1);

    // A write of term 1 acknowledged in a request sent after term 2 was seen.
    let deposed = [ev(1, Claim, 2, 0, 5), ev(0, Ack, 1, 6, 7)];
    let v = overlap::check(&deposed, Duration::ZERO);
    assert_eq!(v.deposed_acks.len(), 1, "{:?}", v.deposed_acks);
    assert!(v.late_claims.is_empty());

    // One term, two holders.
    let shared = [ev(0, Claim, 3, 0, 1), ev(2, Claim, 3, 0, 1)];
    let v = overlap::check(&shared, Duration::ZERO);
    assert_eq!(v.shared_terms.len(), 1, "{:?}", v.shared_terms);

    assert_eq!(
        overlap::safety_bound(Duration::from_millis(1500), Duration::from_secs(2)),
        Duration::ZERO
    );
}

#[test]
fn the_data_checker_flags_lost_and_deposed_writes_and_passes_a_clean_run() {
    let segment = "chaos/log/00000".to_string();
    let append = |value: &[u8], term, version| Append {
        segment: segment.clone(),
        term,
        version,
        len: value.len(),
        hash: workload::hash(value),
        entry: String::new(),
    };
    let sighting = |version, value: &str| Sighting {
        version,
        value: value.into(),
        source: "test",
    };
    let app = |entries: &[&str], appends: Vec<Append>, register: Vec<Sighting>| AppStats {
        attempted: entries.iter().map(|e| format!("{e}\n")).collect(),
        appends,
        register_acks: register,
        ..AppStats::default()
    };
    let log = b"1:app1:1\n1:app1:2\n2:app2:3\n";
    let outcome = |register2: Vec<Sighting>, sightings: Vec<Sighting>| Outcome {
        stats: vec![
            app(
                &["1:app1:1", "1:app1:2"],
                vec![append(&log[..9], 1, 1), append(&log[..18], 1, 3)],
                vec![sighting(2, "1:app1:1"), sighting(4, "1:app1:2")],
            ),
            app(&["2:app2:3"], vec![append(log, 2, 5)], register2),
        ],
        sightings,
    };
    let end = |value: &[u8], register: Sighting| FinalState {
        segments: [(segment.clone(), value.to_vec())].into(),
        register: Some(register),
    };
    let check = |o: &Outcome, e: &FinalState| {
        let mut problems = Vec::new();
        let figures = o.check(e, &mut problems);
        (figures, problems)
    };

    let good = outcome(vec![sighting(6, "2:app2:3")], vec![sighting(4, "1:app1:2")]);
    let (f, p) = check(&good, &end(log, sighting(6, "2:app2:3")));
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        (
            f.appends,
            f.register_writes,
            f.entries,
            f.lost,
            f.deposed_landed
        ),
        (3, 3, 3, 0, 0)
    );

    // An acknowledged append missing from the final value.
    let (f, p) = check(&good, &end(&log[..18], sighting(6, "2:app2:3")));
    assert_eq!(f.lost, 1, "{p:?}");

    // A log entry of term 1 after term 2's.
    let late = b"1:app1:1\n2:app2:3\n1:app1:2\n";
    let (f, p) = check(&good, &end(late, sighting(6, "2:app2:3")));
    assert_eq!(f.deposed_landed, 1, "{p:?}");

    // The register: a value of term 1 at a version after term 2's value,
    // seen by the reader or in the final read.
    let (f, p) = check(&good, &end(log, sighting(7, "1:app1:9")));
    assert_eq!(f.deposed_landed, 1, "{p:?}");
    let seen_late = outcome(vec![sighting(6, "2:app2:3")], vec![sighting(8, "1:app1:2")]);
    let (f, p) = check(&seen_late, &end(log, sighting(8, "1:app1:2")));
    assert_eq!(f.deposed_landed, 1, "{p:?}");

    // One version, two values.
    let forked = outcome(vec![sighting(4, "2:app2:3")], Vec::new());
    let (_, p) = check(&forked, &end(log, sighting(4, "2:app2:3")));
    assert!(p.iter().any(|p| p.contains("version 4 holds")), "{p:?}");

    // An entry nobody sent.
    let (_, p) = check(
        &good,
        &end(b"1:app1:1\n1:app1:7\n", sighting(6, "2:app2:3")),
    );
    assert!(p.iter().any(|p| p.contains("never sent")), "{p:?}");
}
