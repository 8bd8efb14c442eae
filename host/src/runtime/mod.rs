//! The plugin runtime: loads a backend component once, checks it against the
//! contract and the config's grants, and hands out supervised instances.

pub mod cache;
pub mod contract;
pub mod engine;
pub mod inspect;
mod instance;
mod slot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

pub use crate::bindings;
pub use crate::bindings::ha::sidecar::types::{Failure, Member, Setup, Term, Timing, Versioned};
pub use crate::capabilities::{GUEST_DATA_DIR, HostState};
pub use instance::{CallError, Instance, describe};
pub use slot::Slot;

use crate::capabilities::{Connections, Grants, Prepared};
use crate::config::PluginConfig;
use crate::metrics::Metrics;
use inspect::{Inspection, Refusal};

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
    /// A granted capability cannot be readied (its error names its key).
    #[error("{source:#}")]
    Capability {
        capability: &'static str,
        source: anyhow::Error,
    },
    #[error("plugin.path: cannot link {path}: {source:#}")]
    Link {
        path: PathBuf,
        source: anyhow::Error,
    },
}

/// A compiled, checked plugin, ready to instantiate cheaply many times.
pub struct LoadedPlugin {
    engine: Engine,
    /// Instantiation through the bindings of the plugin's contract version.
    pre: contract::Pre,
    pub inspection: Inspection,
    pub sha256: String,
    pub source: cache::Source,
    memory_limit: u64,
    call_timeout: Duration,
    /// What each granted capability gives every instance, by name.
    capabilities: Vec<(&'static str, Box<dyn Prepared>)>,
    /// What the capabilities keep open (none when only checking a plugin).
    connections: Connections,
    metrics: Arc<Metrics>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl LoadedPlugin {
    /// `connections`: what the granted capabilities opened (see
    /// `capabilities::Connections::connect`); none when only checking a
    /// plugin, as `validate` does. Usually called through `wiring`.
    pub fn load(
        cfg: &PluginConfig,
        grants: &Grants,
        connections: Option<&Connections>,
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
        let grants = &grants.with_empty_grants(inspection.capabilities());
        let version = inspection.check(grants).map_err(|refusal| {
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
        // WASI (with the filesystem and sockets interfaces; each is disabled in
        // every instance's context unless its capability is granted), the
        // contract's own imports of every version, then each granted
        // capability's (each under every version it is known by).
        let link = |linker: &mut Linker<HostState>| -> anyhow::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            contract::link(linker)?;
            for g in grants.iter() {
                g.capability.link(linker)?;
            }
            Ok(())
        };
        link(&mut linker).map_err(|source| LoadError::Link {
            path: path.clone(),
            source,
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(|pre| {
                let has_roster = inspection
                    .exports
                    .iter()
                    .any(|e| e == contract::ROSTER_EXPORT);
                contract::Pre::new(version, has_roster, pre)
            })
            .map_err(|e| LoadError::Link {
                path: path.clone(),
                source: e.into(),
            })?;
        let connections = connections.cloned().unwrap_or_default();
        let mut capabilities = Vec::new();
        for g in grants.iter() {
            let name = g.capability.name();
            let prepared = g
                .capability
                .prepare(&*g.settings, connections.get(name), &metrics)
                .map_err(|source| LoadError::Capability {
                    capability: name,
                    source,
                })?;
            capabilities.push((name, prepared));
        }
        engine::start_epoch_ticker(&engine);

        Ok(Arc::new(Self {
            engine,
            pre,
            inspection,
            sha256,
            source,
            memory_limit: cfg.memory_limit,
            call_timeout: cfg.call_timeout,
            capabilities,
            connections,
            metrics,
        }))
    }

    /// What the capabilities keep open for this plugin.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Readies what the granted capabilities need before the first
    /// instance (a directory): only for a plugin that will run, so a
    /// refused one, or one only checked, leaves no trace.
    pub fn start(&self) -> anyhow::Result<()> {
        for (_, c) in &self.capabilities {
            c.start()?;
        }
        Ok(())
    }

    /// What each granted capability gives the plugin, for the start log.
    pub fn granted(&self) -> impl Iterator<Item = (&'static str, Option<String>)> + '_ {
        self.capabilities.iter().map(|(n, c)| (*n, c.describe()))
    }

    /// A fresh, configured instance for one role.
    pub async fn instantiate(
        &self,
        role: &'static str,
        setup: &Setup,
    ) -> Result<Instance, CallError> {
        let prepared: Vec<&dyn Prepared> = self.capabilities.iter().map(|(_, c)| &**c).collect();
        let state = HostState::new(role, self.memory_limit, &prepared)
            .map_err(|e| CallError::NoInstance(format!("{e:#}")))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(engine::ticks_for(self.call_timeout));
        let (exports, roster) = self
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|e| CallError::NoInstance(format!("instantiation failed: {e:#}")))?;
        let mut instance = Instance::new(
            store,
            exports,
            roster,
            self.call_timeout,
            self.metrics.clone(),
        );
        instance.configure(setup).await?;
        Ok(instance)
    }
}
