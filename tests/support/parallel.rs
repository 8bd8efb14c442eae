//! Many fenced writers at once through every sidecar's state-instance pool
//! while leadership changes hands: a write fenced by a term is acknowledged
//! only while that term is current, however many state calls run in
//! parallel (issue 15's pool must not weaken the fencing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::overlap::{self, Event, History, Kind};
use super::{Sidecar, request, sole_leader};

/// `writers` threads write fenced PUTs through all three sidecars, each with
/// the term it last learned (so some carry a deposed term), while the
/// leader resigns `handovers` times. Checks the claims and acknowledged
/// writes with the overlap checker; returns (acknowledged, refused).
pub fn assert_parallel_fenced_writers_keep_the_fence(
    sidecars: &[Sidecar],
    writers: usize,
    handovers: usize,
    renew_deadline: Duration,
    takeover: Duration,
) -> (u64, u64) {
    let ports: Vec<u16> = sidecars.iter().map(|s| s.port).collect();
    let history = Arc::new(History::default());
    let watchers = overlap::watch(&history, &ports);
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (ports, history, stop) = (ports.clone(), history.clone(), stop.clone());
            let (acked, refused) = (acked.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut term = 0u64;
                let mut seq = 0u64;
                while !stop.load(Relaxed) {
                    seq += 1;
                    let node = (w + seq as usize) % ports.len();
                    // Learn the term now and then, not before every write.
                    if seq % 8 == 1
                        && let Ok(r) = request(ports[node], "GET", "/leader", &[], b"")
                    {
                        term = r.json()["term"].as_u64().unwrap_or(term);
                    }
                    let t = term.to_string();
                    let start = Instant::now();
                    let Ok(r) = request(
                        ports[node],
                        "PUT",
                        &format!("/state/parallel/w{w}"),
                        &[("x-ha-term", &t)],
                        format!("{term}:{seq}").as_bytes(),
                    ) else {
                        continue;
                    };
                    let end = Instant::now();
                    if r.status == 200 {
                        acked.fetch_add(1, Relaxed);
                        history.record(Event {
                            node,
                            kind: Kind::Ack,
                            term,
                            start,
                            end,
                        });
                    } else {
                        refused.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for _ in 0..handovers {
        std::thread::sleep(Duration::from_millis(700));
        let leader = sole_leader(sidecars, takeover + Duration::from_secs(10));
        let _ = request(
            sidecars[leader].port,
            "POST",
            "/leader/resign?holdoff=200ms",
            &[],
            b"",
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Relaxed);
    for t in threads {
        t.join().expect("a writer panicked");
    }
    watchers.stop();
    // Writes go through every sidecar, so a term's acknowledged writes come
    // from several: the overlap check runs on the claims, and the order check
    // (no write of a term acknowledged in a request sent after a newer term
    // was seen current) on claims and writes together.
    let events = history.snapshot();
    let claims: Vec<Event> = events
        .iter()
        .filter(|e| e.kind != Kind::Ack)
        .cloned()
        .collect();
    let verdict = overlap::check(&claims, overlap::safety_bound(renew_deadline, takeover));
    let mut problems = verdict.problems();
    let (late_claims, late_writes) = overlap::order_violations(&events);
    problems.extend(late_claims);
    problems.extend(late_writes);
    assert!(
        problems.is_empty(),
        "the fence gave way under parallel writers:\n  {}",
        problems.join("\n  ")
    );
    let (acked, refused) = (acked.load(Relaxed), refused.load(Relaxed));
    assert!(
        verdict.terms.len() > handovers,
        "terms claimed: {:?}",
        verdict.terms
    );
    assert!(
        acked > 0 && refused > 0,
        "acknowledged {acked}, refused {refused}"
    );
    (acked, refused)
}
