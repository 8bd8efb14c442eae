//! Sidecar processes of one cluster on one backend: their configs, logs and
//! (for the file backend) the shared directory live in one temporary
//! directory, and a namespace of their own keeps them apart from every other
//! group on the same service.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::backends::Backend;
use crate::support::{Cluster, Sidecar, free_port, request, shared_cache_dir, wait_for};

/// How long sidecars may take to start, elect and agree on a loaded machine.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Group<'a> {
    backend: &'a dyn Backend,
    cluster: Cluster,
    ns: String,
}

impl<'a> Group<'a> {
    pub fn new(backend: &'a dyn Backend) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        Group {
            backend,
            cluster: Cluster::new(),
            ns: format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }

    pub fn path(&self) -> &Path {
        self.cluster.path()
    }

    /// A whole sidecar config; large values go to the group's storage dir.
    pub fn yaml(&self, id: &str, port: u16, cache_dir: &Path) -> String {
        format!(
            "member: {{id: {id}, address: 'http://{id}.example:8081'}}\nhttp: {{listen: '127.0.0.1:{port}'}}\n{}storage: {{dir: 'file://{}'}}\n",
            self.backend.config(self.path(), &self.ns, cache_dir),
            self.path().join("storage").display(),
        )
    }

    pub fn write_config(&self, id: &str, port: u16, cache_dir: &Path) -> PathBuf {
        self.cluster
            .write_config(id, &self.yaml(id, port, cache_dir))
    }

    pub fn log(&self, id: &str) -> PathBuf {
        self.path().join(format!("{id}.log"))
    }

    /// Starts a sidecar with the shared (warm) compile cache and waits until
    /// it serves HTTP.
    pub fn start(&self, id: &str) -> Sidecar {
        let port = free_port();
        let cfg = self.write_config(id, port, &shared_cache_dir());
        Sidecar::start(id, port, &cfg, &self.log(id))
    }

    pub fn start_three(&self) -> Vec<Sidecar> {
        ["s1", "s2", "s3"].iter().map(|id| self.start(id)).collect()
    }
}

/// Waits until every sidecar is ready, exactly one leads, and all report
/// the same leader and term: every standby has seen the current leader, so
/// the next trial starts from the same place as the last.
pub fn settle(sidecars: &[Sidecar]) -> usize {
    wait_for("the group to settle on one leader", SETTLE_TIMEOUT, || {
        let mut leader = None;
        let mut seen = None;
        for (i, s) in sidecars.iter().enumerate() {
            if request(s.port, "GET", "/readyz", &[], b"").map_or(true, |r| r.status != 200) {
                return None;
            }
            let v = s.get("/leader").ok()?.json();
            let term = v["term"].as_u64()?;
            if *seen.get_or_insert(term) != term {
                return None;
            }
            if v["leading"] == true {
                if leader.is_some() {
                    return None;
                }
                leader = Some(i);
            }
        }
        leader
    })
}

pub fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}
