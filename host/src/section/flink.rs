//! Reading Flink's own HA keys from a Flink config file, so a sidecar can be
//! pointed at the `flink-conf.yaml` (1.x: flat `key: value` lines) or
//! `config.yaml` (2.x: nested YAML) the JobManager already uses. Values set
//! in the sidecar's own config win; Flink's defaults apply otherwise
//! (each key and its deprecated aliases are the constants below; the
//! ZooKeeper keys are read by the `zookeeper` capability).

use std::collections::BTreeMap;
use std::path::Path;

/// Flink's keys as flat `a.b.c` names with string values.
pub struct FlinkConfig {
    pub path: String,
    keys: BTreeMap<String, String>,
}

impl FlinkConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Self {
            path: path.display().to_string(),
            keys: parse(&text),
        })
    }

    /// The first of `names` (the key, then its deprecated aliases) that is set.
    pub fn get(&self, names: &[&str]) -> Option<(&str, &str)> {
        names.iter().find_map(|n| {
            self.keys
                .get_key_value(*n)
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }
}

/// Nested YAML is flattened with dots; a file that is not valid YAML (1.x
/// files often are not quite) is read line by line as `key: value`.
fn parse(text: &str) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(v) => flatten("", &v, &mut keys),
        Err(_) => {
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once(": ") {
                    keys.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    keys
}

fn flatten(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
    use serde_yaml::Value;
    let scalar = match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let full = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&full, v, out);
            }
            return;
        }
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                serde_yaml::to_string(i)
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return,
    };
    out.insert(prefix.to_string(), scalar);
}

pub const HA_TYPE: &[&str] = &[
    "high-availability.type",
    "high-availability",
    "recovery.mode",
];
pub const CLUSTER_ID: &[&str] = &[
    "high-availability.cluster-id",
    "high-availability.zookeeper.path.namespace",
    "recovery.zookeeper.path.namespace",
];
pub const STORAGE_DIR: &[&str] = &[
    "high-availability.storageDir",
    "high-availability.zookeeper.storageDir",
    "recovery.zookeeper.storageDir",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_nested_and_not_quite_yaml() {
        let flat = parse(
            "high-availability.type: zookeeper\nhigh-availability.zookeeper.quorum: zk1:2181,zk2:2181\n",
        );
        assert_eq!(
            flat["high-availability.zookeeper.quorum"],
            "zk1:2181,zk2:2181"
        );
        let nested = parse(
            "high-availability:\n  type: zookeeper\n  zookeeper:\n    quorum: zk1:2181\n    client:\n      session-timeout: 30 s\n",
        );
        assert_eq!(nested["high-availability.type"], "zookeeper");
        assert_eq!(
            nested["high-availability.zookeeper.client.session-timeout"],
            "30 s"
        );
        let odd = parse(
            "# comment\nenv.java.opts: -XX:+UseG1GC: x\nhigh-availability.zookeeper.quorum: zk9:2181\n\tbad: [\n",
        );
        assert_eq!(odd["high-availability.zookeeper.quorum"], "zk9:2181");
        let both = parse(
            "high-availability: zookeeper\nhigh-availability.zookeeper.quorum: zk1:2181, zk2:2181\n",
        );
        assert_eq!(
            both.get("high-availability.zookeeper.quorum")
                .map(String::as_str),
            Some("zk1:2181, zk2:2181"),
            "{both:?}"
        );
    }
}
