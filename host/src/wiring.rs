//! Loading the configured plugin with its capabilities, written once for
//! `ha-sidecar run` (`sidecar`), the conformance suite (`plugin check` and
//! the tests) and `validate`.

use std::sync::Arc;

use crate::capabilities::Connections;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{LoadError, LoadedPlugin};

/// Loads and checks the plugin against the contract and the grants,
/// connecting nothing and leaving no trace: what `validate` does, and
/// `plugin check` before anything else, so a plugin that cannot load is
/// refused once, with the reason.
pub fn check(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<LoadedPlugin>, LoadError> {
    LoadedPlugin::load(&config.plugin, &config.grants, None, metrics)
}

/// Opens what the granted capabilities keep open (a ZooKeeper session),
/// loads the plugin with it, and readies what its instances need (the
/// granted directory): a plugin ready to run.
pub async fn open(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<LoadedPlugin>> {
    let connections = Connections::connect(&config.grants).await?;
    let plugin = LoadedPlugin::load(&config.plugin, &config.grants, Some(&connections), metrics)?;
    plugin.start()?;
    Ok(plugin)
}
