//! The Kubernetes backend against the in-repo test API server
//! (`tests/support/kube_api.rs`): no real API server can run on these
//! machines, so its figures show the sidecar and the plugin, not a cluster's
//! API server and etcd (which add their own latency, typically milliseconds).
//! `BENCH_KUBE_LATENCY_MS` adds that latency to every request (e.g. 5 for a
//! nearby API server on a fast etcd), to see how the round trips add up.

use std::path::Path;

use super::{Backend, Bound, NativeStore};
use crate::kube_api::{Access, KubeApiServer};
use crate::report::human;
use crate::support::{LEASE, TIMING, plugin};

const NAMESPACE: &str = "bench";
const TOKEN: &str = "bench";

pub struct KubernetesBackend {
    server: KubeApiServer,
}

impl KubernetesBackend {
    pub fn start() -> Self {
        eprintln!("bench: starting the test API server");
        let server = KubeApiServer::start(&[(TOKEN, Access::ReadWrite)], &[NAMESPACE]);
        if let Some(ms) = std::env::var("BENCH_KUBE_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            eprintln!("bench: the test API server answers every request {ms} ms late");
            server.set_latency(std::time::Duration::from_millis(ms));
        }
        KubernetesBackend { server }
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn plugin(&self) -> &'static str {
        "ha_plugin_kubernetes"
    }

    fn config(&self, dir: &Path, ns: &str, cache_dir: &Path) -> String {
        let kubeconfig = self.server.kubeconfig(dir, TOKEN, NAMESPACE);
        format!(
            "plugin:\n  path: '{}'\n  cache-dir: '{}'\n  settings: {{cluster-id: {ns}}}\ncapabilities:\n  kubernetes: {{kubeconfig: '{}'}}\n{TIMING}",
            plugin(self.plugin()).display(),
            cache_dir.display(),
            kubeconfig.display(),
        )
    }

    /// A lease store: a standby waits out a full lease of observed silence.
    fn detection_bound(&self) -> Bound {
        Bound {
            total: LEASE,
            made_of: format!("lease {}", human(LEASE)),
        }
    }

    /// The test server's own speed says nothing about a real API server.
    fn native(&self, _dir: &Path) -> Option<Box<dyn NativeStore>> {
        None
    }
}
