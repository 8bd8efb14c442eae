//! What a plugin is before it runs: which version of the contract it was
//! built for, and which host interfaces it imports. Refusals happen here, at
//! load, with the name of the offending interface, never at first use.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::contract::{self, PACKAGE, Version};
use crate::capabilities::{self, Grants};

const BACKEND_EXPORT: &str = "ha:sidecar/backend";

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
        "the plugin was built for contract {PACKAGE}@{found} ({interface}), but this sidecar speaks {}; rebuild the plugin with an SDK for one of those, or run a sidecar release that speaks {found}",
        contract::supported_list()
    )]
    WrongContract { interface: String, found: String },
    #[error(
        "the plugin imports {interface}, but this sidecar links {}; rebuild the plugin with an SDK for one of those, or run a sidecar release that speaks it",
        linked.join(", ")
    )]
    WrongCapabilityVersion {
        interface: String,
        linked: &'static [&'static str],
    },
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

    /// The supported contract version the plugin's backend export is
    /// compatible with, if any.
    pub fn contract_version(&self) -> Option<Version> {
        let (_, version) = self.contract()?;
        contract::supported(&Version::parse(version)?)
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

    /// Refuses a plugin built for a contract version this sidecar does not
    /// speak, one that mixes versions, or one importing anything the config
    /// does not grant. Returns the version the plugin is served as.
    pub fn check(&self, grants: &Grants) -> Result<Version, Refusal> {
        let Some((interface, found)) = self.contract() else {
            return Err(Refusal::NotAPlugin(self.exports.join(", ")));
        };
        let Some(version) = self.contract_version() else {
            return Err(Refusal::WrongContract {
                interface: interface.into(),
                found: found.into(),
            });
        };
        for import in &self.imports {
            let (bare, found) = import.split_once('@').unwrap_or((import.as_str(), ""));
            // The contract's own imports must be of the export's version.
            if bare.split('/').next() == Some(PACKAGE)
                && !Version::parse(found).is_some_and(|v| v.compatible_with(&version))
            {
                return Err(Refusal::WrongContract {
                    interface: import.clone(),
                    found: found.into(),
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
                    check_capability_version(import, bare, found)?;
                }
                Need::Never(reason) => {
                    return Err(Refusal::Unsupported {
                        interface: import.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(version)
    }
}

/// An import of a capability's own interface must be at a version its unit
/// links (WASI's are served by wasmtime-wasi at whatever 0.2 they ask).
fn check_capability_version(import: &str, bare: &str, found: &str) -> Result<(), Refusal> {
    let Some(capability) = capabilities::claiming(bare) else {
        return Ok(());
    };
    let linked = capability.linked();
    let served = linked.is_empty()
        || linked.iter().any(|l| {
            let (name, version) = l.split_once('@').unwrap_or((l, ""));
            name == bare
                && Version::parse(found)
                    .zip(Version::parse(version))
                    .is_some_and(|(f, v)| f.compatible_with(&v))
        });
    if served {
        Ok(())
    } else {
        Err(Refusal::WrongCapabilityVersion {
            interface: import.into(),
            linked,
        })
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
    fn both_contract_versions_load_and_are_not_mixed() {
        let mut secrets = Grants::default();
        secrets.grant(&capabilities::secrets::Secrets, std::sync::Arc::new(()));
        let current = plugin(
            &["ha:sidecar/log@0.2.0", "ha:secrets/store@0.1.0"],
            "ha:sidecar/backend@0.2.0",
        );
        assert_eq!(current.check(&secrets).unwrap(), contract::CURRENT);
        // Built for 0.1, when the capability was part of the contract.
        let previous = plugin(
            &["ha:sidecar/log@0.1.0", "ha:sidecar/secrets@0.1.0"],
            "ha:sidecar/backend@0.1.0",
        );
        assert_eq!(previous.check(&secrets).unwrap(), contract::V0_1);
        assert_eq!(previous.capabilities(), ["secrets"]);
        let e = previous.check(&Grants::default()).unwrap_err().to_string();
        assert!(e.contains("capabilities.secrets"), "{e}");
        let mixed = plugin(&["ha:sidecar/log@0.1.0"], "ha:sidecar/backend@0.2.0")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("ha:sidecar/log@0.1.0"), "{mixed}");
        let e = plugin(&["ha:secrets/store@0.2.0"], "ha:sidecar/backend@0.2.0")
            .check(&secrets)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ha:secrets/store@0.2.0") && e.contains("ha:secrets/store@0.1.0"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_interface() {
        let ok = plugin(
            &["ha:sidecar/log@0.2.0", "wasi:io/streams@0.2.6"],
            "ha:sidecar/backend@0.2.0",
        );
        assert!(ok.check(&Grants::default()).is_ok());
        let e = plugin(&[], "ha:sidecar/backend@1.0.0")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ha:sidecar@1.0.0") && e.contains("ha:sidecar@0.2.0, ha:sidecar@0.1.0"),
            "{e}"
        );
        let e = plugin(&["wasi:sockets/tcp@0.2.6"], "ha:sidecar/backend@0.2.0")
            .check(&Grants::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wasi:sockets/tcp@0.2.6") && e.contains("capabilities.tcp"),
            "{e}"
        );
        let e = plugin(
            &["wasi:filesystem/preopens@0.2.6"],
            "ha:sidecar/backend@0.2.0",
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
                "ha:sidecar/backend@0.2.0"
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
            "ha:sidecar/backend@0.2.0",
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
