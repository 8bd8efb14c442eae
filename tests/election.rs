//! Leader election across real sidecar processes on the file backend.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn exactly_one_leader_among_three_and_all_agree() {
    let cluster = Cluster::new();
    let sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let term = sidecars[leader].term();
    // For two leases, sample everyone: never two leaders, everyone names the same one.
    let until = Instant::now() + 2 * LEASE;
    while Instant::now() < until {
        let leading = sidecars.iter().filter(|s| s.leads()).count();
        assert!(leading <= 1, "{leading} sidecars lead at once");
        for s in &sidecars {
            let v = s.leader();
            if v["term"].is_u64() {
                assert_eq!(
                    v["term"].as_u64(),
                    Some(term),
                    "{} reports another term: {v}",
                    s.id
                );
                assert_eq!(v["leader"]["id"], sidecars[leader].id.as_str());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The classic leader-elector answer, from a standby.
    let standby = &sidecars[(leader + 1) % 3];
    let name = standby.get("/").unwrap().json();
    assert_eq!(name["name"], sidecars[leader].id.as_str());
    let body = standby.get("/leader/self").unwrap();
    assert_eq!(body.status, 503);
    assert_eq!(body.json()["error"], "not_leader");
}

#[test]
fn kill_9_of_the_leader_fails_over_within_the_lease() {
    let cluster = Cluster::new();
    let mut sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let old_term = sidecars[leader].term();
    let killed = Instant::now();
    sidecars[leader].kill9();
    let rest: Vec<_> = sidecars
        .drain(..)
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s)
        .collect();
    let new = sole_leader(&rest, LEASE + Duration::from_secs(5));
    let took = killed.elapsed();
    println!("kill -9 takeover: {took:?} (lease {LEASE:?})");
    // The standby waits out the lease from its own last observation, so the
    // takeover comes no earlier than the lease minus one renewal interval.
    assert!(
        took < LEASE + Duration::from_secs(3),
        "takeover took {took:?}, lease is {LEASE:?}"
    );
    assert!(rest[new].term() > old_term, "the new term must be greater");
}

#[test]
fn sigterm_of_the_leader_hands_over_well_under_a_second() {
    let cluster = Cluster::new();
    let mut sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let old_term = sidecars[leader].term();
    let sent = Instant::now();
    sidecars[leader].signal(libc::SIGTERM);
    let mut old = sidecars.remove(leader);
    let new = sole_leader(&sidecars, Duration::from_secs(10));
    let took = sent.elapsed();
    println!("SIGTERM takeover: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "graceful takeover took {took:?}"
    );
    assert!(sidecars[new].term() > old_term);
    let status = old.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "the old leader exited with {status}:\n{}",
        old.log_text()
    );
    assert!(
        old.log_text().contains("leadership released"),
        "no release logged:\n{}",
        old.log_text()
    );
}

#[test]
fn resign_hands_leadership_to_a_standby() {
    let cluster = Cluster::new();
    let sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let old_term = sidecars[leader].term();
    let standby = &sidecars[(leader + 1) % 3];
    assert_eq!(
        request(standby.port, "POST", "/leader/resign", &[], b"")
            .unwrap()
            .status,
        409,
        "a standby has nothing to resign"
    );
    let r = request(sidecars[leader].port, "POST", "/leader/resign", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["term"].as_u64(), Some(old_term));
    assert!(
        !sidecars[leader].leads(),
        "still leading right after resigning"
    );
    let new = sole_leader(&sidecars, Duration::from_secs(10));
    assert_ne!(
        new, leader,
        "the resigning sidecar took leadership back during its holdoff"
    );
    assert!(sidecars[new].term() > old_term);
}

#[test]
fn long_poll_wakes_on_a_change_of_leader() {
    let cluster = Cluster::new();
    let mut sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let term = sidecars[leader].term();
    let watcher = sidecars[(leader + 1) % 3].port;
    // Without a change the poll returns after its wait, unchanged.
    let started = Instant::now();
    let r = request(
        watcher,
        "GET",
        &format!("/leader?wait=300ms&known={term}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["term"].as_u64(), Some(term));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // With a change it returns early.
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let r = request(
            watcher,
            "GET",
            &format!("/leader?wait=60s&known={term}"),
            &[],
            b"",
        )
        .unwrap();
        (r.json(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    sidecars[leader].signal(libc::SIGTERM);
    let (view, waited) = poll.join().unwrap();
    assert_ne!(
        view["term"].as_u64(),
        Some(term),
        "woken without a change: {view}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "the long poll was not woken by the change ({waited:?})"
    );
    let _ = sidecars.remove(leader).wait_exit(Duration::from_secs(15));
}

#[test]
fn sigterm_answers_requests_in_flight_before_exiting() {
    let cluster = Cluster::new();
    let mut s = cluster.start("solo");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let term = s.term();
    let port = s.port;
    let poll = std::thread::spawn(move || {
        request(
            port,
            "GET",
            &format!("/leader?wait=60s&known={term}"),
            &[],
            b"",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    s.signal(libc::SIGTERM);
    let answer = poll
        .join()
        .unwrap()
        .expect("the long poll must be answered, not cut off");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the long poll was not woken by the shutdown"
    );
    assert!(s.wait_exit(Duration::from_secs(15)).success());
}
