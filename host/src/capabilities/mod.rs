//! Host capabilities a plugin can be granted beyond logging: a directory,
//! ZooKeeper, Kubernetes, outgoing HTTP and TCP to listed endpoints, and
//! secrets the host keeps.
//!
//! Each is one unit, a module of its own here that owns everything about
//! it: its section of the config file (`capabilities.<name>`) and its
//! checks, its connection or client (the plugin sees only the operations,
//! never the credentials), what every plugin instance holds of it, the host
//! functions it links, and, for a session the leadership depends on, its
//! health signal. [`ALL`] lists them; the config, the grant checks of
//! `runtime::inspect`, `plugin inspect`, `plugin check` and the runtime go
//! through that list and nothing else. Adding a capability is one module
//! here, one line in [`ALL`] and its WIT interface.
//!
//! Imports: a unit uses `section` (config primitives), `bindings` (the
//! generated WIT types), `metrics` and [`HostState`] (the plugin instance's
//! store, defined here so that the units need not import the runtime). The
//! runtime and the config import this module, never the reverse.

pub mod filesystem;
mod host;
pub mod kubernetes;
pub mod outgoing_http;
pub mod secrets;
pub mod tcp;
pub mod zookeeper;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use wasmtime::component::Linker;

pub use host::{Contexts, GUEST_DATA_DIR, HostState, InstanceParts};

use crate::metrics::Metrics;
use crate::section::{ConfigError, FlinkConfig, Keys, Timing};

/// Every capability this sidecar can grant, in the order their config
/// sections are checked.
pub static ALL: &[&dyn Capability] = &[
    &filesystem::Filesystem,
    &zookeeper::ZooKeeper,
    &outgoing_http::OutgoingHttp,
    &kubernetes::Kubernetes,
    &tcp::Tcp,
    &secrets::Secrets,
];

/// The capability whose section is `capabilities.<name>`.
pub fn named(name: &str) -> Option<&'static dyn Capability> {
    ALL.iter().copied().find(|c| c.name() == name)
}

/// The capability a plugin import (an interface name, with or without its
/// version) needs, if any.
pub fn claiming(interface: &str) -> Option<&'static dyn Capability> {
    let bare = interface.split('@').next().unwrap_or(interface);
    ALL.iter().copied().find(|c| c.claims(bare))
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a capability's section parser gets besides its own YAML.
pub struct SectionContext<'a> {
    pub keys: &'a Keys<'a>,
    pub timing: &'a Timing,
    /// The Flink config named by `flink-config`, whose keys fill what the
    /// sidecar config leaves unset.
    pub flink: Option<&'a FlinkConfig>,
}

impl SectionContext<'_> {
    /// The raw section `capabilities.<capability>`, if the file has one.
    pub fn section<T: serde::de::DeserializeOwned>(
        &self,
        capability: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.keys.section(&["capabilities", capability])
    }

    /// The `endpoints` list of section `key` (`capabilities.<name>`), each
    /// parsed by `parse`: an empty list is refused (an allow-list that
    /// allows nothing is a mistake; `example` shows what to list), and an
    /// entry that does not parse names its index.
    pub fn endpoints<T>(
        &self,
        key: &str,
        raw: &[String],
        example: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        if raw.is_empty() {
            return Err(self.keys.err(
                &format!("{key}.endpoints"),
                "[]",
                format!("lists no endpoint; list what the plugin may reach (such as {example}), or remove {key}"),
            ));
        }
        raw.iter()
            .enumerate()
            .map(|(i, e)| {
                parse(e).map_err(|reason| {
                    self.keys
                        .err(&format!("{key}.endpoints[{i}]"), format!("{e:?}"), reason)
                })
            })
            .collect()
    }
}

