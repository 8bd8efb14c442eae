//! The one ConfigMap that holds a cluster's leader record and state, read
//! and written through the host's `kubernetes` capability. Every write is a
//! replace at the resourceVersion it was based on, so two writers can never
//! both win: the second gets `Conflict` and reads again.

use std::time::Duration;

use ha_sidecar_sdk::Failure;
use ha_sidecar_sdk::kubernetes::{self as kube, KubeError, ObjectKind};
use serde_json::{Map, Value, json};

/// Flink's labels on its HA ConfigMaps (Constants.java), so tools that
/// look for them (and `kubectl get cm -l configmap-type=high-availability`) find ours.
const LABEL_TYPE: &str = "flink-native-kubernetes";
const LABEL_CONFIGMAP_TYPE: &str = "high-availability";

pub fn configmaps() -> ObjectKind {
    ObjectKind {
        api_version: "v1".into(),
        plural: "configmaps".into(),
    }
}

/// The API error as a contract failure. `Conflict` and `NotFound` are
/// handled by the callers before this; anything else is worth a retry
/// except a request the server calls invalid.
pub fn failure(what: &str, e: KubeError) -> Failure {
    match e {
        KubeError::Invalid(m) => Failure::Invalid(format!("{what}: {m}")),
        KubeError::Forbidden(m) => Failure::Unavailable(format!(
            "{what}: {m} ({} needs get, create, update and watch on configmaps in this namespace; see examples/kubernetes/rbac.yaml)",
            subject(&m)
        )),
        KubeError::NotFound => Failure::Unavailable(format!("{what}: not found")),
        KubeError::Conflict(m)
        | KubeError::AlreadyExists(m)
        | KubeError::Gone(m)
        | KubeError::Unavailable(m) => Failure::Unavailable(format!("{what}: {m}")),
    }
}

/// Who the API server says was refused, from its RBAC message (`... User
/// "system:serviceaccount:flink:ha-sidecar" cannot get ...`): a service
/// account by name and namespace, or a user as named. A refusal that names
/// nobody (401: the credentials were not accepted) says so.
pub fn subject(message: &str) -> String {
    let named = message
        .split_once("User \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(user, _)| user);
    match named {
        Some(user) => match user
            .strip_prefix("system:serviceaccount:")
            .and_then(|sa| sa.split_once(':'))
        {
            Some((ns, name)) => format!("the service account {name:?} of namespace {ns:?}"),
            None => format!("the user {user:?}"),
        },
        None => "the credentials the sidecar uses (its kubeconfig or its service account token), which the API server did not accept,".into(),
    }
}

/// A ConfigMap as read, with its resourceVersion.
#[derive(Clone, Debug)]
pub struct ConfigMap {
    pub json: Value,
    pub resource_version: String,
}

impl ConfigMap {
    fn parse(text: &str) -> Result<Self, Failure> {
        let json: Value = serde_json::from_str(text).map_err(|e| {
            Failure::Unavailable(format!(
                "the API server sent a ConfigMap that is not JSON: {e}"
            ))
        })?;
        let resource_version = json["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            json,
            resource_version,
        })
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.json["metadata"]["annotations"][key].as_str()
    }

    pub fn set_annotation(&mut self, key: &str, value: Option<String>) {
        set_entry(&mut self.json["metadata"], "annotations", key, value);
    }

    pub fn data(&self) -> Option<&Map<String, Value>> {
        self.json["data"].as_object()
    }

    pub fn datum(&self, key: &str) -> Option<&str> {
        self.json["data"][key].as_str()
    }

    pub fn set_datum(&mut self, key: &str, value: Option<String>) {
        set_entry(&mut self.json, "data", key, value);
    }

    /// Bytes of `data` and `binaryData` as the API server counts them
    /// against its 1 MiB limit (keys and values).
    pub fn data_size(&self) -> usize {
        ["data", "binaryData"]
            .iter()
            .filter_map(|f| self.json[*f].as_object())
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum()
    }
}

/// Sets or removes `parent[field][key]`, creating the map when needed.
fn set_entry(parent: &mut Value, field: &str, key: &str, value: Option<String>) {
    if !parent[field].is_object() {
        if value.is_none() {
            return;
        }
        parent[field] = json!({});
    }
    let map = parent[field].as_object_mut().expect("an object");
    match value {
        Some(v) => {
            map.insert(key.into(), Value::String(v));
        }
        None => {
            map.remove(key);
        }
    }
}

