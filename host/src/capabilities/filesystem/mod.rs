//! The `filesystem` capability: one host directory, mounted read-write into
//! every plugin instance at `/data` (a WASI preopen). The WASI filesystem
//! interfaces are linked with the rest of WASI; without the grant a plugin
//! importing them is refused at load, and with it the plugin sees that one
//! directory and nothing else.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi::FsPerms;

use super::{Capability, HostState, InstanceParts, Prepared, SectionContext, Settings};
use crate::metrics::Metrics;
use crate::section::ConfigError;

pub struct Filesystem;

/// The granted directory, as an absolute path (or relative to the working
/// directory, as the config resolved it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir(pub PathBuf);

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFilesystem {
    dir: PathBuf,
}

const KEY: &str = "capabilities.filesystem";

impl Capability for Filesystem {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn claims(&self, interface: &str) -> bool {
        interface.starts_with("wasi:filesystem/")
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        let raw: Option<RawFilesystem> = cx.section(self.name())?;
        Ok(raw.map(|fs| Arc::new(Dir(cx.keys.resolve(&fs.dir))) as Arc<dyn Settings>))
    }

    fn prepare(
        &self,
        settings: &dyn Settings,
        _connection: Option<Arc<dyn super::Connection>>,
        _metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        let dir: &Dir = super::typed(settings, self)?;
        Ok(Box::new(Granted(dir.0.clone())))
    }

    fn link(&self, _linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // Linked with the rest of WASI (see `runtime::LoadedPlugin::load`).
        Ok(())
    }
}

struct Granted(PathBuf);

impl Prepared for Granted {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        parts
            .wasi
            .preopened_dir(&self.0, super::GUEST_DATA_DIR, FsPerms::ReadWrite)?;
        Ok(())
    }

    /// Only now, with the plugin accepted: a refused plugin leaves no trace.
    fn start(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.0)
            .map_err(|e| anyhow::anyhow!("{KEY}.dir: cannot create {}: {e}", self.0.display()))
    }
}
