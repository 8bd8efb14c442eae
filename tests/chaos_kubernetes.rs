//! Jepsen-lite on the Kubernetes backend: three sidecars (five with
//! `CHAOS_SIDECARS=5`) against the in-repo test API server
//! (`tests/support/kube_api.rs`: no real one can be installed here), each
//! sidecar with a token of its own and reaching the server through a TCP
//! proxy of its own (`tests/support/proxy.rs`), so that one sidecar's
//! connection can be cut while the others keep theirs.
//!
//! On top of the sidecar and plugin faults of every schedule
//! (`tests/support/schedule.rs`; the plugin is the real Kubernetes backend
//! built against the fault-injecting SDK), the nemesis pauses the API server
//! (nobody gets an answer), silences one sidecar at the server (its requests
//! hang and its open watches go quiet while its connections stay up, as a
//! partition looks from the server's side), and cuts one sidecar off at its
//! proxy, blackholed or reset. The overlap checker and the writers check the
//! same claims as on the other backends.
//!
//! The CI run lasts 25 s; `CHAOS_SECS` and `CHAOS_SEED` as in `tests/chaos.rs`.

#[path = "support/kube_api.rs"]
mod kube_api;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kube_api::{Access, KubeApiServer};
use support::cuts::{self, Cuts};
use support::proxy::Proxy;
use support::schedule::{self, Backend, Rng, Settings};
use support::*;

const NAMESPACE: &str = "chaos";

struct KubernetesBackend {
    server: KubeApiServer,
    /// Each sidecar's one proxy to the API server, its only way there.
    cuts: Cuts,
    /// When a pause of the server ends.
    paused: Option<Instant>,
    /// The sidecar silenced at the server, and until when.
    silenced: Option<(usize, Instant)>,
}

/// Sidecar `node`'s token (the schedule names sidecars s1, s2, ...).
fn token(node: usize) -> String {
    format!("s{}", node + 1)
}

impl KubernetesBackend {
    fn new(sidecars: usize) -> Self {
        let tokens: Vec<String> = (0..sidecars).map(token).collect();
        let grants: Vec<(&str, Access)> = tokens
            .iter()
            .map(|t| (t.as_str(), Access::ReadWrite))
            .collect();
        let server = KubeApiServer::start(&grants, &[NAMESPACE]);
        let proxies = (0..sidecars)
            .map(|_| vec![Proxy::start(server.port)])
            .collect();
        KubernetesBackend {
            cuts: Cuts::new(proxies, "the API server"),
            server,
            paused: None,
            silenced: None,
        }
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn config(&self, node: usize, id: &str, port: u16, data: &Path) -> String {
        let token = token(node);
        let server = format!("http://127.0.0.1:{}", self.cuts.proxies[node][0].port());
        let kubeconfig = data
            .parent()
            .unwrap_or(data)
            .join(format!("kubeconfig-{id}"));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: chaos\n  cluster:\n    server: {server}\nusers:\n- name: {token}\n  user:\n    token: {token}\ncontexts:\n- name: chaos\n  context:\n    cluster: chaos\n    user: {token}\n    namespace: {NAMESPACE}\ncurrent-context: chaos\n"
            ),
        )
        .expect("write the kubeconfig");
        schedule::chaos_yaml(id, port, "fixture_faults_kubernetes", data)
            .settings("cluster-id: chaos")
            .capability(&format!(
                "kubernetes: {{kubeconfig: '{}'}}",
                kubeconfig.display()
            ))
            .build()
            + support::workload::CONFIG_EXTRA
    }

    /// A candidate takes over after a lease of observed silence.
    fn takeover_after(&self) -> Duration {
        LEASE
    }

    fn kinds(&self) -> &'static [&'static str] {
        &["api pause", "api silence", cuts::KINDS[0], cuts::KINDS[1]]
    }

    fn inject(&mut self, kind: &str, target: usize, rng: &mut Rng) -> Option<String> {
        let now = Instant::now();
        match kind {
            "api pause" => {
                if self.paused.is_some() {
                    return None;
                }
                let outage = rng.millis(500, 3000);
                self.server.pause();
                self.paused = Some(now + outage);
                Some(format!("API server paused for {outage:?}"))
            }
            "api silence" => {
                if self.silenced.is_some() {
                    return None;
                }
                let outage = rng.millis(500, 4000);
                self.server.cut_off(&token(target));
                self.silenced = Some((target, now + outage));
                Some(format!(
                    "s{} silenced at the API server for {outage:?}",
                    target + 1
                ))
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
            said.push("API server resumed".into());
        }
        if let Some((node, until)) = self.silenced
            && now >= until
        {
            self.server.restore(&token(node));
            self.silenced = None;
            said.push(format!("s{} heard again at the API server", node + 1));
        }
        said
    }

    fn heal(&mut self) -> Vec<String> {
        self.cuts.heal();
        if self.paused.take().is_some() {
            self.server.resume();
        }
        if let Some((node, _)) = self.silenced.take() {
            self.server.restore(&token(node));
        }
        vec!["API server healed: serving everyone, no cuts".into()]
    }
}

#[test]
fn no_split_brain_and_no_lost_or_deposed_writes_on_the_kubernetes_backend() {
    let settings = Settings::from_env(25);
    let mut backend = KubernetesBackend::new(settings.sidecars);
    schedule::run(&mut backend, &settings);
}
