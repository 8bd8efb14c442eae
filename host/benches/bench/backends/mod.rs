//! The backends the benchmark runs against. Each one says how to start its
//! service (if it needs one), what a sidecar's config needs to use it, how
//! long a crashed leader can hold on (the detection bound the failover
//! figures are judged by), and how to time the backend's own operations
//! without the sidecar in between.
//!
//! Adding a backend: a module implementing [`Backend`], its name in
//! [`NAMES`] and one arm in [`start`].

mod etcd;
mod file;
mod kubernetes;
mod zookeeper;

use std::path::Path;
use std::time::Duration;

pub use file::FsStore;

/// Every backend the benchmark knows, in the order it runs them.
pub const NAMES: &[&str] = &["file", "zookeeper", "etcd", "kubernetes"];

/// Starts the named backend's service (if any); dropping the result stops it.
pub fn start(name: &str) -> Box<dyn Backend> {
    match name {
        "file" => Box::new(file::File),
        "zookeeper" => Box::new(zookeeper::ZooKeeperBackend::start()),
        "etcd" => Box::new(etcd::EtcdBackend::start()),
        "kubernetes" => Box::new(kubernetes::KubernetesBackend::start()),
        other => unreachable!("{other} is not in NAMES (the command line checks)"),
    }
}

pub trait Backend {
    fn name(&self) -> &'static str;

    /// The plugin's file name without `.wasm`.
    fn plugin(&self) -> &'static str;

    /// The `plugin:`, `capabilities:` and `timing:` parts of a sidecar's
    /// config. Sidecars given the same `dir` and `ns` take part in one
    /// election; different ones are isolated from each other.
    fn config(&self, dir: &Path, ns: &str, cache_dir: &Path) -> String;

    /// How long after a leader crashes a standby may take over at the
    /// earliest, by the backend's own failure detection.
    fn detection_bound(&self) -> Bound;

    /// The backend's own write and read, timed without the sidecar, where
    /// the bench can reach the backend directly (`dir`: scratch space).
    fn native(&self, dir: &Path) -> Option<Box<dyn NativeStore>>;
}

pub struct Bound {
    pub total: Duration,
    /// What the bound is made of, for the table (e.g. "lease 2 s").
    pub made_of: String,
}

/// A backend's raw key-value operations, as the backend's own client does
/// them; every call panics on failure (a benchmark figure over failed calls
/// would mean nothing).
pub trait NativeStore {
    /// What one put (or get) is, for the table.
    fn describe(&self, put: bool) -> &'static str;
    fn put(&mut self, key: &str, value: &[u8]);
    fn get(&mut self, key: &str) -> Vec<u8>;
}
