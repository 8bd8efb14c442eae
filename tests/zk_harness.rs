//! Smoke test of the ZooKeeper test harness (tests/support/zk.rs): real
//! servers start, serve, elect a leader, and recover from losing it.

#[path = "support/zk.rs"]
mod zk;

use std::time::Instant;
use zk::{Mode, ZooKeeper};

#[test]
fn standalone_server_serves() {
    let t = Instant::now();
    let zk = ZooKeeper::standalone();
    eprintln!(
        "standalone: serving on {} after {:?}",
        zk.quorum(),
        t.elapsed()
    );
    assert_eq!(zk.four_letter("ruok").expect("ruok"), "imok");
    assert_eq!(zk.mode(), Some(Mode::Standalone));
    let conf = zk.four_letter("conf").expect("conf");
    assert!(
        conf.contains("minSessionTimeout=400") && conf.contains("maxSessionTimeout=4000"),
        "session timeout range is not 400 ms..4 s:\n{conf}"
    );
}

#[test]
fn ensemble_survives_losing_its_leader() {
    let t = Instant::now();
    let mut zk = ZooKeeper::ensemble(3);
    let leader = zk.leader();
    eprintln!(
        "ensemble: {} serving after {:?}, leader: member {leader}",
        zk.quorum(),
        t.elapsed()
    );
    let modes: Vec<Option<Mode>> = (0..3).map(|i| zk.mode(i)).collect();
    assert_eq!(
        modes.iter().filter(|m| **m == Some(Mode::Leader)).count(),
        1,
        "{modes:?}"
    );
    assert_eq!(
        modes.iter().filter(|m| **m == Some(Mode::Follower)).count(),
        2,
        "{modes:?}"
    );
    for i in 0..3 {
        assert_eq!(zk.four_letter(i, "ruok").expect("ruok"), "imok");
    }

    let t = Instant::now();
    zk.stop(leader);
    assert_eq!(zk.mode(leader), None);
    let next = zk.leader();
    eprintln!(
        "ensemble: member {next} leads {:?} after member {leader} was killed",
        t.elapsed()
    );
    assert_ne!(next, leader);
    assert!(
        zk.four_letter(next, "srvr")
            .expect("srvr")
            .contains("Mode: leader")
    );

    let t = Instant::now();
    zk.start(leader);
    eprintln!("ensemble: member {leader} rejoined after {:?}", t.elapsed());
    assert_eq!(zk.mode(leader), Some(Mode::Follower));
    assert_eq!(zk.leader(), next, "a rejoining member does not take over");

    // A paused follower drops out of view; the leader keeps its role.
    let follower = (0..3).find(|&i| i != next).unwrap();
    zk.pause(follower);
    assert_eq!(zk.mode(follower), None);
    assert_eq!(zk.leader(), next);
    zk.resume(follower);
    assert_eq!(zk.leader(), next);
    assert_eq!(zk.mode(follower), Some(Mode::Follower));
}
