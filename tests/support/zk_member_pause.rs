//! A ZooKeeper member fails under the leader: three sidecars on a real
//! 3-member ensemble, and the member that the *leader's* session is
//! connected to is paused (SIGSTOP: its sockets stay open, it answers
//! nothing, as in a long GC pause or a frozen VM). How long is the cluster
//! without a leader, and where does the time go?
//!
//! Shared by `tests/zookeeper_member_pause.rs`, which checks that no two
//! sidecars ever claim at once (the overlap checker watches every round),
//! and by the benchmark, which reports the no-leader time. Include it with
//! `#[path = "support/zk_member_pause.rs"] mod zk_member_pause;` next to
//! `mod support;` and `mod zk;` at the crate root.
//!
//! One round: settle (one leader, every member serving), find the leader's
//! session (the owner of the lowest latch node) and the member that holds
//! its connection (`cons`), pause that member, and watch every sidecar's
//! `GET /leader/self` until one leads again; then resume the member and let
//! the ensemble heal. The no-leader time runs from the pause to the end of
//! the first "I lead" answer after the old leader's first "I do not lead";
//! a leader that never said "I do not lead" kept leading without a gap (0).
//! A timeline of the sidecars' own log lines says where the time went
//! (`PAUSE_LOG=all` shows every line of the window, not only milestones).

#![allow(dead_code)] // the test prints the timeline, the benchmark does not

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::overlap::{self, History, Kind, Verdict, Watchers};
use crate::support::{
    Cluster, Sidecar, SidecarYaml, agreed_leader, free_port, wait_for, zookeeper_grant,
};
use crate::zk::{Ensemble, Mode, ZooKeeper};

/// The session timeout the sidecars ask for (the servers grant 0.4 to 4 s).
pub const SESSION: Duration = Duration::from_secs(2);
/// `renew-deadline` of the test timing (`support::TIMING`).
const RENEW_DEADLINE: Duration = Duration::from_millis(1500);
const CLUSTER_ID: &str = "member-pause";
/// A round without a leader for this long fails: something is broken.
const GIVE_UP: Duration = Duration::from_secs(30);
/// A leader that has not said "I do not lead" this long after the pause
/// kept its leadership through the member's loss.
const NO_GAP_AFTER: Duration = Duration::from_secs(8);
/// A new leadership counts once it has lasted this long (a leader that
/// claims and falls again at once has not restored anything).
const STABLE_FOR: Duration = Duration::from_secs(1);
/// Log lines that mark a step of the recovery.
const MILESTONES: &[&str] = &[
    "enter state",
    "fails to establish session",
    "succeeds to establish session",
    "ZooKeeper connection lost",
    "ZooKeeper connection restored",
    "ZooKeeper session ended",
    "session established",
    "reattach",
    "stepped down",
    "became leader",
    "resumed",
    "campaign failed",
];

/// What one round measured.
pub struct Round {
    /// The paused member and what it was in the ensemble when paused.
    pub member: usize,
    pub role: Mode,
    pub old_leader: usize,
    pub old_term: u64,
    /// Who led once leadership was back, with which term.
    pub new_leader: usize,
    pub new_term: u64,
    /// From the pause until some sidecar said "I lead" again (zero: the
    /// leader never stopped saying so).
    pub no_leader: Duration,
    /// From the pause until the other members had elected a new ensemble
    /// leader (zero when the paused member was a follower: the others never
    /// stopped serving).
    pub ensemble_back: Duration,
    /// The sidecars' log lines about the recovery, as offsets from the pause.
    pub timeline: Vec<String>,
}

impl Round {
    /// One line for a test's output or the benchmark's progress.
    pub fn summary(&self) -> String {
        let how = if self.no_leader.is_zero() {
            "leadership continued without a gap".to_string()
        } else if self.new_leader == self.old_leader && self.new_term == self.old_term {
            format!(
                "s{} resumed term {} (its session survived)",
                self.old_leader + 1,
                self.old_term
            )
        } else {
            format!(
                "s{} took term {} (was s{} term {})",
                self.new_leader + 1,
                self.new_term,
                self.old_leader + 1,
                self.old_term
            )
        };
        let ensemble = if self.role == Mode::Leader {
            format!(
                " (the ensemble served again after {:.2} s)",
                self.ensemble_back.as_secs_f64()
            )
        } else {
            String::new()
        };
        format!(
            "member {} ({:?}) paused under s{}: no leader for {:.2} s{ensemble}; {how}",
            self.member,
            self.role,
            self.old_leader + 1,
            self.no_leader.as_secs_f64()
        )
    }
}

