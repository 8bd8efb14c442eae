//! What each plugin instance's Store holds: its WASI context (stderr,
//! clocks, randomness, and the granted directory if any), its memory limit,
//! the host side of the contract's `log`, and one context per granted
//! capability, owned by that capability's module (`Contexts`).

use std::any::Any;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use super::Prepared;
use crate::bindings::ha::sidecar::log::{self, Level};
use crate::bindings::ha::sidecar::types;

/// Where a granted directory appears inside the plugin.
pub const GUEST_DATA_DIR: &str = "/data";

/// Per-instance contexts of the granted capabilities, one per type; each
/// capability module reads back only its own.
#[derive(Default)]
pub struct Contexts(Vec<Box<dyn Any + Send>>);

impl Contexts {
    pub fn insert<C: Any + Send>(&mut self, context: C) {
        self.0.retain(|c| !(**c).is::<C>());
        self.0.push(Box::new(context));
    }

    pub fn get<C: Any + Send>(&self) -> Option<&C> {
        self.0.iter().find_map(|c| c.downcast_ref::<C>())
    }

    pub fn get_mut<C: Any + Send>(&mut self) -> Option<&mut C> {
        self.0.iter_mut().find_map(|c| c.downcast_mut::<C>())
    }
}

/// What a capability may add to an instance being made.
pub struct InstanceParts<'a> {
    pub role: &'static str,
    pub wasi: &'a mut WasiCtxBuilder,
    pub contexts: &'a mut Contexts,
}

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// wasmtime-wasi-http's per-store state; which requests may leave is the
    /// `outgoing_http` capability's context.
    http: WasiHttpCtx,
    pub limits: StoreLimits,
    role: &'static str,
    contexts: Contexts,
    /// When the plugin call in progress must be done: host calls made for it
    /// are bounded by this.
    pub call_deadline: Option<Instant>,
}

impl HostState {
    pub fn new(
        role: &'static str,
        memory_limit: u64,
        capabilities: &[&dyn Prepared],
    ) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut contexts = Contexts::default();
        for c in capabilities {
            c.instance(&mut InstanceParts {
                role,
                wasi: &mut wasi,
                contexts: &mut contexts,
            })?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_limit).unwrap_or(usize::MAX))
            // A plugin that outgrows its cap traps and is restarted, rather
            // than limping on with failed allocations.
            .trap_on_grow_failure(true)
            .instances(16)
            .build();
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits,
            role,
            contexts,
            call_deadline: None,
        })
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn contexts(&self) -> &Contexts {
        &self.contexts
    }

    /// The pieces a WASI interface's view borrows at once.
    pub fn split(&mut self) -> (&mut Contexts, &mut WasiHttpCtx, &mut ResourceTable) {
        (&mut self.contexts, &mut self.http, &mut self.table)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let role = self.role;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", role, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", role, "{message}"),
            Level::Info => tracing::info!(target: "plugin", role, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", role, "{message}"),
            Level::Error => tracing::error!(target: "plugin", role, "{message}"),
        }
    }
}
