//! Members view and targeted handover, the same on every backend: three
//! real sidecars, `GET /members` on each, two handovers to named standbys
//! while every sidecar is sampled, and the refusals that change nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Sidecar, request, sole_leader, wait_for};

/// (id, role) of every member, as one sidecar answers `GET /members`.
fn roles(s: &Sidecar) -> Option<BTreeSet<(String, String)>> {
    let r = s.get("/members").ok()?;
    if r.status != 200 {
        return None;
    }
    let v = r.json();
    assert_eq!(v["recorded"], true, "the backend records its members: {v}");
    Some(
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or("?").to_string(),
                    m["role"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
    )
}

/// Every sidecar lists the three members, with `leader` as the one leader.
fn wait_for_agreement(sidecars: &[Sidecar], leader: usize) {
    let expected: BTreeSet<(String, String)> = sidecars
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let role = if i == leader { "leader" } else { "standby" };
            (s.id.clone(), role.to_string())
        })
        .collect();
    wait_for(
        "every sidecar to list the same members",
        Duration::from_secs(15),
        || {
            sidecars
                .iter()
                .all(|s| roles(s).as_ref() == Some(&expected))
                .then_some(())
        },
    );
}

/// Hands over from `from` to `to` and samples every sidecar's
/// `/leader/self` until `to` leads: nobody else may lead in between.
/// Returns how long the handover took, request to the successor's 200.
fn hand_over(sidecars: &[Sidecar], from: usize, to: usize) -> Duration {
    let old_term = sidecars[from].term();
    let started = Instant::now();
    let r = request(
        sidecars[from].port,
        "POST",
        &format!("/leader/handover?to={}", sidecars[to].id),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["term"].as_u64(), Some(old_term));
    loop {
        for (i, s) in sidecars.iter().enumerate() {
            if i != to && s.get("/leader/self").is_ok_and(|r| r.status == 200) {
                panic!(
                    "{} leads after the handover of term {old_term} to {}",
                    s.id, sidecars[to].id
                );
            }
        }
        if sidecars[to].leads() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} did not take over the handed-over term",
            sidecars[to].id
        );
    }
    let took = started.elapsed();
    assert!(sidecars[to].term() > old_term);
    took
}

/// The whole routine, on three sidecars that have just started; `lease`:
/// theirs. Prints the handover times.
pub fn assert_members_and_targeted_handover(sidecars: &[Sidecar], lease: Duration) {
    let leader = sole_leader(sidecars, Duration::from_secs(20));
    wait_for_agreement(sidecars, leader);
    let term = sidecars[leader].term();
    let standby = (leader + 1) % 3;
    let post = |i: usize, path: &str| request(sidecars[i].port, "POST", path, &[], b"").unwrap();
    // Refused, and nothing changes: a stranger, the leader itself, no
    // target, a standby asked to hand over.
    for (i, path, status, code) in [
        (
            leader,
            "/leader/handover?to=nobody".to_string(),
            409,
            "not_a_live_candidate",
        ),
        (
            leader,
            format!("/leader/handover?to={}", sidecars[leader].id),
            409,
            "not_a_live_candidate",
        ),
        (leader, "/leader/handover".to_string(), 400, "bad_request"),
        (
            standby,
            format!("/leader/handover?to={}", sidecars[leader].id),
            409,
            "not_leader",
        ),
    ] {
        let r = post(i, &path);
        assert_eq!(r.status, status, "POST {path}: {}", r.text());
        assert_eq!(r.json()["error"], code, "POST {path}: {}", r.text());
    }
    assert!(
        sidecars[leader].leads(),
        "a refused handover cost the leadership"
    );
    assert_eq!(
        sidecars[leader].term(),
        term,
        "a refused handover changed the term"
    );

    // Two handovers: to the standby started last (on ZooKeeper it queues
    // behind the other, so the handover must skip the natural successor),
    // then from it to the third member (the first leader sits out its
    // resign holdoff).
    let first = (leader + 2) % 3;
    let second = (leader + 1) % 3;
    let a = hand_over(sidecars, leader, first);
    let b = hand_over(sidecars, first, second);
    println!(
        "targeted handovers: {} -> {} in {} ms, {} -> {} in {} ms (lease {lease:?})",
        sidecars[leader].id,
        sidecars[first].id,
        a.as_millis(),
        sidecars[first].id,
        sidecars[second].id,
        b.as_millis()
    );
    for took in [a, b] {
        assert!(
            took < lease,
            "a handover took {took:?}, as long as waiting out the lease ({lease:?})"
        );
    }
    // Once the first leader's holdoff is over, it is a standby again.
    wait_for_agreement(sidecars, second);
}
