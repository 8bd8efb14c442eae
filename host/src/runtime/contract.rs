//! The versions of the backend contract (`ha:sidecar`) this host speaks, side
//! by side, so that a plugin built for the previous minor version still
//! loads. Each version has its own generated bindings (`crate::bindings`);
//! this module links the contract's own imports of every version, picks the
//! bindings for a plugin from the version its `backend` export carries, and
//! calls the export through them ([`call_backend!`]).
//!
//! Supporting a new version: generate its bindings, add a variant to [`Pre`]
//! and [`Exports`] and an arm to `call_backend!`, link its `log` and
//! `types`, and add it to [`SUPPORTED`]. A call the new version adds needs a
//! fallback for the older variants, in `Instance`.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::bindings;
use crate::bindings::contract_0_1;
use crate::capabilities::HostState;

/// A contract version, as in a WIT package name (`ha:sidecar@0.2.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next()??,
        };
        it.next().is_none().then_some(v)
    }

    /// Semver compatibility as the component model reads it: same major, and
    /// for 0.x the same minor.
    pub fn compatible_with(&self, host: &Version) -> bool {
        if host.major == 0 {
            self.major == 0 && self.minor == host.minor
        } else {
            self.major == host.major
        }
    }
}

pub const PACKAGE: &str = "ha:sidecar";
/// The current version: what the SDK builds plugins for (`plugins/sdk/wit/`).
pub const CURRENT: Version = Version::new(0, 2, 0);
/// The frozen previous version (`plugins/sdk/wit-0.1.0/`).
pub const V0_1: Version = Version::new(0, 1, 0);
/// Every version this host links, newest first.
pub const SUPPORTED: [Version; 2] = [CURRENT, V0_1];

/// The supported version a plugin's contract version is compatible with.
pub fn supported(found: &Version) -> Option<Version> {
    SUPPORTED.iter().copied().find(|v| found.compatible_with(v))
}

/// `0.2.0, 0.1.0`: for messages.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| format!("{PACKAGE}@{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Links the contract's own imports, `types` and `log`, of every version.
pub(super) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    bindings::ha::sidecar::types::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    bindings::ha::sidecar::log::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    // 0.1's types are the current ones (see `bindings::contract_0_1`), but an
    // import of the interface still needs an instance by its own name.
    linker.instance("ha:sidecar/types@0.1.0")?;
    contract_0_1::ha::sidecar::log::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// The optional export of members and targeted handovers, by full name.
pub const ROSTER_EXPORT: &str = "ha:membership/roster@0.1.0";

/// A plugin's instantiation: the component linked once, and where its
/// exports are, through the bindings of its contract version (and the
/// optional roster's, if it has one).
pub(super) struct Pre {
    instance_pre: InstancePre<HostState>,
    backend: Indices,
    roster: Option<bindings::roster::RosterIndices>,
}

enum Indices {
    Current(bindings::CapabilitiesIndices),
    V0_1(contract_0_1::CapabilitiesIndices),
}

impl Pre {
    /// `version`: one of [`SUPPORTED`], as `supported` found it;
    /// `has_roster`: whether the component exports [`ROSTER_EXPORT`].
    pub fn new(
        version: Version,
        has_roster: bool,
        instance_pre: InstancePre<HostState>,
    ) -> wasmtime::Result<Self> {
        let backend = if version == V0_1 {
            Indices::V0_1(contract_0_1::CapabilitiesIndices::new(&instance_pre)?)
        } else {
            Indices::Current(bindings::CapabilitiesIndices::new(&instance_pre)?)
        };
        let roster = has_roster
            .then(|| bindings::roster::RosterIndices::new(&instance_pre))
            .transpose()?;
        Ok(Self {
            instance_pre,
            backend,
            roster,
        })
    }

    pub async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<(Exports, Option<bindings::roster::Roster>)> {
        let instance = self.instance_pre.instantiate_async(&mut *store).await?;
        let exports = match &self.backend {
            Indices::Current(i) => Exports::Current(i.load(&mut *store, &instance)?),
            Indices::V0_1(i) => Exports::V0_1(i.load(&mut *store, &instance)?),
        };
        let roster = match &self.roster {
            Some(i) => Some(i.load(&mut *store, &instance)?),
            None => None,
        };
        Ok((exports, roster))
    }
}

/// A plugin instance's exports, in the bindings of its contract version.
pub(super) enum Exports {
    Current(bindings::Capabilities),
    V0_1(contract_0_1::Capabilities),
}

/// Calls the backend export `$call` (such as `call_keep`) through whichever
/// bindings the plugin was built for. Every supported version has the same
/// calls with the same Rust types, so one expression serves them all.
macro_rules! call_backend {
    ($exports:expr, $store:expr, $call:ident($($arg:expr),*)) => {
        async {
            match $exports {
                $crate::runtime::contract::Exports::Current(b) => {
                    b.ha_sidecar_backend().$call($store, $($arg),*).await
                }
                $crate::runtime::contract::Exports::V0_1(b) => {
                    b.ha_sidecar_backend().$call($store, $($arg),*).await
                }
            }
        }
    };
}
pub(super) use call_backend;

/// 0.1's `log`: the same function, its level a Rust type of its own.
impl contract_0_1::ha::sidecar::log::Host for HostState {
    async fn log(&mut self, level: contract_0_1::ha::sidecar::log::Level, message: String) {
        use bindings::ha::sidecar::log::Level as Current;
        use contract_0_1::ha::sidecar::log::Level as Old;
        let level = match level {
            Old::Trace => Current::Trace,
            Old::Debug => Current::Debug,
            Old::Info => Current::Info,
            Old::Warn => Current::Warn,
            Old::Error => Current::Error,
        };
        bindings::ha::sidecar::log::Host::log(self, level, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(supported(&Version::parse("0.2.3").unwrap()), Some(CURRENT));
        assert_eq!(supported(&Version::parse("0.1.0").unwrap()), Some(V0_1));
        assert_eq!(supported(&Version::parse("0.1.7").unwrap()), Some(V0_1));
        assert_eq!(supported(&Version::parse("0.3.0").unwrap()), None);
        assert_eq!(supported(&Version::parse("1.0.0").unwrap()), None);
        assert_eq!(Version::parse("1.2"), None);
        assert_eq!(supported_list(), "ha:sidecar@0.2.0, ha:sidecar@0.1.0");
    }
}
