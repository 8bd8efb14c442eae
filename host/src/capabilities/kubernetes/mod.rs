//! The `kubernetes` capability: one Kubernetes API client per sidecar
//! (`api`), built from the pod's service account or a kubeconfig file and
//! confined to one namespace; `config` checks `capabilities.kubernetes`,
//! `ops` answers the plugin's calls. The plugin owns the object layout, the
//! host the credentials, the namespace and time.

mod api;
mod config;
mod contract_0_1;
mod ops;

use std::sync::Arc;

use wasmtime::component::Linker;

pub use api::{KubeApi, KubeSettings, SERVICE_ACCOUNT_DIR, SetupError, status_error};

use super::{Capability, Connection, HostState, InstanceParts, Prepared, SectionContext, Settings};
use crate::metrics::Metrics;
use crate::section::ConfigError;

pub struct Kubernetes;

impl Capability for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn claims(&self, interface: &str) -> bool {
        matches!(interface, "ha:kubernetes/client" | "ha:sidecar/kubernetes")
    }

    fn linked(&self) -> &'static [&'static str] {
        &["ha:kubernetes/client@0.1.0", "ha:sidecar/kubernetes@0.1.0"]
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        match cx.section::<config::RawKubernetes>(self.name())? {
            Some(k) => Ok(Some(Arc::new(config::validate(k, cx)?))),
            None => Ok(None),
        }
    }

    /// Reads the credentials now, so a bad kubeconfig stops `validate` and
    /// the start; the client connects on first use.
    fn prepare(
        &self,
        settings: &dyn Settings,
        _connection: Option<Arc<dyn Connection>>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        let settings: &KubeSettings = super::typed(settings, self)?;
        Ok(Box::new(Granted(Arc::new(KubeApi::new(
            settings,
            metrics.clone(),
        )?))))
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        crate::bindings::ha::kubernetes::client::add_to_linker::<HostState, ops::Data>(
            linker,
            ops::view,
        )?;
        // Its 0.1.0 name, for plugins built for contract 0.1.
        crate::bindings::contract_0_1::ha::sidecar::kubernetes::add_to_linker::<HostState, ops::Data>(
            linker,
            ops::view,
        )
    }

    /// The Role names the one ConfigMap `<cluster-id>-cluster-config-map`.
    fn confines_namespace(&self) -> bool {
        true
    }
}

/// One client for every instance.
struct Granted(Arc<KubeApi>);

impl Prepared for Granted {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        parts.contexts.insert(ops::Context {
            api: self.0.clone(),
        });
        Ok(())
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "Kubernetes API granted to the plugin (server {}, namespace {})",
            self.0.server(),
            self.0.namespace()
        ))
    }
}