/// Makes ring the process's default rustls provider, once. Two providers
/// are compiled in (ring, which the sidecar's own TLS uses; aws-lc-rs,
/// which zookeeper-client's TLS feature brings), and rustls refuses to
/// guess between them for clients built without naming one (kube's,
/// zookeeper-client's). Called wherever such a client is made, so that no
/// entry point (the binary, `plugin check`, a test) can miss it.
pub fn ensure_tls_provider() {
    // Err only when a provider is already installed: that one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One capability: the contract every unit implements.
pub trait Capability: Send + Sync + 'static {
    /// Its key under `capabilities:` in the config; refusals name it so.
    fn name(&self) -> &'static str;

    /// Whether a plugin import (interface name without version, such as
    /// `ha:zookeeper/client`) is this capability's.
    fn claims(&self, interface: &str) -> bool;

    /// The versions of its own WIT interfaces that `link` adds (such as
    /// `ha:zookeeper/client@0.1.0`), so that an import of one at a version
    /// this sidecar does not speak is refused by name at load. Empty for the
    /// WASI interfaces, whose versions wasmtime-wasi serves.
    fn linked(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks its config section (`cx.section(self.name())`) and returns
    /// the validated settings, or none if the capability is not granted.
    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError>;

    /// The `high-availability.type` of a Flink config whose settings this
    /// capability reads (as Flink names it in messages), if any.
    fn flink_ha_type(&self) -> Option<&'static str> {
        None
    }

    /// Plugin settings a Flink config implies once this capability is
    /// granted (the sidecar config's own values win).
    fn flink_plugin_settings(&self, _flink: &FlinkConfig) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Environment variables the libraries behind this capability read
    /// (MIT Kerberos for ZooKeeper's GSSAPI: keytab, cache, krb5.conf).
    /// `main` sets them once, before any thread starts, since a process's
    /// environment cannot be changed safely while threads may read it.
    fn process_env(&self, _settings: &dyn Settings) -> Vec<(&'static str, std::ffi::OsString)> {
        Vec::new()
    }

    /// Opens what must be live before the plugin loads and is shared by
    /// every loaded plugin of this sidecar (ZooKeeper's session); most
    /// capabilities have nothing to open.
    fn connect<'a>(
        &'a self,
        _settings: &'a dyn Settings,
    ) -> BoxFuture<'a, anyhow::Result<Option<Arc<dyn Connection>>>> {
        Box::pin(async { Ok(None) })
    }

    /// Readies the capability for one loaded plugin: reads credentials,
    /// makes the client every instance shares. `connection`: what `connect`
    /// opened, if it ran (`validate` and `plugin check`'s first load do not
    /// connect).
    fn prepare(
        &self,
        settings: &dyn Settings,
        connection: Option<Arc<dyn Connection>>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>>;

    /// Adds its host functions (only for a granted capability: an import
    /// of one not granted is refused before linking).
    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// The settings of a grant that gives nothing, for a capability whose
    /// import without a grant is harmless (secrets: an empty store), so that
    /// a plugin may use it only when its settings ask (etcd's user and
    /// password). None (the default): an import without a grant is refused.
    fn empty_grant(&self) -> Option<Arc<dyn Settings>> {
        None
    }

    /// Whether the backend's permissions confine a sidecar to the one
    /// namespace the plugin settings name (then the conformance suite takes
    /// turns there instead of making up one per check).
    fn confines_namespace(&self) -> bool {
        false
    }
}

/// A capability's validated settings, as the config holds them.
pub trait Settings: Any + fmt::Debug + Send + Sync {}
impl<T: Any + fmt::Debug + Send + Sync> Settings for T {}

/// The settings a capability's own `parse` made, with their type again.
pub fn typed<'a, S: Settings>(
    settings: &'a dyn Settings,
    capability: &dyn Capability,
) -> anyhow::Result<&'a S> {
    (settings as &dyn Any).downcast_ref::<S>().ok_or_else(|| {
        anyhow::anyhow!(
            "capabilities.{}: given settings it did not make ({settings:?})",
            capability.name()
        )
    })
}

/// A capability readied for one loaded plugin.
pub trait Prepared: Send + Sync {
    /// Adds its part to a new plugin instance (a preopened directory, a
    /// context its host functions read).
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()>;

    /// Runs once the plugin is accepted, before its first instance: what
    /// may leave a trace (a refused plugin leaves none).
    fn start(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// What it grants, for the start log.
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Whether a session still backs this sidecar's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Lost(String),
}

/// What a capability keeps open for the sidecar's lifetime.
pub trait Connection: Any + Send + Sync {
    /// For a session the leadership depends on (its loss ends leadership
    /// at once): its health. None for anything else.
    fn health_signal(&self) -> Option<watch::Receiver<Health>> {
        None
    }

    /// Closes it at shutdown, so what it holds (ephemeral nodes) goes now
    /// rather than after a timeout.
    fn shut_down(&self) -> BoxFuture<'_, ()>;
}

/// Capabilities the config grants to the plugin, with their settings.
#[derive(Clone, Default)]
pub struct Grants {
    granted: Vec<Grant>,
}

#[derive(Clone)]
pub struct Grant {
    pub capability: &'static dyn Capability,
    pub settings: Arc<dyn Settings>,
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.granted
                    .iter()
                    .map(|g| (g.capability.name(), &g.settings)),
            )
            .finish()
    }
}

