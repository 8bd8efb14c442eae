//! The ZooKeeper member under the leader's session fails: it is paused
//! (SIGSTOP), again and again, with three sidecars on a real 3-member
//! ensemble (`tests/support/zk_member_pause.rs` runs the rounds). What this
//! asserts is safety: the overlap checker watched every sidecar's claims
//! through every round, and no two ever led at once. How long each round
//! was without a leader is printed, not asserted (speed is the benchmark's:
//! the "ZooKeeper member of the leader paused" row of `./scripts/bench.sh`).
//!
//! `PAUSE_ROUNDS` sets the number of rounds (default 6).

mod support;
#[path = "support/zk.rs"]
mod zk;
#[path = "support/zk_member_pause.rs"]
mod zk_member_pause;

use std::time::Duration;

use zk_member_pause::{Rig, SESSION};

#[test]
fn pausing_the_member_under_the_leaders_session_never_makes_two_leaders() {
    let rounds: usize = std::env::var("PAUSE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut rig = Rig::start();
    // (role of the paused member, no-leader time, of which after the
    // ensemble served again)
    let mut gaps: Vec<(zk::Mode, Duration, Duration)> = Vec::new();
    for i in 1..=rounds {
        let round = rig.round();
        println!("round {i}: {}", round.summary());
        for line in &round.timeline {
            println!("{line}");
        }
        gaps.push((
            round.role,
            round.no_leader,
            round.no_leader.saturating_sub(round.ensemble_back),
        ));
    }
    for role in [zk::Mode::Follower, zk::Mode::Leader] {
        let sorted = |f: fn(&(zk::Mode, Duration, Duration)) -> Duration| {
            let mut v: Vec<f64> = gaps
                .iter()
                .filter(|g| g.0 == role)
                .map(|g| f(g).as_secs_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (all, after) = (sorted(|g| g.1), sorted(|g| g.2));
        if !all.is_empty() {
            println!(
                "paused member was the ensemble's {role:?}: {} rounds, no-leader time median {:.2} s, max {:.2} s (session {SESSION:?}): {all:.2?}; of which after the ensemble served again: {after:.2?}",
                all.len(),
                all[all.len() / 2],
                all[all.len() - 1]
            );
        }
    }
    let verdict = rig.finish();
    println!(
        "overlap checker: {} leadership intervals, terms {:?}",
        verdict.intervals.len(),
        verdict.terms
    );
    let problems = verdict.problems();
    assert!(
        problems.is_empty(),
        "split brain while pausing ZooKeeper members:\n{}",
        problems.join("\n")
    );
}
