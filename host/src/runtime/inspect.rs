//! What a plugin is before it runs: which version of the contract it was
//! built for, and which host interfaces it imports. Refusals happen here, at
//! load, with the name of the offending interface, never at first use.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::capabilities::{self, Grants};

pub const CONTRACT_PACKAGE: &str = "ha:sidecar";
/// The contract version this host implements (`wit/sidecar.wit`).
pub const CONTRACT_VERSION: Version = Version {
    major: 0,
    minor: 1,
    patch: 0,
};
const BACKEND_EXPORT: &str = "ha:sidecar/backend";

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
    fn parse(s: &str) -> Option<Self> {
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

/// A plugin's interface as seen from outside.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the component exports no {BACKEND_EXPORT} interface, so it is not an ha-sidecar backend plugin (it exports: {0})"
    )]
    NotAPlugin(String),
    #[error(
        "the plugin was built for contract {CONTRACT_PACKAGE}@{found} ({interface}), but this sidecar speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}; rebuild the plugin against this version of wit/ or run a sidecar release that speaks {found}"
    )]
    WrongContract { interface: String, found: String },
    #[error(
        "the plugin imports {interface}, which needs the `{capability}` capability, and the config does not grant it; add capabilities.{capability} to the config if the plugin should have it"
    )]
    NotGranted {
        interface: String,
        capability: &'static str,
    },
    #[error("the plugin imports {interface}: {reason}")]
    Unsupported {
        interface: String,
        reason: &'static str,
    },
}

/// What an import needs from the host.
enum Need {
    /// Harmless and always linked (logging, clocks, randomness, stderr).
    Always,
    /// Granted per config.
    Capability(&'static str),
    Never(&'static str),
}

/// Always-linked imports, then the capabilities' own (each claims its
/// interfaces, see `capabilities::ALL`), then what is never granted.
fn classify(interface: &str) -> Need {
    let bare = interface.split('@').next().unwrap_or(interface);
    let package = bare.split('/').next().unwrap_or(bare);
    if matches!(bare, "ha:sidecar/log" | "ha:sidecar/types")
        || matches!(
            package,
            "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli"
        )
    {
        return Need::Always;
    }
    if let Some(c) = capabilities::claiming(bare) {
        return Need::Capability(c.name());
    }
    match package {
        "wasi:http" => Need::Never("a backend plugin sends HTTP requests; it does not serve them"),
        _ => Need::Never("this sidecar provides no such interface"),
    }
}

pub fn inspect(engine: &Engine, component: &Component) -> Inspection {
    let ty = component.component_type();
    Inspection {
        imports: ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
        exports: ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
    }
}

impl Inspection {
    /// The contract version the plugin's backend export was built for.
    pub fn contract(&self) -> Option<(&str, &str)> {
        self.exports.iter().find_map(|e| {
            let (iface, version) = e.split_once('@').unwrap_or((e.as_str(), ""));
            (iface == BACKEND_EXPORT).then_some((e.as_str(), version))
        })
    }

    /// The capabilities the config must grant for this plugin to load.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut needed: Vec<&'static str> = self
            .imports
            .iter()
            .filter_map(|i| match classify(i) {
                Need::Capability(c) => Some(c),
                _ => None,
            })
            .collect();
        needed.sort_unstable();
        needed.dedup();
        needed
    }

    /// Imports no capability provides, each with why: a plugin that has
    /// any is refused whatever the config grants.
    pub fn never_granted(&self) -> Vec<(&str, &'static str)> {
        self.imports
            .iter()
            .filter_map(|i| match classify(i) {
                Need::Never(reason) => Some((i.as_str(), reason)),
                _ => None,
            })
            .collect()
    }

    /// Refuses a plugin built for another contract version, or one importing
    /// anything the config does not grant.
    pub fn check(&self, grants: &Grants) -> Result<(), Refusal> {
        let Some((interface, version)) = self.contract() else {
            return Err(Refusal::NotAPlugin(self.exports.join(", ")));
        };
        let compatible =
            Version::parse(version).is_some_and(|v| v.compatible_with(&CONTRACT_VERSION));
        if !compatible {
            return Err(Refusal::WrongContract {
                interface: interface.into(),
                found: version.into(),
            });
        }
        for import in &self.imports {
            if let Some(version) = import
                .strip_prefix(CONTRACT_PACKAGE)
                .and_then(|r| r.split_once('@'))
                .map(|(_, v)| v)
                && !Version::parse(version).is_some_and(|v| v.compatible_with(&CONTRACT_VERSION))
            {
                return Err(Refusal::WrongContract {
                    interface: import.clone(),
                    found: version.into(),
                });
            }
            match classify(import) {
                Need::Always => {}
                Need::Capability(capability) => {
                    if !grants.is_granted(capability) {
                        return Err(Refusal::NotGranted {
                            interface: import.clone(),
                            capability,
                        });
                    }
                }
                Need::Never(reason) => {
                    return Err(Refusal::Unsupported {
                        interface: import.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(imports: &[&str], export: &str) -> Inspection {
        Inspection {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: vec![export.into()],
        }
    }

    #[test]
    fn versions() {
        let host = CONTRACT_VERSION;
        assert!(Version::parse("0.1.3").unwrap().compatible_with(&host));
        assert!(!Version::parse("0.2.0").unwrap().compatible_with(&host));
        assert!(!Version::parse("1.0.0").unwrap().compatible_with(&host));
        assert_eq!(Version::parse("1.2"), None);
    }

    #[test]
    fn refusals_name_the_interface() {
        let ok = plugin(
            &["ha:sidecar/log@0.1.0", "wasi:io/streams@0.2.6"],
            "ha:sidecar/backend@0.1.0",
        );
        assert!(ok.check(&Grants::default()).is_ok());
        let e = plugin(&[], "ha:sidecar/backend@1.0.0")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ha:sidecar@1.0.0") && e.contains("0.1.0"), "{e}");
        let e = plugin(&["wasi:sockets/tcp@0.2.6"], "ha:sidecar/backend@0.1.0")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wasi:sockets/tcp@0.2.6") && e.contains("capabilities.tcp"),
            "{e}"
        );
        let e = plugin(
            &["wasi:filesystem/preopens@0.2.6"],
            "ha:sidecar/backend@0.1.0",
        )
        .check(&Grants::default())
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("wasi:filesystem/preopens@0.2.6") && e.contains("capabilities.filesystem"),
            "{e}"
        );
        let mut granted = Grants::default();
        granted.grant(
            &capabilities::filesystem::Filesystem,
            std::sync::Arc::new(capabilities::filesystem::Dir("/tmp".into())),
        );
        assert!(
            plugin(
                &["wasi:filesystem/preopens@0.2.6"],
                "ha:sidecar/backend@0.1.0"
            )
            .check(&granted)
            .is_ok()
        );
        let sockets = plugin(
            &[
                "wasi:sockets/tcp@0.2.6",
                "wasi:http/incoming-handler@0.2.6",
                "wasi:io/streams@0.2.6",
            ],
            "ha:sidecar/backend@0.1.0",
        );
        assert_eq!(
            sockets
                .never_granted()
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            ["wasi:http/incoming-handler@0.2.6"]
        );
        assert_eq!(sockets.capabilities(), ["tcp"]);
        let e = plugin(&[], "other:thing/x")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an ha-sidecar backend plugin"), "{e}");
    }
}
