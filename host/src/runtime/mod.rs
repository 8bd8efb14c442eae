//! The plugin runtime: loads a backend component once, checks it against the
//! contract and the config's grants, and hands out supervised instances.

pub mod cache;
pub mod engine;
mod host;
pub use host::HostState;
pub mod inspect;
mod instance;
mod slot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use bindings::ha::sidecar::types::{Failure, Member, Setup, Term, Timing, Versioned};
pub use host::GUEST_DATA_DIR;
pub use instance::{CallError, Instance, describe};
pub use slot::Slot;

use crate::capabilities::kubernetes::KubeApi;
use crate::capabilities::outgoing_http::Endpoint;
use crate::capabilities::zookeeper::ZkSession;
use crate::config::{Grants, PluginConfig};
use crate::metrics::Metrics;
use inspect::{Inspection, Refusal};

/// Host bindings generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "capabilities",
        imports: { "ha:sidecar/zookeeper": async, "ha:sidecar/kubernetes": async },
        exports: { default: async },
    });
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin.path: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "plugin.sha256: {path} has sha256 {actual}, but the config expects {expected}; the file changed or the config is out of date"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("plugin.path: {path} is not a WebAssembly component wasmtime can compile: {source:#}")]
    Compile {
        path: PathBuf,
        source: anyhow::Error,
    },
    #[error("plugin.path: refusing {path}: {source}")]
    Refused { path: PathBuf, source: Refusal },
    #[error("{0}")]
    Kubernetes(#[from] crate::capabilities::kubernetes::SetupError),
    #[error("plugin.path: cannot link {path}: {source:#}")]
    Link {
        path: PathBuf,
        source: anyhow::Error,
    },
}

/// A compiled, checked plugin, ready to instantiate cheaply many times.
pub struct LoadedPlugin {
    engine: Engine,
    pre: bindings::CapabilitiesPre<HostState>,
    pub inspection: Inspection,
    pub sha256: String,
    pub source: cache::Source,
    memory_limit: u64,
    call_timeout: Duration,
    data_dir: Option<PathBuf>,
    zookeeper: Option<Arc<ZkSession>>,
    outgoing_http: Option<Arc<[Endpoint]>>,
    /// One client for every instance; connects on first use.
    pub kubernetes: Option<Arc<KubeApi>>,
    metrics: Arc<Metrics>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl LoadedPlugin {
    /// `zookeeper`: the live session when the capability is granted (none
    /// when only checking a plugin, as `validate` does).
    pub fn load(
        cfg: &PluginConfig,
        grants: &Grants,
        zookeeper: Option<Arc<ZkSession>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, LoadError> {
        let path = cfg.path.clone();
        let wasm = std::fs::read(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let sha256 = sha256_hex(&wasm);
        if let Some(expected) = &cfg.sha256
            && *expected != sha256
        {
            return Err(LoadError::Checksum {
                path,
                expected: expected.clone(),
                actual: sha256,
            });
        }
        let engine = engine::new_engine().map_err(|source| LoadError::Link {
            path: path.clone(),
            source,
        })?;
        let (component, source) =
            cache::load_or_compile(&engine, &wasm, &sha256, cfg.cache_dir.as_deref()).map_err(
                |source| LoadError::Compile {
                    path: path.clone(),
                    source,
                },
            )?;
        let inspection = inspect::inspect(&engine, &component);
        inspection.check(grants).map_err(|refusal| {
            // A refused plugin leaves nothing behind: not even compiled code.
            if source == cache::Source::Compiled {
                cache::forget(&engine, &sha256, cfg.cache_dir.as_deref());
            }
            LoadError::Refused {
                path: path.clone(),
                source: refusal,
            }
        })?;

        let mut linker = Linker::<HostState>::new(&engine);
        let link = |linker: &mut Linker<HostState>| -> anyhow::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
            bindings::Capabilities::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
            Ok(())
        };
        link(&mut linker).map_err(|source| LoadError::Link {
            path: path.clone(),
            source,
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::CapabilitiesPre::new)
            .map_err(|e| LoadError::Link {
                path: path.clone(),
                source: e.into(),
            })?;
        let kubernetes = match &grants.kubernetes {
            Some(settings) => Some(Arc::new(KubeApi::new(settings, metrics.clone())?)),
            None => None,
        };
        engine::start_epoch_ticker(&engine);

        Ok(Arc::new(Self {
            engine,
            pre,
            inspection,
            sha256,
            source,
            memory_limit: cfg.memory_limit,
            call_timeout: cfg.call_timeout,
            data_dir: grants.filesystem.clone(),
            zookeeper,
            outgoing_http: grants.outgoing_http.clone(),
            kubernetes,
            metrics,
        }))
    }

    /// A fresh, configured instance for one role.
    pub async fn instantiate(
        &self,
        role: &'static str,
        setup: &Setup,
    ) -> Result<Instance, CallError> {
        let mut state = HostState::new(
            role,
            self.memory_limit,
            self.data_dir.as_deref(),
            self.zookeeper.clone(),
            self.outgoing_http.clone(),
        )
        .map_err(|e| CallError::NoInstance(format!("{e:#}")))?;
        state.kubernetes = self.kubernetes.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(engine::ticks_for(self.call_timeout));
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::NoInstance(format!("instantiation failed: {e:#}")))?;
        let mut instance = Instance::new(store, bindings, self.call_timeout, self.metrics.clone());
        instance.configure(setup).await?;
        Ok(instance)
    }
}
