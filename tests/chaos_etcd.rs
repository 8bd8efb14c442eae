//! Jepsen-lite on the etcd backend: three sidecars (five with
//! `CHAOS_SIDECARS=5`) against a real etcd, each sidecar reaching it through
//! a TCP proxy of its own (`tests/support/proxy.rs`), so that one sidecar's
//! connection can be cut while the others keep theirs.
//!
//! On top of the sidecar and plugin faults of every schedule
//! (`tests/support/schedule.rs`; the plugin is the real etcd backend built
//! against the fault-injecting SDK), the nemesis pauses etcd itself (no
//! sidecar can reach the store) and cuts one sidecar off from it, blackholed
//! (requests hang until the call's deadline) or reset. The overlap checker
//! and the writers check the same claims as on the other backends.
//!
//! The CI run lasts 25 s; `CHAOS_SECS` and `CHAOS_SEED` as in `tests/chaos.rs`.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use etcd::Etcd;
use support::cuts::{self, Cuts};
use support::proxy::Proxy;
use support::schedule::{self, Backend, Rng, Settings};
use support::*;

struct EtcdBackend {
    server: Etcd,
    /// Each sidecar's one proxy to etcd, its only way there.
    cuts: Cuts,
    /// When a pause of etcd ends.
    paused: Option<Instant>,
}

impl EtcdBackend {
    fn new(sidecars: usize) -> Self {
        let server = Etcd::start();
        let port: u16 = server
            .endpoint()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the endpoint ends with a port");
        let proxies = (0..sidecars).map(|_| vec![Proxy::start(port)]).collect();
        EtcdBackend {
            cuts: Cuts::new(proxies, "etcd"),
            server,
            paused: None,
        }
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn config(&self, node: usize, id: &str, port: u16, data: &Path) -> String {
        let endpoint = format!("http://127.0.0.1:{}", self.cuts.proxies[node][0].port());
        schedule::chaos_yaml(id, port, "fixture_faults_etcd", data)
            .settings(&format!(
                "endpoints: '{endpoint}', cluster-id: chaos, request-timeout-ms: '1000'"
            ))
            .capability(&format!("outgoing-http: {{endpoints: ['{endpoint}']}}"))
            .build()
            + support::workload::CONFIG_EXTRA
    }

    fn takeover_after(&self) -> Duration {
        LEASE
    }

    fn kinds(&self) -> &'static [&'static str] {
        &["etcd pause", cuts::KINDS[0], cuts::KINDS[1]]
    }

    fn inject(&mut self, kind: &str, target: usize, rng: &mut Rng) -> Option<String> {
        let now = Instant::now();
        match kind {
            "etcd pause" => {
                if self.paused.is_some() {
                    return None;
                }
                let outage = rng.millis(500, 3000);
                self.server.pause();
                self.paused = Some(now + outage);
                Some(format!("etcd paused for {outage:?}"))
            }
            cut => self.cuts.inject(cut, target, rng),
        }
    }

    fn tick(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut said = self.cuts.tick();
        if self.paused.is_some_and(|until| now >= until) {
            self.server.resume();
            self.paused = None;
            said.push("etcd resumed".into());
        }
        said
    }

    fn heal(&mut self) -> Vec<String> {
        self.cuts.heal();
        if self.paused.take().is_some() {
            self.server.resume();
        }
        vec!["etcd healed: serving, no cuts".into()]
    }
}

#[test]
fn no_split_brain_and_no_lost_or_deposed_writes_on_the_etcd_backend() {
    let settings = Settings::from_env(25);
    let mut backend = EtcdBackend::new(settings.sidecars);
    schedule::run(&mut backend, &settings);
}