/// Outcome of a conditional write.
pub enum Written {
    /// Written; the object as the API server stored it, if its answer parsed.
    Done(Option<ConfigMap>),
    /// Someone else changed (or deleted, or created) the object first: read again.
    Raced,
}

pub struct Object {
    pub name: String,
    cluster_id: String,
}

impl Object {
    pub fn new(cluster_id: &str) -> Self {
        Self {
            // Flink's name for the ConfigMap of leader records (since 1.15).
            name: format!("{cluster_id}-cluster-config-map"),
            cluster_id: cluster_id.into(),
        }
    }

    pub fn get(&self) -> Result<Option<ConfigMap>, Failure> {
        match kube::get(&configmaps(), &self.name) {
            Ok(Some(text)) => ConfigMap::parse(&text).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(failure(&format!("read configmap {}", self.name), e)),
        }
    }

    /// An empty ConfigMap of ours, to fill and then `create`.
    pub fn blank(&self) -> ConfigMap {
        ConfigMap {
            json: json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.name,
                    "labels": {
                        "app": self.cluster_id,
                        "type": LABEL_TYPE,
                        "configmap-type": LABEL_CONFIGMAP_TYPE,
                    },
                },
            }),
            resource_version: String::new(),
        }
    }

    pub fn create(&self, cm: &ConfigMap) -> Result<Written, Failure> {
        match kube::create(&configmaps(), &cm.json.to_string()) {
            Ok(text) => Ok(Written::Done(ConfigMap::parse(&text).ok())),
            Err(KubeError::AlreadyExists(_)) => Ok(Written::Raced),
            Err(e) => Err(failure(&format!("create configmap {}", self.name), e)),
        }
    }

    /// Replaces the object if it is still at the version `cm` was read at.
    pub fn replace(&self, cm: &ConfigMap) -> Result<Written, Failure> {
        let mut json = cm.json.clone();
        json["metadata"]["resourceVersion"] = Value::String(cm.resource_version.clone());
        match kube::replace(&configmaps(), &self.name, &json.to_string()) {
            Ok(text) => Ok(Written::Done(ConfigMap::parse(&text).ok())),
            Err(KubeError::Conflict(_) | KubeError::NotFound) => Ok(Written::Raced),
            Err(e) => Err(failure(&format!("update configmap {}", self.name), e)),
        }
    }

    /// Waits at most `wait` for the object to change after `since` (a
    /// resourceVersion). A change comes with the object as it is after it,
    /// so the caller need not read it again.
    pub fn wait_change(&self, since: &str, wait: Duration) -> Result<Wake, Failure> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match kube::watch(&configmaps(), &self.name, since, wait_ms) {
            Ok(None) => Ok(Wake::Quiet),
            Ok(Some(event)) if event.change == "DELETED" => Ok(Wake::Changed(None)),
            Ok(Some(event)) => Ok(match ConfigMap::parse(&event.object) {
                Ok(cm) if !cm.resource_version.is_empty() => Wake::Changed(Some(cm)),
                _ => Wake::Reread,
            }),
            // Too old to resume from: read again.
            Err(KubeError::Gone(_)) => Ok(Wake::Reread),
            Err(e) => Err(failure(&format!("watch configmap {}", self.name), e)),
        }
    }
}

/// What a wait for a change saw.
pub enum Wake {
    /// Nothing changed within the wait.
    Quiet,
    /// The object as it is after the change (none: deleted).
    Changed(Option<ConfigMap>),
    /// It may have changed: read it again.
    Reread,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_named_as_the_api_server_named_it() {
        let sa = r#"403 Forbidden: configmaps "x" is forbidden: User "system:serviceaccount:flink:ha-sidecar" cannot watch resource "configmaps" in API group "" in the namespace "flink""#;
        assert_eq!(
            subject(sa),
            r#"the service account "ha-sidecar" of namespace "flink""#
        );
        let user = r#"403 Forbidden: configmaps is forbidden: User "alice@example.com" cannot create resource "configmaps" in API group "" in the namespace "flink""#;
        assert_eq!(subject(user), r#"the user "alice@example.com""#);
        assert!(subject("401 Unauthorized: Unauthorized").contains("did not accept"));
        match failure("read configmap x", KubeError::Forbidden(user.into())) {
            Failure::Unavailable(m) => {
                assert!(
                    m.contains(r#"the user "alice@example.com" needs get"#),
                    "{m}"
                );
                assert!(!m.contains("service account"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
