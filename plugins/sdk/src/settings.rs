//! Plugin settings arrive as string pairs from the sidecar config. A setting
//! the plugin does not know is refused by name, so a typo never silently falls
//! back to a default.

use crate::{Failure, invalid};

pub struct Settings {
    plugin: &'static str,
    pairs: Vec<(String, String)>,
}

impl Settings {
    /// Refuses any key outside `known`.
    pub fn new(
        plugin: &'static str,
        pairs: Vec<(String, String)>,
        known: &[&str],
    ) -> Result<Self, Failure> {
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(invalid(format!(
                "plugin.settings.{key}: the {plugin} plugin has no such setting (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self { plugin, pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn string_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A whole number within `range`, or `default` when absent.
    pub fn u64_or(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, Failure> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        match raw.trim().parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(invalid(format!(
                "plugin.settings.{key}: {raw:?} is not a whole number in {}..={} (the {} plugin)",
                range.start(),
                range.end(),
                self.plugin
            ))),
        }
    }
}
