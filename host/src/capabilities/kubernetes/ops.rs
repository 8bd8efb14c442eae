//! The plugin-facing side of the `kubernetes` capability: each WIT function
//! as one bounded request on the sidecar's client, in its namespace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use super::api::KubeApi;
use crate::bindings::ha::kubernetes::client::{self as wit, KubeError, ObjectKind};
use crate::capabilities::HostState;

/// What an instance holds of the capability: the sidecar's client.
pub(super) struct Context {
    pub api: Arc<KubeApi>,
}

/// The host functions' view of one instance: its client (none: not
/// granted) and the deadline of the plugin call in progress.
pub(super) struct View {
    kubernetes: Option<Arc<KubeApi>>,
    call_deadline: Option<Instant>,
}

pub(super) struct Data;

impl wasmtime::component::HasData for Data {
    type Data<'a> = View;
}

pub(super) fn view(s: &mut HostState) -> View {
    View {
        kubernetes: s.contexts().get::<Context>().map(|c| c.api.clone()),
        call_deadline: s.call_deadline,
    }
}

impl View {
    fn kube(&self) -> Result<Arc<KubeApi>, KubeError> {
        self.kubernetes
            .clone()
            .ok_or_else(|| KubeError::Forbidden("the kubernetes capability is not granted".into()))
    }
}

fn text(bytes: Vec<u8>) -> Result<String, KubeError> {
    String::from_utf8(bytes)
        .map_err(|_| KubeError::Unavailable("the API server answered with non-UTF-8 text".into()))
}

/// The object's `metadata.name` and `metadata.resourceVersion`, checked to be JSON.
fn metadata(object: &str) -> Result<(String, Option<String>), KubeError> {
    let v: serde_json::Value = serde_json::from_str(object)
        .map_err(|e| KubeError::Invalid(format!("the object is not JSON: {e}")))?;
    let name = v["metadata"]["name"]
        .as_str()
        .ok_or_else(|| KubeError::Invalid("the object has no metadata.name".into()))?
        .to_string();
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((name, rv))
}

impl wit::Host for View {
    async fn namespace(&mut self) -> String {
        self.kubernetes
            .as_ref()
            .map(|k| k.namespace().to_string())
            .unwrap_or_default()
    }

    async fn get(&mut self, kind: ObjectKind, name: String) -> Result<Option<String>, KubeError> {
        let api = self.kube()?;
        let path = api.path(&kind, Some(&name))?;
        match api.call(self.call_deadline, Method::GET, &path, None).await {
            Ok(body) => text(body).map(Some),
            Err(KubeError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self, kind: ObjectKind, object: String) -> Result<String, KubeError> {
        let api = self.kube()?;
        let (name, _) = metadata(&object)?;
        // The name is checked like any other, though the path does not carry it.
        api.path(&kind, Some(&name))?;
        let path = api.path(&kind, None)?;
        let body = api
            .call(
                self.call_deadline,
                Method::POST,
                &path,
                Some(object.into_bytes()),
            )
            .await?;
        text(body)
    }

    async fn replace(
        &mut self,
        kind: ObjectKind,
        name: String,
        object: String,
    ) -> Result<String, KubeError> {
        let api = self.kube()?;
        let (named, rv) = metadata(&object)?;
        if named != name {
            return Err(KubeError::Invalid(format!(
                "the object is named {named:?}, but the call replaces {name:?}"
            )));
        }
        // Unconditional replaces would let a stale writer overwrite a newer
        // leader's record; ConfigMaps would accept them (Leases would not).
        if rv.is_none() {
            return Err(KubeError::Invalid(
                "replace needs metadata.resourceVersion (the version the change is based on)"
                    .into(),
            ));
        }
        let path = api.path(&kind, Some(&name))?;
        let body = api
            .call(
                self.call_deadline,
                Method::PUT,
                &path,
                Some(object.into_bytes()),
            )
            .await?;
        text(body)
    }

    async fn delete(
        &mut self,
        kind: ObjectKind,
        name: String,
        resource_version: Option<String>,
    ) -> Result<(), KubeError> {
        let api = self.kube()?;
        let path = api.path(&kind, Some(&name))?;
        let options = resource_version.map(|rv| {
            serde_json::json!({
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"resourceVersion": rv},
            })
            .to_string()
            .into_bytes()
        });
        api.call(self.call_deadline, Method::DELETE, &path, options)
            .await
            .map(drop)
    }

    async fn watch(
        &mut self,
        kind: ObjectKind,
        name: String,
        resource_version: String,
        wait_ms: u32,
    ) -> Result<Option<wit::WatchEvent>, KubeError> {
        let api = self.kube()?;
        api.watch(
            self.call_deadline,
            &kind,
            &name,
            &resource_version,
            Duration::from_millis(wait_ms.into()),
        )
        .await
    }
}
