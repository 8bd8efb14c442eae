//! Where things live, in the layout Flink's own ZooKeeper HA services use:
//!
//! ```text
//! <root>/<cluster-id>/leader/latch/_c_<uuid>-latch-<seq>     one per candidate (ephemeral-sequential)
//! <root>/<cluster-id>/leader/<component>/connection_info     the leader's address (ephemeral)
//! <root>/<cluster-id>/<key>                                  state: jobgraphs/<id>, jobs/<id>/checkpoints/<%019d>, ...
//! ```

use ha_sidecar_sdk::{Failure, invalid};

pub struct Paths {
    pub base: String,
}

/// Marks a znode that holds a value (as opposed to a parent created only to
/// hold children), so that `list` and `get` can tell them apart.
pub const VALUE_TAG: u8 = 1;

impl Paths {
    pub fn new(root: &str, cluster_id: &str) -> Result<Self, Failure> {
        let root = root.trim_end_matches('/');
        let cluster = cluster_id.trim_matches('/');
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if !root.starts_with('/') || !ok(root) {
            return Err(invalid(format!(
                "plugin.settings.root: {root:?} must be an absolute ZooKeeper path such as /flink"
            )));
        }
        // No '/': a cluster-id with one would name a node inside another
        // cluster's tree.
        if !ok(cluster) || cluster.contains('/') {
            return Err(invalid(format!(
                "plugin.settings.cluster-id: {cluster_id:?} must be a name of A-Z a-z 0-9 - _ . (no /)"
            )));
        }
        Ok(Self {
            base: format!("{root}/{cluster}"),
        })
    }

    pub fn latch_dir(&self) -> String {
        format!("{}/leader/latch", self.base)
    }

    pub fn connection_info(&self, component: &str) -> String {
        format!("{}/leader/{component}/connection_info", self.base)
    }

    /// The znode of a state key; `leader/` is the election's.
    pub fn key(&self, key: &str) -> Result<String, Failure> {
        if key == "leader" || key.starts_with("leader/") {
            return Err(invalid(format!(
                "key {key:?}: keys under leader/ are reserved for the election"
            )));
        }
        Ok(format!("{}/{key}", self.base))
    }
}

pub fn parent(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
}

/// A latch node's fencing token: the sequence number ZooKeeper appended to
/// its name, plus one (sequences start at 0; tokens start at 1, so 0 never
/// names a term).
pub fn sequence(name: &str) -> Option<u64> {
    let digits = name.rsplit("-latch-").next()?;
    (digits.len() == 10)
        .then(|| digits.parse::<u64>().ok().map(|s| s + 1))
        .flatten()
}
