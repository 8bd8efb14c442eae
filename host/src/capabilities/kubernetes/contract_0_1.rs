//! The `kubernetes` capability under its 0.1.0 name, `ha:sidecar/kubernetes`,
//! for plugins built before it had a package of its own. The interface is the
//! same WIT as `ha:kubernetes/client@0.1.0`, generated a second time as
//! distinct Rust types: every call goes to the current implementation in
//! `ops`, its values converted field by field. Delete this file (and its
//! line in `link`) when the host stops speaking contract 0.1.

use super::ops::View;
use crate::bindings::contract_0_1::ha::sidecar::kubernetes as old;
use crate::bindings::ha::kubernetes::client as new;

impl old::Host for View {
    async fn namespace(&mut self) -> String {
        new::Host::namespace(self).await
    }

    async fn get(
        &mut self,
        kind: old::ObjectKind,
        name: String,
    ) -> Result<Option<String>, old::KubeError> {
        new::Host::get(self, kind.into(), name)
            .await
            .map_err(Into::into)
    }

    async fn create(
        &mut self,
        kind: old::ObjectKind,
        object: String,
    ) -> Result<String, old::KubeError> {
        new::Host::create(self, kind.into(), object)
            .await
            .map_err(Into::into)
    }

    async fn replace(
        &mut self,
        kind: old::ObjectKind,
        name: String,
        object: String,
    ) -> Result<String, old::KubeError> {
        new::Host::replace(self, kind.into(), name, object)
            .await
            .map_err(Into::into)
    }

    async fn delete(
        &mut self,
        kind: old::ObjectKind,
        name: String,
        resource_version: Option<String>,
    ) -> Result<(), old::KubeError> {
        new::Host::delete(self, kind.into(), name, resource_version)
            .await
            .map_err(Into::into)
    }

    async fn watch(
        &mut self,
        kind: old::ObjectKind,
        name: String,
        resource_version: String,
        wait_ms: u32,
    ) -> Result<Option<old::WatchEvent>, old::KubeError> {
        new::Host::watch(self, kind.into(), name, resource_version, wait_ms)
            .await
            .map(|event| {
                event.map(|e| old::WatchEvent {
                    change: e.change,
                    object: e.object,
                })
            })
            .map_err(Into::into)
    }
}

impl From<old::ObjectKind> for new::ObjectKind {
    fn from(k: old::ObjectKind) -> Self {
        Self {
            api_version: k.api_version,
            plural: k.plural,
        }
    }
}

impl From<new::KubeError> for old::KubeError {
    fn from(e: new::KubeError) -> Self {
        match e {
            new::KubeError::NotFound => Self::NotFound,
            new::KubeError::Conflict(m) => Self::Conflict(m),
            new::KubeError::AlreadyExists(m) => Self::AlreadyExists(m),
            new::KubeError::Gone(m) => Self::Gone(m),
            new::KubeError::Invalid(m) => Self::Invalid(m),
            new::KubeError::Forbidden(m) => Self::Forbidden(m),
            new::KubeError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}
