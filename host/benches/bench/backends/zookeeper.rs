//! The ZooKeeper backend against a real standalone ZooKeeper 3.8 (the
//! tests' harness starts it on a free loopback port, tickTime 200 ms).

use std::path::Path;
use std::time::Duration;

use zookeeper_client as zkc;

use super::{Backend, Bound, NativeStore};
use crate::report::human;
use crate::support::{TIMING, plugin};
use crate::zk::{TICK, ZooKeeper};

/// The session timeout the sidecars ask for: short, so a kill -9 trial
/// takes seconds, and well inside what the server grants (2 to 20 ticks).
const SESSION: Duration = Duration::from_secs(2);

pub struct ZooKeeperBackend {
    server: ZooKeeper,
}

impl ZooKeeperBackend {
    pub fn start() -> Self {
        eprintln!("bench: starting ZooKeeper");
        ZooKeeperBackend {
            server: ZooKeeper::standalone(),
        }
    }
}

impl Backend for ZooKeeperBackend {
    fn name(&self) -> &'static str {
        "zookeeper"
    }

    fn plugin(&self) -> &'static str {
        "ha_plugin_zookeeper"
    }

    fn config(&self, _dir: &Path, ns: &str, cache_dir: &Path) -> String {
        format!(
            "plugin:\n  path: '{}'\n  cache-dir: '{}'\n  settings: {{root: /flink, cluster-id: {ns}}}\ncapabilities:\n  zookeeper:\n    quorum: '{}'\n    client: {{session-timeout: {}ms, connection-timeout: 2s, retry-wait: 200ms, max-retry-wait: 1s, max-retry-attempts: 3}}\n{TIMING}",
            plugin(self.plugin()).display(),
            cache_dir.display(),
            self.server.quorum(),
            SESSION.as_millis(),
        )
    }

    /// A crashed client's session ends at the timeout plus up to one tick:
    /// the server expires sessions in tick-sized buckets.
    fn detection_bound(&self) -> Bound {
        Bound {
            total: SESSION + TICK,
            made_of: format!("session {} + tick {}", human(SESSION), human(TICK)),
        }
    }

    fn native(&self, _dir: &Path) -> Option<Box<dyn NativeStore>> {
        Some(Box::new(ZkStore::connect(&self.server.quorum())))
    }
}

/// One zookeeper-client session doing what the plugin's state calls do on
/// znodes of its own: a fenced write as one `multi(check, setData)` (the
/// check on an ephemeral node standing in for the leader's latch node), a
/// read as `getData`.
struct ZkStore {
    rt: tokio::runtime::Runtime,
    client: zkc::Client,
}

const NATIVE_ROOT: &str = "/bench-native";
/// Stands in for the leader's latch node that a fenced write checks.
const NATIVE_LATCH: &str = "/bench-native-latch";

impl ZkStore {
    fn connect(quorum: &str) -> Self {
        // The client's connection task runs only inside `block_on`, which is
        // fine for back-to-back calls well inside the session timeout.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let client = rt.block_on(async {
            let client = zkc::Client::connector()
                .with_session_timeout(Duration::from_secs(4))
                .connect(quorum)
                .await
                .unwrap_or_else(|e| panic!("connect to ZooKeeper at {quorum}: {e}"));
            match client.create(NATIVE_ROOT, b"", &Self::persistent()).await {
                Ok(_) | Err(zkc::Error::NodeExists) => {}
                Err(e) => panic!("create {NATIVE_ROOT}: {e}"),
            }
            let ephemeral = zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all());
            match client.create(NATIVE_LATCH, b"", &ephemeral).await {
                Ok(_) | Err(zkc::Error::NodeExists) => {}
                Err(e) => panic!("create {NATIVE_LATCH}: {e}"),
            }
            client
        });
        ZkStore { rt, client }
    }

    fn persistent() -> zkc::CreateOptions<'static> {
        zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all())
    }
}

impl NativeStore for ZkStore {
    fn describe(&self, put: bool) -> &'static str {
        if put {
            "zookeeper-client multi(check, setData)"
        } else {
            "zookeeper-client getData"
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        let path = format!("{NATIVE_ROOT}/{key}");
        self.rt.block_on(async {
            let mut multi = self.client.new_multi_writer();
            multi
                .add_check_version(NATIVE_LATCH, -1)
                .and_then(|()| multi.add_set_data(&path, value, None))
                .unwrap_or_else(|e| panic!("build multi for {path}: {e}"));
            match multi.commit().await {
                Ok(_) => {}
                Err(zkc::MultiWriteError::OperationFailed {
                    index: 1,
                    source: zkc::Error::NoNode,
                }) => {
                    self.client
                        .create(&path, value, &Self::persistent())
                        .await
                        .unwrap_or_else(|e| panic!("create {path}: {e}"));
                }
                Err(e) => panic!("setData {path}: {e}"),
            }
        })
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        let path = format!("{NATIVE_ROOT}/{key}");
        self.rt.block_on(async {
            self.client
                .get_data(&path)
                .await
                .unwrap_or_else(|e| panic!("getData {path}: {e}"))
                .0
        })
    }
}
