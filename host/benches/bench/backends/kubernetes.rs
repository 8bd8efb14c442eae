//! The Kubernetes backend against the in-repo test API server
//! (`tests/support/kube_api.rs`): no real API server can run on these
//! machines, so its figures show the sidecar and the plugin, not a cluster's
//! API server and etcd (which add their own latency, typically milliseconds).

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
        KubernetesBackend {
            server: KubeApiServer::start(&[(TOKEN, Access::ReadWrite)], &[NAMESPACE]),
        }
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
