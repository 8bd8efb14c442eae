//! The `secrets` capability: credentials the host keeps for the plugin
//! (`ha:sidecar/secrets`), so a password is never in plain plugin settings.
//!
//! The config names each secret and its source, a file or an environment
//! variable (`capabilities.secrets.<name>: {file: PATH}` or `{env: VAR}`).
//! The host reads every source when the plugin is loaded, so a missing file
//! or unset variable fails the start with the key that names it rather than
//! a later plugin call. A plugin asking for a name not configured gets none
//! (and the host logs the names it has); no value is ever logged or shown in
//! the config's debug form, which holds only the sources.
//!
//! A plugin that imports the interface while the config grants no secrets
//! gets an empty store: it gives nothing away, and it lets a plugin take a
//! credential only when its settings ask for one (etcd with authentication)
//! without every config of that plugin granting secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::{Capability, Connection, HostState, InstanceParts, Prepared, SectionContext, Settings};
use crate::bindings::contract_0_1::ha::sidecar::secrets as contract_0_1;
use crate::bindings::ha::secrets::store as secrets;
use crate::metrics::Metrics;
use crate::section::ConfigError;

pub struct Secrets;

const KEY: &str = "capabilities.secrets";

/// Where each named secret is read from (the values are read at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub BTreeMap<String, Source>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(String),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSource {
    file: Option<PathBuf>,
    env: Option<String>,
}

impl Capability for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn claims(&self, interface: &str) -> bool {
        matches!(interface, "ha:secrets/store" | "ha:sidecar/secrets")
    }

    fn linked(&self) -> &'static [&'static str] {
        &["ha:secrets/store@0.1.0", "ha:sidecar/secrets@0.1.0"]
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        let Some(raw) = cx.section::<BTreeMap<String, RawSource>>(self.name())? else {
            return Ok(None);
        };
        if raw.is_empty() {
            return Err(cx.keys.err(
                KEY,
                "{}",
                format!("names no secret; add one (such as pg-password: {{env: PG_PASSWORD}}), or remove {KEY}"),
            ));
        }
        let mut sources = BTreeMap::new();
        for (name, s) in raw {
            let key = format!("{KEY}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(cx.keys.err(
                    &key,
                    format!("{name:?}"),
                    "a secret's name is letters, digits, '-' and '_' (the plugin asks for it by this name)",
                ));
            }
            let source = match (s.file, s.env) {
                (Some(file), None) => Source::File(cx.keys.resolve(&file)),
                (None, Some(env)) if !env.is_empty() && !env.contains('=') => Source::Env(env),
                (None, Some(env)) => {
                    return Err(cx.keys.err(
                        &format!("{key}.env"),
                        format!("{env:?}"),
                        "is not an environment variable's name",
                    ));
                }
                _ => {
                    return Err(cx.keys.err(
                        &key,
                        "(sources)",
                        "needs exactly one source: {file: PATH} or {env: VARIABLE}",
                    ));
                }
            };
            sources.insert(name, source);
        }
        Ok(Some(Arc::new(Sources(sources))))
    }

    /// Reads every secret now: one that cannot be read fails the load.
    fn prepare(
        &self,
        settings: &dyn Settings,
        _connection: Option<Arc<dyn Connection>>,
        _metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        let sources: &Sources = super::typed(settings, self)?;
        let mut values = BTreeMap::new();
        for (name, source) in &sources.0 {
            values.insert(name.clone(), read(name, source)?);
        }
        Ok(Box::new(Values(Arc::new(values))))
    }

    fn empty_grant(&self) -> Option<Arc<dyn Settings>> {
        Some(Arc::new(Sources(BTreeMap::new())))
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        secrets::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
        // Its 0.1.0 name, for plugins built for contract 0.1.
        contract_0_1::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)
    }
}

/// One secret's value: a file's content without one trailing line break
/// (as most tools write them), or a variable's value.
fn read(name: &str, source: &Source) -> anyhow::Result<String> {
    match source {
        Source::File(path) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "{KEY}.{name}.file: cannot read {}: {e}; create it, or point the key at the file that holds the secret",
                    path.display()
                )
            })?;
            let v = raw.strip_suffix('\n').unwrap_or(&raw);
            Ok(v.strip_suffix('\r').unwrap_or(v).to_string())
        }
        Source::Env(var) => std::env::var(var).map_err(|e| {
            anyhow::anyhow!(
                "{KEY}.{name}.env: environment variable {var} {}; set it in the sidecar's environment",
                match e {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                }
            )
        }),
    }
}

/// The values, shared by every instance of the plugin; Debug names only
/// the secrets, never their values.
#[derive(Clone)]
pub struct Values(Arc<BTreeMap<String, String>>);

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Prepared for Values {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        parts.contexts.insert(self.clone());
        Ok(())
    }

    fn describe(&self) -> Option<String> {
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        (!names.is_empty()).then(|| format!("secrets {}", names.join(", ")))
    }
}

impl secrets::Host for HostState {
    async fn get(&mut self, name: String) -> Option<String> {
        let values = self.contexts().get::<Values>()?;
        let value = values.0.get(&name).cloned();
        if value.is_none() {
            tracing::warn!(
                role = self.role(),
                asked = %name,
                configured = ?values,
                "the plugin asked for a secret the config does not name; add it under {KEY} if the plugin should have it"
            );
        }
        value
    }
}

/// The same under its 0.1.0 name, `ha:sidecar/secrets`, for plugins built
/// for contract 0.1.
impl contract_0_1::Host for HostState {
    async fn get(&mut self, name: String) -> Option<String> {
        secrets::Host::get(self, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_one_trailing_line_break_and_debug_hides_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read("pw", &Source::File(path)).unwrap(), "s3cret");
        let e = read("pw", &Source::File(dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("capabilities.secrets.pw.file"), "{e}");
        let e = read("pw", &Source::Env("HA_SIDECAR_SURELY_UNSET_VAR".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HA_SIDECAR_SURELY_UNSET_VAR") && e.contains("is not set"),
            "{e}"
        );
        let v = Values(Arc::new([("pw".to_string(), "s3cret".to_string())].into()));
        assert!(!format!("{v:?}").contains("s3cret"));
    }
}
