//! Leader election across real sidecar processes on the file backend.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::overlap::{self, History};
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
    // A standby learns of a new leader through discovery, a moment after the
    // leader itself knows: wait until the watcher's view is the leader's.
    wait_for(
        "the watcher to see the leader",
        Duration::from_secs(10),
        || (sidecars[(leader + 1) % 3].leader()["term"].as_u64() == Some(term)).then_some(()),
    );
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

/// Issue 12: while a sidecar leads term n, a record `term-(n+1)` with
/// `released: true` appears (what a candidate that backed off left behind
/// before the fix, or an older version's back-off). It must not be taken as a
/// free slot: the leader steps down at its next renewal, a standby takes over
/// once the record stayed unchanged for a lease, and at no instant do two
/// sidecars claim leadership. The record is planted just after the leader
/// renewed, so that the old leader would go on claiming for almost a whole
/// retry period if a standby took over at once.
#[test]
fn a_planted_released_successor_does_not_make_two_leaders() {
    let cluster = Cluster::new();
    let sidecars: Vec<Sidecar> = ["s1", "s2", "s3", "s4", "s5"]
        .iter()
        .map(|id| cluster.start(id))
        .collect();
    let ports: Vec<u16> = sidecars.iter().map(|s| s.port).collect();
    let election = cluster.path().join("data/test/election");
    let history = Arc::new(History::default());
    let watchers = overlap::watch(&history, &ports);
    let mut returned = Vec::new();
    for round in 0..2 {
        let leader = agreed_leader(&sidecars);
        let term = sidecars[leader].term();
        let record = election.join(format!("term-{term:020}"));
        let before = std::fs::read(&record).expect("the leader's term record");
        wait_for("the leader to renew", Duration::from_secs(5), || {
            (std::fs::read(&record).ok()? != before).then_some(())
        });
        plant_released(&election, term + 1);
        let planted = Instant::now();
        let (next, new_term) = wait_for(
            "leadership to return after the plant",
            LEASE + Duration::from_secs(5),
            || {
                sidecars.iter().enumerate().find_map(|(i, s)| {
                    let v = s.get("/leader/self").ok()?.json();
                    let t = v["term"].as_u64()?;
                    (v["leading"] == true && t > term).then_some((i, t))
                })
            },
        );
        let took = planted.elapsed();
        println!(
            "round {round}: {} led term {term}; planted term-{} released; {} leads term {new_term} after {took:?}",
            sidecars[leader].id,
            term + 1,
            sidecars[next].id
        );
        assert!(
            new_term > term + 1,
            "term {} was planted; a winner must take a newer one",
            term + 1
        );
        assert!(
            took < LEASE + Duration::from_secs(3),
            "leadership came back only after {took:?}"
        );
        returned.push(took);
        // Watch a while longer: the old leader must not come back to term n.
        std::thread::sleep(LEASE / 2);
    }
    watchers.stop();
    let bound = overlap::safety_bound(Duration::from_millis(1500), LEASE);
    let verdict = overlap::check(&history.snapshot(), bound);
    let problems = verdict.problems();
    assert!(
        problems.is_empty(),
        "two leaders at once after a planted released record:\n  {}",
        problems.join("\n  ")
    );
    // Not vacuous: both terms of each round were seen claimed.
    assert!(
        verdict.terms.len() >= 3,
        "terms claimed: {:?}",
        verdict.terms
    );
    println!("leadership returned after {returned:?}");
}

/// Writes `term-<token>` as a candidate of an older version that backed off
/// would have left it: released, and without the `confirmed` flag.
fn plant_released(election: &Path, token: u64) {
    let json = format!(
        r#"{{"token":{token},"holder_id":"planted","holder_address":"http://planted.example:8081","session":"planted","since_ms":0,"beat":0,"released":true}}"#
    );
    let tmp = election.join(format!("tmp/planted-{token}"));
    std::fs::write(&tmp, json).expect("write the planted record");
    std::fs::hard_link(&tmp, election.join(format!("term-{token:020}")))
        .expect("plant the record (exclusively, as a candidate creates one)");
    let _ = std::fs::remove_file(&tmp);
}

/// The operator commands against real sidecars: `status` names the leader
/// (exit 0), `leader --watch` prints the leader and then the change a
/// `handover` makes, `handover` against a standby names the leader and
/// changes nothing, and an unreachable sidecar is an error (exit 1).
#[test]
fn status_watch_and_handover_from_the_command_line() {
    let cluster = Cluster::new();
    let sidecars = cluster.start_three();
    let leader = agreed_leader(&sidecars);
    let term = sidecars[leader].term();
    let addr = |s: &Sidecar| format!("127.0.0.1:{}", s.port);
    let standby = &sidecars[(leader + 1) % 3];

    let (code, out) = run_cli(&["status", "--address", &addr(standby)]);
    assert_eq!(code, 0, "{out}");
    println!("$ ha-sidecar status\n{out}");
    assert!(
        out.contains(&format!(
            "leader    {} at http://{}.example:8081",
            sidecars[leader].id, sidecars[leader].id
        )) && out.contains(&format!("term      {term}, since"))
            && out.contains("standby, ready"),
        "{out}"
    );
    let (code, out) = run_cli(&["status", "--address", &addr(standby), "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(v["leader"]["term"].as_u64(), Some(term));
    assert_eq!(v["ready"], true);

    let (code, out) = run_cli(&["handover", "--address", &addr(standby)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not lead") && out.contains(&sidecars[leader].id),
        "{out}"
    );
    assert_eq!(
        standby.leader()["term"].as_u64(),
        Some(term),
        "a refused handover changed the term"
    );

    let mut watch = std::process::Command::new(sidecar_bin())
        .args([
            "leader",
            "--watch",
            "--output",
            "json",
            "--address",
            &addr(standby),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()))
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap());
    // The watch prints the current leader first.
    assert_eq!(lines.next().unwrap()["term"].as_u64(), Some(term));
    let (code, out) = run_cli(&["handover", "--address", &addr(&sidecars[leader])]);
    assert_eq!(code, 0, "{out}");
    println!("$ ha-sidecar handover\n{out}");
    assert!(
        out.contains(&format!(
            "{} (term {term}) handed over to",
            sidecars[leader].id
        )),
        "{out}"
    );
    // Then every change: perhaps a moment with no leader, then the new one.
    let next = loop {
        let v = lines.next().expect("the watch printed the new leader");
        match v["term"].as_u64() {
            None => assert!(v["leader"].is_null(), "{v}"),
            Some(t) => break (t, v),
        }
    };
    assert!(next.0 > term, "{}", next.1);
    assert_ne!(next.1["leader"]["id"], sidecars[leader].id.as_str());
    let _ = watch.kill();
    let _ = watch.wait();

    let (code, out) = run_cli(&["status", "--address", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach the sidecar"), "{out}");
}
