//! What each plugin instance's Store holds: its WASI context (stderr, clocks,
//! randomness, and the granted directory if any), its memory limit, and the
//! host side of the contract's imports.

use std::path::Path;
use std::sync::Arc;

use crate::capabilities::outgoing_http::{Endpoint, OutgoingHttp};
use crate::capabilities::zookeeper::ZkSession;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::ha::sidecar::log::{self, Level};
use super::bindings::ha::sidecar::types;

/// Where a granted directory appears inside the plugin.
pub const GUEST_DATA_DIR: &str = "/data";

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    role: &'static str,
    /// The sidecar's ZooKeeper session, when the capability is granted.
    pub zookeeper: Option<Arc<ZkSession>>,
    http: WasiHttpCtx,
    /// Which endpoints outgoing HTTP may reach (none granted: the plugin
    /// cannot import wasi:http at all, see `inspect.rs`).
    outgoing_http: OutgoingHttp,
    /// The sidecar's Kubernetes client, when the capability is granted.
    pub kubernetes: Option<Arc<crate::capabilities::kubernetes::KubeApi>>,
    /// When the plugin call in progress must be done: host calls made for it
    /// are bounded by this.
    pub call_deadline: Option<std::time::Instant>,
}

impl HostState {
    pub fn new(
        role: &'static str,
        memory_limit: u64,
        data_dir: Option<&Path>,
        zookeeper: Option<Arc<ZkSession>>,
        outgoing_http: Option<Arc<[Endpoint]>>,
    ) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = data_dir {
            wasi.preopened_dir(dir, GUEST_DATA_DIR, FsPerms::ReadWrite)?;
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
            limits,
            role,
            zookeeper,
            http: WasiHttpCtx::new(),
            outgoing_http: OutgoingHttp::new(outgoing_http.unwrap_or_else(|| Arc::new([])), role),
            kubernetes: None,
            call_deadline: None,
        })
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

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.outgoing_http.deadline = self.call_deadline;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing_http,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
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
