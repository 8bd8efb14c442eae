//! The permissions the recipe needs, checked before it is used: `get`,
//! `watch`, `update` and `create` on the cluster's one ConfigMap. A sidecar
//! whose Role lacks one of them would otherwise run on without ever leading
//! (no `update`), or lead while discovery fails on every retry (no
//! `watch`), and nobody would be told.
//!
//! Each verb is tried with a request that changes nothing, or nothing the
//! recipe would not do next anyway; the API server authorizes a request
//! before it looks at the object, so any answer but 401/403 means allowed:
//! - `get`: read the object (absent is fine);
//! - `watch`: open a watch on it and leave at once;
//! - `update`: write the object back as it was read, at its version (a
//!   no-op on the server, or `Conflict` if it just changed; skipped when it
//!   could not be read);
//! - `create`: create it blank, as the first candidate would (`AlreadyExists`
//!   when it is there); only once everything else is allowed, so a refused
//!   sidecar leaves nothing behind.

use ha_sidecar_sdk::Failure;
use ha_sidecar_sdk::kubernetes::{self as kube, KubeError};

use crate::object::{Object, configmaps, subject};

/// What the check found.
pub enum Checked {
    /// Every verb the recipe needs is allowed.
    Allowed,
    /// The API server could not be asked; check again before the next use.
    Unknown(String),
    /// These verbs are refused: the message to stop with.
    Refused(String),
}

/// What one request said about its verb.
enum Answer {
    Allowed,
    Refused(String),
    Unreachable(String),
}

fn answer<T>(r: Result<T, KubeError>) -> Answer {
    match r {
        Err(KubeError::Forbidden(m)) => Answer::Refused(m),
        Err(KubeError::Unavailable(m)) => Answer::Unreachable(m),
        // Any other answer came after authorization.
        _ => Answer::Allowed,
    }
}

pub fn check(object: &Object) -> Checked {
    let mut refused: Vec<(&str, String)> = Vec::new();
    let read = kube::get(&configmaps(), &object.name);
    let current = match &read {
        Ok(Some(text)) => serde_json::from_str::<serde_json::Value>(text).ok(),
        _ => None,
    };
    let exists = current.is_some();
    match answer(read) {
        Answer::Allowed => {}
        Answer::Refused(m) => refused.push(("get", m)),
        Answer::Unreachable(m) => return Checked::Unknown(m),
    }
    let rv = current
        .as_ref()
        .and_then(|c| c["metadata"]["resourceVersion"].as_str())
        .filter(|rv| !rv.is_empty())
        .unwrap_or("0")
        .to_string();
    match answer(kube::watch(&configmaps(), &object.name, &rv, 0)) {
        Answer::Allowed => {}
        Answer::Refused(m) => refused.push(("watch", m)),
        Answer::Unreachable(m) => return Checked::Unknown(m),
    }
    if let Some(current) = &current {
        match answer(kube::replace(
            &configmaps(),
            &object.name,
            &current.to_string(),
        )) {
            Answer::Allowed => {}
            Answer::Refused(m) => refused.push(("update", m)),
            Answer::Unreachable(m) => return Checked::Unknown(m),
        }
    }
    if refused.is_empty() || exists {
        match answer(kube::create(
            &configmaps(),
            &object.blank().json.to_string(),
        )) {
            Answer::Allowed => {}
            Answer::Refused(m) => refused.push(("create", m)),
            Answer::Unreachable(m) => return Checked::Unknown(m),
        }
    }
    if refused.is_empty() {
        return Checked::Allowed;
    }
    let verbs: Vec<&str> = refused.iter().map(|(v, _)| *v).collect();
    let first = &refused[0].1;
    Checked::Refused(format!(
        "the Kubernetes API server refuses {} on configmap {}: {first}. {} needs get, create, update and watch on configmap {} in this namespace: a Role with those verbs (create without resourceNames), bound to it, as in examples/kubernetes/rbac.yaml",
        verbs.join(", "),
        object.name,
        capitalized(&subject(first)),
        object.name,
    ))
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The check's verdict as a contract failure: `invalid` (do not retry) at
/// configure, where it stops the sidecar; `unavailable` later, where the
/// host backs off and reports it.
pub fn failure(checked: Checked, at_configure: bool) -> Option<Failure> {
    match checked {
        Checked::Allowed | Checked::Unknown(_) => None,
        Checked::Refused(m) if at_configure => Some(Failure::Invalid(m)),
        Checked::Refused(m) => Some(Failure::Unavailable(m)),
    }
}
