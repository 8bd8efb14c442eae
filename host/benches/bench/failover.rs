//! Failover among three sidecars: the leader is killed (kill -9), stopped
//! (SIGTERM), resigns, or hands over to a named standby, and the clock runs from that moment until a standby
//! answers the leader-only endpoint (`GET /leader/self`) with 200. Long
//! polls held on the standbys at the same time measure how soon clients
//! waiting for a change learn of the new leader.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backends::Backend;
use crate::group::{Group, progress, settle};
use crate::report::{Report, Row, Samples, Section, human, ms};
use crate::support::{Sidecar, request, request_within};

/// Long enough that a standby wins the election, short enough that the
/// resigned sidecar is back in the race before the next trial.
const RESIGN_HOLDOFF: Duration = Duration::from_millis(500);
/// The design's graceful-handover target and the slack it allows a crash
/// takeover over the backend's detection bound.
const HANDOVER_TARGET: Duration = Duration::from_millis(100);
/// Flink 2.3.0 with ZooKeeper 3.8 HA, two JobManagers on a machine of this
/// kind, time until the new leader's connection_info was written (measured
/// separately; see docs/benchmarks.md).
const FLINK_KILL: &str = "60.4 s (60 s session), 9.25 s (10 s session)";
const FLINK_TERM: &str = "65.1 s (60 s session; a stopped JobManager keeps its session)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill9,
    Term,
    Resign,
    /// `POST /leader/handover?to=` the standby started after the other (on
    /// ZooKeeper the one queued behind: not the natural successor).
    HandoverTo,
}

struct Outcome {
    takeover: Duration,
    /// When a long poll on each standby first answered with the new leader,
    /// after the stop, and whether that standby is the one that took over.
    wakeups: Vec<(Duration, bool)>,
}

pub fn run(report: &mut Report, backend: &dyn Backend, trials: usize) {
    let group = Group::new(backend);
    let mut sidecars = group.start_three();
    settle(&sidecars);
    let bound = backend.detection_bound();
    let name = backend.name();

    progress(&format!(
        "{name}: kill -9 of the leader, {trials} trials (about {} each)",
        human(bound.total)
    ));
    let killed: Vec<Outcome> = (0..trials)
        .map(|_| trial(&group, &mut sidecars, Stop::Kill9, bound.total))
        .collect();
    let s = Samples::new(killed.iter().map(|o| o.takeover).collect());
    let limit = bound.total + HANDOVER_TARGET;
    report.add(
        Row::new(
            Section::Failover,
            "takeover after kill -9, min / median / p99",
            name,
        )
        .value(spread(&s))
        .target(
            format!("<= {} + 100 ms = {}", bound.made_of, human(limit)),
            s.pct(0.99) <= limit,
        )
        .samples(s.len())
        .compare(FLINK_KILL)
        .spread(&s)
        .figure("detection_bound_ms", ms(bound.total)),
    );

    progress(&format!("{name}: SIGTERM of the leader, {trials} trials"));
    let stopped: Vec<Outcome> = (0..trials)
        .map(|_| trial(&group, &mut sidecars, Stop::Term, bound.total))
        .collect();
    graceful_row(
        report,
        name,
        "takeover after SIGTERM, min / median / p99",
        &stopped,
        FLINK_TERM,
    );
    wakeup_rows(report, name, &stopped);

    progress(&format!("{name}: POST /leader/resign, {trials} trials"));
    let resigned: Vec<Outcome> = (0..trials)
        .map(|_| trial(&group, &mut sidecars, Stop::Resign, bound.total))
        .collect();
    graceful_row(
        report,
        name,
        "takeover after POST /leader/resign, min / median / p99",
        &resigned,
        "(Flink has no resign)",
    );

    progress(&format!(
        "{name}: POST /leader/handover?to=, {trials} trials"
    ));
    let handed: Vec<Outcome> = (0..trials)
        .map(|_| trial(&group, &mut sidecars, Stop::HandoverTo, bound.total))
        .collect();
    graceful_row(
        report,
        name,
        "takeover by the named standby after POST /leader/handover?to=, min / median / p99",
        &handed,
        "(Flink has no handover; Patroni's switchover --candidate)",
    );
}

fn graceful_row(
    report: &mut Report,
    backend: &str,
    metric: &str,
    outcomes: &[Outcome],
    flink: &str,
) {
    let s = Samples::new(outcomes.iter().map(|o| o.takeover).collect());
    report.add(
        Row::new(Section::Failover, metric, backend)
            .value(spread(&s))
            .target("p99 < 100 ms", s.pct(0.99) < HANDOVER_TARGET)
            .samples(s.len())
            .compare(flink)
            .spread(&s),
    );
}

/// The wake-ups of the SIGTERM trials: on the sidecar that became leader
/// (it learns locally) and on the other standby (it learns through the
/// backend).
fn wakeup_rows(report: &mut Report, backend: &str, outcomes: &[Outcome]) {
    for (on_winner, whose) in [(true, "new leader's"), (false, "other standby's")] {
        let took: Vec<Duration> = outcomes
            .iter()
            .flat_map(|o| &o.wakeups)
            .filter(|(_, won)| *won == on_winner)
            .map(|(d, _)| *d)
            .collect();
        if took.is_empty() {
            continue;
        }
        let s = Samples::new(took);
        report.add(
            Row::new(
                Section::LeaderEndpoint,
                format!(
                    "long-poll wake-up after SIGTERM, on the {whose} sidecar, min / median / p99"
                ),
                backend,
            )
            .value(spread(&s))
            .samples(s.len())
            .compare("from the signal to GET /leader?wait answering with the new leader")
            .spread(&s),
        );
    }
}