pub struct Rig {
    pub ensemble: Ensemble,
    pub sidecars: Vec<Sidecar>,
    history: Arc<History>,
    watchers: Option<Watchers>,
    /// Keeps the sidecars' configs and logs.
    _cluster: Cluster,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    /// A 3-member ensemble and three sidecars that know every member, with
    /// the overlap checker watching them from the start.
    pub fn start() -> Rig {
        let ensemble = ZooKeeper::ensemble(3);
        let cluster = Cluster::new();
        let sidecars: Vec<Sidecar> = ["s1", "s2", "s3"]
            .iter()
            .map(|id| {
                let port = free_port();
                let cfg = cluster.write_config(id, &config(id, port, &ensemble.quorum()));
                Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
            })
            .collect();
        let history = Arc::new(History::default());
        let ports: Vec<u16> = sidecars.iter().map(|s| s.port).collect();
        let watchers = Some(overlap::watch(&history, &ports));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Rig {
            ensemble,
            sidecars,
            history,
            watchers,
            _cluster: cluster,
            rt,
        }
    }

    /// Pauses the member under the leader's session, waits until a leader
    /// is back (and has lasted), resumes the member and waits until the
    /// ensemble serves again.
    pub fn round(&mut self) -> Round {
        let (old_leader, old_term, member) = self.settle();
        let role = self.ensemble.mode(member).expect("the member serves");
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        self.ensemble.pause(member);
        // A paused ensemble leader stops every member from serving until the
        // others notice (syncLimit) and elect a new one: no client can do
        // anything before that.
        let mut ensemble_back = (role != Mode::Leader).then_some(Duration::ZERO);
        let outcome = loop {
            std::thread::sleep(Duration::from_millis(20));
            if ensemble_back.is_none()
                && (0..self.ensemble.len())
                    .filter(|&m| m != member)
                    .any(|m| self.ensemble.mode(m) == Some(Mode::Leader))
            {
                ensemble_back = Some(t0.elapsed());
            }
            let events = self.history.snapshot();
            match measure(&events, t0, old_leader) {
                Some(o) if o.stable_since.elapsed() >= STABLE_FOR => break o,
                None if t0.elapsed() >= NO_GAP_AFTER => {
                    break Outcome {
                        no_leader: Duration::ZERO,
                        stable_since: t0,
                        node: old_leader,
                        term: old_term,
                    };
                }
                _ => {}
            }
            assert!(
                t0.elapsed() < GIVE_UP,
                "no leader within {GIVE_UP:?} after pausing member {member} ({role:?}) under s{}\n{}",
                old_leader + 1,
                self.timeline(wall0, GIVE_UP).join("\n")
            );
        };
        let timeline = self.timeline(wall0, outcome.no_leader + Duration::from_millis(300));
        self.ensemble.resume(member);
        self.ensemble.leader();
        Round {
            ensemble_back: ensemble_back.unwrap_or(outcome.no_leader),
            member,
            role,
            old_leader,
            old_term,
            new_leader: outcome.node,
            new_term: outcome.term,
            no_leader: outcome.no_leader,
            timeline,
        }
    }

    /// Stops the watchers and checks every claim they saw: no two leaders
    /// at once, tokens that grow, one holder per term.
    pub fn finish(mut self) -> Verdict {
        if let Some(w) = self.watchers.take() {
            w.stop();
        }
        let bound = overlap::safety_bound(RENEW_DEADLINE, SESSION);
        overlap::check(&self.history.snapshot(), bound)
    }

    /// Waits for one agreed leader with every member serving; returns the
    /// leader, its term and the member its session is connected to.
    fn settle(&self) -> (usize, u64, usize) {
        wait_for("a leader on a healthy ensemble", GIVE_UP, || {
            self.ensemble.leader();
            let leader = agreed_leader(&self.sidecars);
            let term = self.sidecars[leader].term();
            let session = self.leader_session(&self.sidecars[leader].id)?;
            let member = (0..self.ensemble.len()).find(|&m| {
                self.ensemble
                    .four_letter(m, "cons")
                    .is_ok_and(|c| c.contains(&format!("sid=0x{session:x}")))
            })?;
            // Still the same leader and term now that we know where it is.
            (self.sidecars[leader].leads() && self.sidecars[leader].term() == term)
                .then_some((leader, term, member))
        })
    }