impl Grants {
    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.granted.iter()
    }

    /// Every granted capability's `process_env`.
    pub fn process_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        self.granted
            .iter()
            .flat_map(|g| g.capability.process_env(g.settings.as_ref()))
            .collect()
    }

    pub fn is_granted(&self, capability: &str) -> bool {
        self.granted
            .iter()
            .any(|g| g.capability.name() == capability)
    }

    /// These grants, plus the empty grant of each capability in `imported`
    /// (capability names) that is not granted and has one (see
    /// `Capability::empty_grant`).
    pub fn with_empty_grants<'a>(&self, imported: impl IntoIterator<Item = &'a str>) -> Self {
        let mut grants = self.clone();
        for name in imported {
            if let Some(c) = named(name)
                && !grants.is_granted(name)
                && let Some(settings) = c.empty_grant()
            {
                grants.grant(c, settings);
            }
        }
        grants
    }

    /// Grants `capability` with `settings`, replacing an earlier grant of it.
    pub fn grant(&mut self, capability: &'static dyn Capability, settings: Arc<dyn Settings>) {
        self.granted
            .retain(|g| g.capability.name() != capability.name());
        self.granted.push(Grant {
            capability,
            settings,
        });
    }

    /// The settings of type `S`, if the capability that has them is granted.
    pub fn get<S: Settings>(&self) -> Option<&S> {
        self.granted
            .iter()
            .find_map(|g| (&*g.settings as &dyn Any).downcast_ref::<S>())
    }

    /// Replaces the granted settings of type `S` (none granted: nothing happens).
    pub fn replace<S: Settings>(&mut self, settings: S) -> bool {
        match self
            .granted
            .iter_mut()
            .find(|g| (&*g.settings as &dyn Any).is::<S>())
        {
            Some(g) => {
                g.settings = Arc::new(settings);
                true
            }
            None => false,
        }
    }
}

/// What the granted capabilities keep open, by capability name.
#[derive(Clone, Default)]
pub struct Connections {
    open: Vec<(&'static str, Arc<dyn Connection>)>,
}

impl Connections {
    /// Opens what each granted capability needs open before the plugin loads.
    pub async fn connect(grants: &Grants) -> anyhow::Result<Self> {
        let mut open = Vec::new();
        for g in grants.iter() {
            if let Some(c) = g.capability.connect(&*g.settings).await? {
                open.push((g.capability.name(), c));
            }
        }
        Ok(Self { open })
    }

    pub fn get(&self, capability: &str) -> Option<Arc<dyn Connection>> {
        self.open
            .iter()
            .find(|(name, _)| *name == capability)
            .map(|(_, c)| c.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The health of the session the leadership depends on, if there is
    /// one (one capability with a session at most: a backend runs on one store).
    pub fn session_health(&self) -> Option<watch::Receiver<Health>> {
        self.open.iter().find_map(|(_, c)| c.health_signal())
    }

    pub async fn shut_down(&self) {
        for (_, c) in &self.open {
            c.shut_down().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_each_interface_has_one_owner() {
        let mut names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "two capabilities share a name");
        for interface in [
            "wasi:filesystem/types",
            "wasi:filesystem/preopens",
            "ha:zookeeper/client",
            "ha:kubernetes/client",
            "ha:secrets/store",
            // Their names in contract 0.1.
            "ha:sidecar/zookeeper",
            "ha:sidecar/kubernetes",
            "wasi:http/types",
            "wasi:http/outgoing-handler",
            "wasi:sockets/tcp",
            "wasi:sockets/ip-name-lookup",
            "ha:sidecar/secrets",
        ] {
            let owners: Vec<&str> = ALL
                .iter()
                .filter(|c| c.claims(interface))
                .map(|c| c.name())
                .collect();
            assert_eq!(owners.len(), 1, "{interface}: {owners:?}");
        }
        assert_eq!(
            claiming("ha:zookeeper/client@0.1.0").map(|c| c.name()),
            Some("zookeeper")
        );
        assert_eq!(
            claiming("ha:sidecar/zookeeper@0.1.0").map(|c| c.name()),
            Some("zookeeper")
        );
        // Every version a unit links is of an interface it claims.
        for c in ALL {
            for linked in c.linked() {
                let bare = linked.split('@').next().unwrap();
                assert!(
                    c.claims(bare),
                    "{}: links {linked}, claims it not",
                    c.name()
                );
            }
        }
        assert_eq!(
            claiming("wasi:sockets/tcp-create-socket@0.2.6").map(|c| c.name()),
            Some("tcp")
        );
        for never in ["wasi:http/incoming-handler", "ha:sidecar/log"] {
            assert!(claiming(never).is_none(), "{never} is no capability's");
        }
    }
}