fn spread(s: &Samples) -> String {
    format!(
        "{} / {} / {}",
        human(s.min()),
        human(s.pct(0.5)),
        human(s.pct(0.99))
    )
}

/// One trial: stop the leader, time the takeover, bring the stopped sidecar
/// back and wait until the group has settled again.
fn trial(group: &Group, sidecars: &mut [Sidecar], stop: Stop, bound: Duration) -> Outcome {
    let leader = settle(sidecars);
    let old = sidecars[leader].term();
    let timeout = bound + Duration::from_secs(15);
    let standbys: Vec<u16> = sidecars
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s.port)
        .collect();
    let watchers: Vec<JoinHandle<Instant>> = standbys
        .iter()
        .map(|&port| std::thread::spawn(move || watch(port, old, timeout)))
        .collect();

    let chosen = (leader + 2) % 3;
    if stop == Stop::HandoverTo {
        // A member back from its resign holdoff may not have queued again
        // yet (ZooKeeper: its latch node is made at its next campaign).
        let listed = Instant::now();
        while !request(sidecars[leader].port, "GET", "/members", &[], b"").is_ok_and(|r| {
            r.json()["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == sidecars[chosen].id.as_str()))
        }) {
            assert!(
                listed.elapsed() < Duration::from_secs(15),
                "{} never listed among the members",
                sidecars[chosen].id
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let sent = Instant::now();
    match stop {
        Stop::Kill9 => sidecars[leader].kill9(),
        Stop::Term => sidecars[leader].signal(libc::SIGTERM),
        Stop::Resign => {
            let path = format!("/leader/resign?holdoff={}ms", RESIGN_HOLDOFF.as_millis());
            let r = request(sidecars[leader].port, "POST", &path, &[], b"").expect("POST resign");
            assert_eq!(r.status, 200, "resign failed: {}", r.text());
        }
        Stop::HandoverTo => {
            let path = format!(
                "/leader/handover?to={}&holdoff={}ms",
                sidecars[chosen].id,
                RESIGN_HOLDOFF.as_millis()
            );
            let r = request(sidecars[leader].port, "POST", &path, &[], b"").expect("POST handover");
            assert_eq!(r.status, 200, "handover failed: {}", r.text());
        }
    }
    let (takeover, winner) = until_one_leads(&standbys, sent, timeout);
    if stop == Stop::HandoverTo {
        assert_eq!(
            winner, sidecars[chosen].port,
            "the handover to {} was taken by another member",
            sidecars[chosen].id
        );
    }
    let wakeups = watchers
        .into_iter()
        .zip(&standbys)
        .map(|(w, &port)| {
            let at = w.join().expect("a long-poll watcher panicked");
            (at.saturating_duration_since(sent), port == winner)
        })
        .collect();

    let id = sidecars[leader].id.clone();
    match stop {
        Stop::Kill9 => sidecars[leader] = group.start(&id),
        Stop::Term => {
            let status = sidecars[leader].wait_exit(Duration::from_secs(15));
            assert!(status.success(), "{id} exited with {status} after SIGTERM");
            sidecars[leader] = group.start(&id);
        }
        Stop::Resign | Stop::HandoverTo => {
            std::thread::sleep(RESIGN_HOLDOFF.saturating_sub(sent.elapsed()))
        }
    }
    Outcome { takeover, wakeups }
}

/// Polls every millisecond, since the graceful figures are tens of
/// milliseconds and the harness's 10 ms poll would blur them. Returns the
/// time and the port of the sidecar that took over.
fn until_one_leads(ports: &[u16], since: Instant, timeout: Duration) -> (Duration, u16) {
    loop {
        for &port in ports {
            if request(port, "GET", "/leader/self", &[], b"").is_ok_and(|r| r.status == 200) {
                return (since.elapsed(), port);
            }
        }
        assert!(
            since.elapsed() < timeout,
            "no standby took over within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a client waiting for a new leader does: long-poll with the term it
/// knows, and poll again from whatever interim answer it gets (no leader, or
/// still the old term) until a leader with another term is named. On the
/// sidecar that wins, that can be a moment before it reports itself leading:
/// it may learn of its own new term through the backend first.
fn watch(port: u16, old: u64, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    let mut known = old.to_string();
    loop {
        let path = format!("/leader?wait=10s&known={known}");
        let r = request_within(port, "GET", &path, &[], b"", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("long poll on port {port}: {e}"));
        let at = Instant::now();
        assert_eq!(
            r.status,
            200,
            "long poll answered {}: {}",
            r.status,
            r.text()
        );
        let v = r.json();
        match v["term"].as_u64() {
            Some(t) if t != old && !v["leader"].is_null() => return at,
            Some(t) => known = t.to_string(),
            None => known = "none".into(),
        }
        assert!(
            at < deadline,
            "no new leader named on port {port} within {timeout:?}"
        );
    }
}