    /// The session that owns the lowest latch node, if it is `id`'s.
    fn leader_session(&self, id: &str) -> Option<i64> {
        let quorum = self.ensemble.quorum();
        let dir = format!("/flink/{CLUSTER_ID}/leader/latch");
        self.rt.block_on(async {
            let client = zookeeper_client::Client::connector()
                .with_session_timeout(Duration::from_secs(4))
                .connect(&quorum)
                .await
                .ok()?;
            let mut nodes = client.list_children(&dir).await.ok()?;
            nodes.sort_by_key(|n| n.rsplit("-latch-").next().map(str::to_owned));
            let lowest = format!("{dir}/{}", nodes.first()?);
            let (data, stat) = client.get_data(&lowest).await.ok()?;
            let holder: serde_json::Value = serde_json::from_slice(&data).ok()?;
            (holder["id"] == id).then_some(stat.ephemeral_owner)
        })
    }

    /// Every sidecar's milestone log lines from the pause on, for `span`.
    fn timeline(&self, since: SystemTime, span: Duration) -> Vec<String> {
        // `PAUSE_LOG=all`: every line, not only the milestones.
        let all = std::env::var("PAUSE_LOG").is_ok_and(|v| v == "all");
        let mut lines: Vec<(Duration, String)> = Vec::new();
        for s in &self.sidecars {
            for (at, text) in log_lines(&s.log) {
                let Ok(offset) = at.duration_since(since) else {
                    continue;
                };
                if offset <= span && (all || MILESTONES.iter().any(|m| text.contains(m))) {
                    lines.push((offset, format!("{}: {}", s.id, shorten(&text))));
                }
            }
        }
        lines.sort_by_key(|(at, _)| *at);
        lines
            .into_iter()
            .map(|(at, l)| format!("  +{:>5} ms  {l}", at.as_millis()))
            .collect()
    }
}

/// A sidecar's config: the whole ensemble as its quorum, a 2 s session.
fn config(id: &str, port: u16, quorum: &str) -> String {
    SidecarYaml::new(id, port, "ha_plugin_zookeeper")
        .settings(&format!("root: /flink, cluster-id: {CLUSTER_ID}"))
        .capability(&zookeeper_grant(quorum, SESSION))
        .build()
}

struct Outcome {
    no_leader: Duration,
    /// Since when the restored leadership has been claimed without a break.
    stable_since: Instant,
    node: usize,
    term: u64,
}

/// The gap in `events` after the pause at `t0`: it opens with the old
/// leader's first "I do not lead" and closes with the end of the first
/// "I lead" answer, from anyone, to a request sent after that. A restored
/// leader that falls again reopens the gap: only a leadership that lasts
/// closes it.
fn measure(events: &[overlap::Event], t0: Instant, old_leader: usize) -> Option<Outcome> {
    let mut after: Vec<&overlap::Event> = events
        .iter()
        .filter(|e| e.start >= t0 && e.kind != Kind::Ack)
        .collect();
    after.sort_by_key(|e| e.end);
    let mut opened = after
        .iter()
        .find(|e| e.node == old_leader && e.kind == Kind::NotLeading)?
        .end;
    loop {
        let back = after
            .iter()
            .find(|e| e.kind == Kind::Claim && e.start > opened)?;
        let fell = after
            .iter()
            .find(|e| e.node == back.node && e.kind == Kind::NotLeading && e.start > back.start);
        match fell {
            Some(e) => opened = e.end,
            None => {
                return Some(Outcome {
                    no_leader: back.end - t0,
                    stable_since: back.end,
                    node: back.node,
                    term: back.term,
                });
            }
        }
    }
}

/// A sidecar's log as (time, text) pairs; the fmt subscriber starts each
/// line with an RFC 3339 UTC timestamp.
fn log_lines(path: &PathBuf) -> Vec<(SystemTime, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(' ')?;
            let at = humantime::parse_rfc3339(stamp).ok()?;
            Some((at, rest.trim().to_string()))
        })
        .collect()
}

fn shorten(line: &str) -> String {
    const MAX: usize = 150;
    if line.chars().count() <= MAX {
        line.to_string()
    } else {
        line.chars().take(MAX).collect::<String>() + "…"
    }
}
