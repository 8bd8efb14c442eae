//! The etcd backend against a real etcd 3.4 (the tests' harness starts it on
//! free loopback ports). The plugin reaches it through the host's outgoing
//! HTTP, one connection per request, as the native figures below do too.

use std::path::Path;

use super::{Backend, Bound, NativeStore};
use crate::etcd::{Etcd, EtcdClient};
use crate::report::human;
use crate::support::{LEASE, TIMING, plugin};

pub struct EtcdBackend {
    server: Etcd,
}

impl EtcdBackend {
    pub fn start() -> Self {
        eprintln!("bench: starting etcd");
        EtcdBackend {
            server: Etcd::start(),
        }
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn plugin(&self) -> &'static str {
        "ha_plugin_etcd"
    }

    fn config(&self, _dir: &Path, ns: &str, cache_dir: &Path) -> String {
        let endpoint = self.server.endpoint();
        format!(
            "plugin:\n  path: '{}'\n  cache-dir: '{}'\n  settings: {{endpoints: '{endpoint}', cluster-id: {ns}}}\ncapabilities:\n  outgoing-http: {{endpoints: ['{endpoint}']}}\n{TIMING}",
            plugin(self.plugin()).display(),
            cache_dir.display(),
        )
    }

    /// A lease store: a standby waits out a full lease of observed silence.
    fn detection_bound(&self) -> Bound {
        Bound {
            total: LEASE,
            made_of: format!("lease {}", human(LEASE)),
        }
    }

    fn native(&self, _dir: &Path) -> Option<Box<dyn NativeStore>> {
        Some(Box::new(self.server.client()))
    }
}

impl NativeStore for EtcdClient {
    fn describe(&self, put: bool) -> &'static str {
        if put {
            "etcd /v3/kv/put (JSON gateway)"
        } else {
            "etcd /v3/kv/range (JSON gateway)"
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        EtcdClient::put(self, &format!("/bench-native/{key}"), value);
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        EtcdClient::get(self, &format!("/bench-native/{key}"))
            .unwrap_or_else(|| panic!("etcd has no /bench-native/{key}"))
    }
}
