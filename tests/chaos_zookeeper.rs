//! Jepsen-lite on the ZooKeeper backend: three sidecars (five with
//! `CHAOS_SIDECARS=5`) against a real 3-member ensemble, each sidecar
//! reaching each member through a TCP proxy of its own
//! (`tests/support/proxy.rs`), so that one sidecar's connection can be cut
//! while the others keep theirs.
//!
//! On top of the sidecar faults of every schedule (`tests/support/schedule.rs`),
//! the nemesis kills and restarts ensemble members, pauses one (a frozen
//! ZooKeeper leader), takes the quorum away (two of three members down), and
//! cuts one sidecar off from ZooKeeper, either blackholed (connections open,
//! nothing moves) or reset. The overlap checker and the writers check the
//! same claims as on the file backend: no two leaders, tokens that grow, no
//! acknowledged write lost, no deposed write accepted.
//!
//! The CI run lasts 40 s; `CHAOS_SECS` and `CHAOS_SEED` as in `tests/chaos.rs`.

mod support;
#[path = "support/zk.rs"]
mod zk;

use std::path::Path;
use std::time::{Duration, Instant};

use support::cuts::{self, Cuts};
use support::proxy::Proxy;
use support::schedule::{self, Backend, Rng, Settings};
use support::*;
use zk::{Ensemble, ZooKeeper};

/// The session timeout the sidecars ask for (the servers allow 0.4 to 4 s):
/// a successor can take over this long after a leader's last renewal.
const SESSION: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
enum Member {
    Up,
    /// Killed; started again at the instant.
    Down(Instant),
    /// SIGSTOPped; resumed at the instant.
    Paused(Instant),
    /// Its JVM starts; up once it serves.
    Starting,
}

struct ZkBackend {
    ensemble: Ensemble,
    /// `proxies[sidecar][member]`: the only way each sidecar reaches each member.
    cuts: Cuts,
    members: Vec<Member>,
    last_look: Instant,
}

impl ZkBackend {
    fn new(sidecars: usize) -> Self {
        let ensemble = ZooKeeper::ensemble(3);
        let proxies = (0..sidecars)
            .map(|_| {
                (0..ensemble.len())
                    .map(|m| Proxy::start(ensemble.client_port(m)))
                    .collect()
            })
            .collect();
        let members = vec![Member::Up; ensemble.len()];
        ZkBackend {
            ensemble,
            cuts: Cuts::new(proxies, "ZooKeeper"),
            members,
            last_look: Instant::now(),
        }
    }

    fn all_members_up(&self) -> bool {
        self.members.iter().all(|m| matches!(m, Member::Up))
    }

    /// The member that leads the ensemble right now, if one says so.
    fn zk_leader(&self) -> Option<usize> {
        (0..self.ensemble.len()).find(|&m| self.ensemble.mode(m) == Some(zk::Mode::Leader))
    }
}

impl Backend for ZkBackend {
    fn name(&self) -> &'static str {
        "ZooKeeper"
    }

    fn config(&self, node: usize, id: &str, port: u16, data: &Path) -> String {
        let quorum: Vec<String> = self.cuts.proxies[node]
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port()))
            .collect();
        schedule::chaos_yaml(id, port, "fixture_faults_zookeeper", data)
            .settings("root: /flink, cluster-id: chaos")
            .capability(&zookeeper_grant(&quorum.join(","), SESSION))
            .build()
            + support::workload::CONFIG_EXTRA
    }

    fn takeover_after(&self) -> Duration {
        SESSION
    }

    fn kinds(&self) -> &'static [&'static str] {
        &[
            "zk member kill",
            "zk member pause",
            "zk quorum loss",
            cuts::KINDS[0],
            cuts::KINDS[1],
        ]
    }

    fn inject(&mut self, kind: &str, target: usize, rng: &mut Rng) -> Option<String> {
        let now = Instant::now();
        let n = self.ensemble.len();
        match kind {
            "zk member kill" | "zk member pause" => {
                if !self.all_members_up() {
                    return None;
                }
                // Half the time the ensemble's leader: the harder case.
                let member = match self.zk_leader() {
                    Some(l) if rng.below(2) == 0 => l,
                    _ => rng.below(n as u64) as usize,
                };
                let role = if self.ensemble.mode(member) == Some(zk::Mode::Leader) {
                    "leader"
                } else {
                    "follower"
                };
                let outage = rng.millis(1000, 4000);
                if kind == "zk member kill" {
                    self.ensemble.stop(member);
                    self.members[member] = Member::Down(now + outage);
                    Some(format!(
                        "ZooKeeper member {member} ({role}) killed for {outage:?}"
                    ))
                } else {
                    self.ensemble.pause(member);
                    self.members[member] = Member::Paused(now + outage);
                    Some(format!(
                        "ZooKeeper member {member} ({role}) paused for {outage:?}"
                    ))
                }
            }
            "zk quorum loss" => {
                if !self.all_members_up() {
                    return None;
                }
                let spared = rng.below(n as u64) as usize;
                let outage = rng.millis(2000, 5000);
                for m in (0..n).filter(|&m| m != spared) {
                    self.ensemble.stop(m);
                    self.members[m] = Member::Down(now + outage);
                }
                Some(format!(
                    "quorum lost: every ZooKeeper member but {spared} killed for {outage:?}"
                ))
            }
            cut => self.cuts.inject(cut, target, rng),
        }
    }

    fn tick(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut said = self.cuts.tick();
        // `srvr` is a round trip: look at starting members a few times a second.
        let look = now - self.last_look > Duration::from_millis(200);
        for m in 0..self.members.len() {
            match self.members[m] {
                Member::Down(at) if now >= at => {
                    self.ensemble.launch(m);
                    self.members[m] = Member::Starting;
                    said.push(format!("ZooKeeper member {m} restarting"));
                }
                Member::Paused(at) if now >= at => {
                    self.ensemble.resume(m);
                    self.members[m] = Member::Up;
                    said.push(format!("ZooKeeper member {m} resumed"));
                }
                Member::Starting if look => {
                    if let Some(mode) = self.ensemble.mode(m) {
                        self.members[m] = Member::Up;
                        said.push(format!("ZooKeeper member {m} serves as {mode:?}"));
                    }
                }
                _ => {}
            }
        }
        if look {
            self.last_look = now;
        }
        said
    }

    fn heal(&mut self) -> Vec<String> {
        self.cuts.heal();
        for m in 0..self.members.len() {
            match self.members[m] {
                Member::Down(_) => self.ensemble.launch(m),
                Member::Paused(_) => self.ensemble.resume(m),
                Member::Up | Member::Starting => {}
            }
            self.members[m] = Member::Up;
        }
        let leader = self.ensemble.leader();
        vec![format!(
            "ZooKeeper healed: every member serves, member {leader} leads; no cuts"
        )]
    }

    fn refusal_expected(&self, log: &str) -> bool {
        // Started while ZooKeeper could not be reached: it says so and exits.
        log.contains("cannot connect")
    }
}

#[test]
fn no_split_brain_and_no_lost_or_deposed_writes_on_the_zookeeper_backend() {
    let settings = Settings::from_env(40);
    let mut backend = ZkBackend::new(settings.sidecars);
    schedule::run(&mut backend, &settings);
}
