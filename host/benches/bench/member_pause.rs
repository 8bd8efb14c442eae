//! ZooKeeper only: the ensemble member that the leader's session is
//! connected to is paused (SIGSTOP), and the clock runs from the pause until
//! some sidecar answers `GET /leader/self` with 200 again (zero when the
//! leader never stopped). Runs on a 3-member ensemble of its own (the rest
//! of the benchmark uses a standalone server); the rounds are those of
//! `tests/support/zk_member_pause.rs`, which the test suite runs for safety.
//!
//! The figure depends on what the paused member was: a follower's clients
//! move to another member while the ensemble goes on serving; a paused
//! ensemble leader stops every member from serving until the others notice
//! (syncLimit) and elect a new one, a floor no client can go below, so the
//! rows are split by role and the leader row says when the ensemble served
//! again.

use std::time::Duration;

use crate::group::progress;
use crate::report::{Report, Row, Samples, Section, human, ms};
use crate::zk::Mode;
use crate::zk_member_pause::{Rig, Round, SESSION};

const METRIC: &str = "ZooKeeper member of the leader paused: no-leader time, min / median / p99";

pub fn run(report: &mut Report, trials: usize) {
    progress(&format!(
        "zookeeper: the member under the leader's session paused, {trials} rounds on a 3-member ensemble (about 7 s each)"
    ));
    let mut rig = Rig::start();
    let rounds: Vec<Round> = (1..=trials)
        .map(|i| {
            let r = rig.round();
            progress(&format!("  round {i}: {}", r.summary()));
            r
        })
        .collect();
    let verdict = rig.finish();
    let problems = verdict.problems();
    assert!(
        problems.is_empty(),
        "split brain while pausing ZooKeeper members:\n{}",
        problems.join("\n")
    );
    let target = format!("<= session timeout {}", human(SESSION));
    let all = Samples::new(rounds.iter().map(|r| r.no_leader).collect());
    report.add(
        Row::new(Section::Failover, METRIC, "zookeeper, 3 members")
            .value(spread(&all))
            .target(target.clone(), all.pct(0.99) <= SESSION)
            .samples(all.len())
            .compare("Flink's own ZooKeeper HA: not measured")
            .spread(&all),
    );
    for (role, what) in [
        (Mode::Follower, "paused member a follower"),
        (Mode::Leader, "paused member the ensemble's leader"),
    ] {
        let of: Vec<&Round> = rounds.iter().filter(|r| r.role == role).collect();
        if of.is_empty() {
            continue;
        }
        let s = Samples::new(of.iter().map(|r| r.no_leader).collect());
        let mut row = Row::new(
            Section::Failover,
            format!("{METRIC} ({what})"),
            "zookeeper, 3 members",
        )
        .value(spread(&s))
        .target(target.clone(), s.pct(0.99) <= SESSION)
        .samples(s.len())
        .spread(&s);
        if role == Mode::Leader {
            let back = Samples::new(of.iter().map(|r| r.ensemble_back).collect());
            row = row
                .compare(format!(
                    "the ensemble itself served again after {} (median; syncLimit 2 s + election)",
                    human(back.pct(0.5))
                ))
                .figure("ensemble_back_median_ms", ms(back.pct(0.5)));
        } else {
            row = row.compare("the other members go on serving");
        }
        report.add(row);
    }
}

fn spread(s: &Samples) -> String {
    if s.max() == Duration::ZERO {
        return "no gap".into();
    }
    format!(
        "{} / {} / {}",
        human(s.min()),
        human(s.pct(0.5)),
        human(s.pct(0.99))
    )
}
