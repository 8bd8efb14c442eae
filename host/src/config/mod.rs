//! The sidecar's one configuration file.
//!
//! Parsing is strict: an unknown key, a value of the wrong shape or a timing
//! that breaks a safety invariant stops the sidecar at start with the key, the
//! value, the reason and what to do. Relative paths are resolved against the
//! directory of the config file, so a config works from any working directory.

mod election;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::capabilities::{self, SectionContext};
use crate::http::ApiToken;
use crate::section::{Keys as Validator, flink};

pub use crate::capabilities::Grants;
pub use crate::section::{Bytes, ConfigError, Dur, FlinkDur, Timing, parse_duration};
pub use election::{Candidacy, ElectionConfig};

/// The file as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// A Flink config file to take the HA keys from (see `flink.rs`).
    flink_config: Option<PathBuf>,
    member: RawMember,
    #[serde(default)]
    http: RawHttp,
    plugin: RawPlugin,
    /// Each capability's section, read and checked by that capability (see
    /// `capabilities::ALL`); here only their names are checked.
    #[serde(default)]
    capabilities: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    election: election::RawElection,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    jobs: RawJobs,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStorage {
    dir: Option<String>,
    inline_limit: Option<Bytes>,
    sweep_interval: Option<Dur>,
    sweep_grace: Option<Dur>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJobs {
    retained_checkpoints: Option<u32>,
    delete_result_on_commit: Option<bool>,
    #[serde(default)]
    cleanup: RawCleanup,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCleanup {
    initial_backoff: Option<Dur>,
    max_backoff: Option<Dur>,
    attempts: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMember {
    id: String,
    #[serde(default)]
    address: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHttp {
    listen: Option<String>,
    probe_listen: Option<String>,
    token_file: Option<PathBuf>,
    max_body: Option<Bytes>,
    max_wait: Option<Dur>,
    max_connections: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPlugin {
    path: PathBuf,
    sha256: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, serde_yaml::Value>,
    memory_limit: Option<Bytes>,
    call_timeout: Option<Dur>,
    cache_dir: Option<PathBuf>,
    restart_backoff: Option<Dur>,
    restart_backoff_max: Option<Dur>,
    state_instances: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTiming {
    lease: Option<Dur>,
    renew_deadline: Option<Dur>,
    retry_period: Option<Dur>,
    resign_holdoff: Option<Dur>,
}

/// The validated configuration the sidecar runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub member_id: String,
    pub member_address: String,
    pub listen: SocketAddr,
    /// A second listener serving only what probes and scrapers read.
    pub probe_listen: Option<SocketAddr>,
    /// The bearer token writes on `listen` need (`http.token-file`, read at load).
    pub token: Option<Arc<ApiToken>>,
    pub max_body: u64,
    pub max_wait: Duration,
    /// None: derived at start from the file-descriptor limit (see `descriptors`).
    pub max_connections: Option<u64>,
    pub plugin: PluginConfig,
    pub grants: Grants,
    pub timing: Timing,
    pub election: ElectionConfig,
    pub storage: StorageConfig,
    pub jobs: JobsConfig,
}

/// The storage directory for values above the inline limit.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// None: no storage dir; larger values are refused.
    pub dir: Option<PathBuf>,
    pub inline_limit: u64,
    pub sweep_interval: Duration,
    pub sweep_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub retained_checkpoints: usize,
    pub delete_result_on_commit: bool,
    pub cleanup_initial_backoff: Duration,
    pub cleanup_max_backoff: Duration,
    /// None: unlimited.
    pub cleanup_attempts: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub settings: Vec<(String, String)>,
    pub memory_limit: u64,
    pub call_timeout: Duration,
    /// None: the compile cache is off.
    pub cache_dir: Option<PathBuf>,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// At most this many state calls run at once, each in its own instance
    /// (see `state::pool`); the filesystem capability forces one.
    pub state_instances: usize,
}

/// client-go's defaults for core components: tolerant of API hiccups, quick enough to fail over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4040";
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);
/// Highest `http.max-connections`: each connection may buffer up to
/// `http::MAX_BUF`, so more would let clients take gigabytes.
pub const MAX_CONNECTIONS: u64 = 65_536;
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Enough to keep a small backend's round trips overlapping; each instance
/// costs its memory only once it is needed (they are made on demand).
pub const DEFAULT_STATE_INSTANCES: u64 = 8;
/// Each instance may take `plugin.memory-limit`: more than this is a typo.
pub const MAX_STATE_INSTANCES: u64 = 64;
/// Small enough that many values fit a 1 MiB Kubernetes object.
pub const DEFAULT_INLINE_LIMIT: u64 = 16 << 10;

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let v = Validator { path, text, base };
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| v.parse_error(None, e))?;
        let mut raw = raw;
        let flink = match raw.flink_config.take() {
            Some(flink) => {
                let file = v.resolve(&flink);
                let f = flink::FlinkConfig::load(&file)
                    .map_err(|reason| v.err("flink-config", file.display(), reason))?;
                v.apply_flink(&mut raw, &f)?;
                Some(f)
            }
            None => None,
        };
        v.validate(raw, flink.as_ref())
    }
}

impl Validator<'_> {
    /// Fills what the sidecar config leaves unset from Flink's HA keys.
    fn apply_flink(&self, raw: &mut RawConfig, f: &flink::FlinkConfig) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &str, reason: String| ConfigError::Invalid {
            path: self.path.into(),
            key: format!("flink-config {}: {key}", f.path),
            value: format!("{value:?}"),
            reason,
        };
        if let Some((k, v)) = f.get(flink::HA_TYPE) {
            let readers: Vec<&str> = capabilities::ALL
                .iter()
                .filter_map(|c| c.flink_ha_type())
                .collect();
            if !readers.iter().any(|r| v.eq_ignore_ascii_case(r)) {
                return Err(bad(
                    k,
                    v,
                    format!(
                        "only {} HA settings are read from a Flink config in this version; configure the sidecar's capabilities directly",
                        readers.join(", ")
                    ),
                ));
            }
        }
        let cluster_id = f
            .get(flink::CLUSTER_ID)
            .map(|(_, v)| v.trim_matches('/').to_string());
        if let Some(id) = &cluster_id {
            raw.plugin
                .settings
                .entry("cluster-id".into())
                .or_insert_with(|| serde_yaml::Value::String(id.clone()));
        }
        if raw.storage.dir.is_none()
            && let Some((_, dir)) = f.get(flink::STORAGE_DIR)
        {
            // Flink keeps a cluster's files in <storageDir>/<cluster-id>.
            let id = cluster_id.unwrap_or_else(|| "default".into());
            raw.storage.dir = Some(format!("{}/{id}", dir.trim_end_matches('/')));
        }
        Ok(())
    }

    fn validate(
        &self,
        raw: RawConfig,
        flink: Option<&flink::FlinkConfig>,
    ) -> Result<Config, ConfigError> {
        let id = raw.member.id;
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        {
            return Err(self.err("member.id", format!("{id:?}"), "must be 1 to 128 characters of A-Z a-z 0-9 . _ - : and unique in the cluster (the pod or host name is a good choice)"));
        }

        let listen_raw = raw.http.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            self.err(
                "http.listen",
                format!("{listen_raw:?}"),
                "is not an IP address with a port, such as 127.0.0.1:4040",
            )
        })?;
        let probe_listen = match raw.http.probe_listen {
            None => None,
            Some(p) => {
                let addr: SocketAddr = p.parse().map_err(|_| {
                    self.err(
                        "http.probe-listen",
                        format!("{p:?}"),
                        "is not an IP address with a port, such as 0.0.0.0:4041",
                    )
                })?;
                if addr.port() == listen.port()
                    && (addr.ip() == listen.ip()
                        || addr.ip().is_unspecified()
                        || listen.ip().is_unspecified())
                {
                    return Err(self.err(
                        "http.probe-listen",
                        addr,
                        format!("overlaps http.listen ({listen}); give the probe listener a port of its own, such as {}:4041", addr.ip()),
                    ));
                }
                Some(addr)
            }
        };
        let token = match raw.http.token_file {
            None => None,
            Some(f) => {
                let file = self.resolve(&f);
                let token = ApiToken::load(&file).map_err(|e| {
                    self.err(
                        "http.token-file",
                        file.display(),
                        format!(
                            "{e}; the file holds the bearer token writes to http.listen must carry"
                        ),
                    )
                })?;
                Some(Arc::new(token))
            }
        };
        let max_body = raw.http.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0);
        if !(1..=(256 << 20)).contains(&max_body) {
            return Err(self.err(
                "http.max-body",
                Bytes(max_body),
                "must be between 1 byte and 256MiB",
            ));
        }
        let max_wait = raw.http.max_wait.map_or(DEFAULT_MAX_WAIT, |d| d.0);
        if max_wait > Duration::from_secs(3600) {
            return Err(self.err("http.max-wait", Dur(max_wait), "must be at most 1h"));
        }

        let max_connections = raw.http.max_connections;
        if let Some(n) = max_connections
            && !(crate::descriptors::MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&n)
        {
            return Err(self.err(
                "http.max-connections",
                n,
                format!("must be between {} (the guarded process, its probes and a long poll need slots next to a flood) and {MAX_CONNECTIONS}; leave it unset to derive it from the file-descriptor limit", crate::descriptors::MIN_CONNECTIONS),
            ));
        }

        let timing = self.timing(&raw.timing)?;
        let mut raw_plugin = raw.plugin;
        let grants = self.capabilities(raw.capabilities, &timing, flink)?;
        if let Some(f) = flink {
            for g in grants.iter() {
                for (key, value) in g.capability.flink_plugin_settings(f) {
                    raw_plugin
                        .settings
                        .entry(key)
                        .or_insert(serde_yaml::Value::String(value));
                }
            }
        }
        let plugin = self.plugin(raw_plugin)?;

        let election = self.election(raw.election)?;
        let storage = self.storage(raw.storage)?;
        let jobs = self.jobs(raw.jobs)?;

        Ok(Config {
            election,
            storage,
            jobs,
            source: self.path.into(),
            member_id: id,
            member_address: raw.member.address,
            listen,
            probe_listen,
            token,
            max_body,
            max_wait,
            max_connections,
            plugin,
            grants,
            timing,
        })
    }

    /// Each section under `capabilities:` goes to the capability of that
    /// name, which checks it; a name no capability has is refused.
    fn capabilities(
        &self,
        sections: BTreeMap<String, serde::de::IgnoredAny>,
        timing: &Timing,
        flink: Option<&flink::FlinkConfig>,
    ) -> Result<Grants, ConfigError> {
        if let Some(unknown) = sections.keys().find(|k| capabilities::named(k).is_none()) {
            let known: Vec<String> = capabilities::ALL
                .iter()
                .map(|c| format!("`{}`", c.name()))
                .collect();
            return Err(ConfigError::Parse {
                path: self.path.into(),
                key: "capabilities".into(),
                message: format!(
                    "unknown field `{unknown}`, expected one of {}",
                    known.join(", ")
                ),
            });
        }
        let cx = SectionContext {
            keys: self,
            timing,
            flink,
        };
        let mut grants = Grants::default();
        for c in capabilities::ALL {
            if let Some(settings) = c.parse(&cx)? {
                grants.grant(*c, settings);
            }
        }
        Ok(grants)
    }

    /// Enforces lease > renew-deadline > 1.2 × retry-period: a leader that
    /// cannot renew steps down before any standby may take over, and it gets
    /// more than one renewal attempt before it must.
    fn timing(&self, t: &RawTiming) -> Result<Timing, ConfigError> {
        let lease = t.lease.map_or(DEFAULT_LEASE, |d| d.0);
        let renew = t.renew_deadline.map_or(DEFAULT_RENEW_DEADLINE, |d| d.0);
        let retry = t.retry_period.map_or(DEFAULT_RETRY_PERIOD, |d| d.0);
        let holdoff = t.resign_holdoff.map_or(lease, |d| d.0);
        if retry < Duration::from_millis(10) {
            return Err(self.err("timing.retry-period", Dur(retry), "must be at least 10ms"));
        }
        if renew >= lease {
            return Err(self.err(
                "timing.renew-deadline",
                Dur(renew),
                format!("must be shorter than timing.lease ({}), so that a leader that cannot renew steps down before a standby may take over; lower timing.renew-deadline or raise timing.lease", Dur(lease)),
            ));
        }
        if renew.as_secs_f64() <= 1.2 * retry.as_secs_f64() {
            return Err(self.err(
                "timing.renew-deadline",
                Dur(renew),
                format!("must be longer than 1.2 × timing.retry-period ({}), so that a leader gets more than one renewal attempt before it must step down; raise timing.renew-deadline or lower timing.retry-period", Dur(retry)),
            ));
        }
        if lease > Duration::from_secs(u32::MAX as u64 / 1000) {
            return Err(self.err("timing.lease", Dur(lease), "is too long (at most 49 days)"));
        }
        Ok(Timing {
            lease,
            renew_deadline: renew,
            retry_period: retry,
            resign_holdoff: holdoff,
        })
    }

    fn storage(&self, s: RawStorage) -> Result<StorageConfig, ConfigError> {
        let dir = match s.dir {
            None => None,
            Some(raw) => {
                let path = match raw.split_once("://") {
                    Some(("file", rest)) => PathBuf::from(rest),
                    Some((scheme, _)) => return Err(self.err("storage.dir", format!("{raw:?}"), format!("{scheme}:// is not supported: this version stores files on a local or mounted filesystem (file:///path or a plain path)"))),
                    None => PathBuf::from(&raw),
                };
                if path.as_os_str().is_empty() {
                    return Err(self.err("storage.dir", format!("{raw:?}"), "names no directory"));
                }
                Some(self.resolve(&path))
            }
        };
        let inline_limit = s.inline_limit.map_or(DEFAULT_INLINE_LIMIT, |b| b.0);
        if inline_limit > 512 << 10 {
            return Err(self.err("storage.inline-limit", Bytes(inline_limit), "must be at most 512KiB: larger values belong in the storage dir, and backends keep small metadata"));
        }
        let sweep_interval = s.sweep_interval.map_or(Duration::from_secs(300), |d| d.0);
        let sweep_grace = s.sweep_grace.map_or(Duration::from_secs(600), |d| d.0);
        if sweep_interval.is_zero() {
            return Err(self.err(
                "storage.sweep-interval",
                Dur(sweep_interval),
                "must be above zero",
            ));
        }
        Ok(StorageConfig {
            dir,
            inline_limit,
            sweep_interval,
            sweep_grace,
        })
    }

    /// Flink's defaults: keep 1 checkpoint, delete the result on commit,
    /// retry cleanup from 1 s doubling to 1 h, without limit.
    fn jobs(&self, j: RawJobs) -> Result<JobsConfig, ConfigError> {
        let retained = j.retained_checkpoints.unwrap_or(1);
        if retained == 0 {
            return Err(self.err(
                "jobs.retained-checkpoints",
                retained,
                "must be at least 1: a job needs its latest checkpoint to recover",
            ));
        }
        let initial = j
            .cleanup
            .initial_backoff
            .map_or(Duration::from_secs(1), |d| d.0);
        let max = j
            .cleanup
            .max_backoff
            .map_or(Duration::from_secs(3600), |d| d.0);
        if initial.is_zero() || initial > max {
            return Err(self.err(
                "jobs.cleanup.initial-backoff",
                Dur(initial),
                format!(
                    "must be above zero and at most jobs.cleanup.max-backoff ({})",
                    Dur(max)
                ),
            ));
        }
        let attempts = match j.cleanup.attempts {
            None => None,
            Some(serde_yaml::Value::String(s)) if s == "unlimited" => None,
            Some(serde_yaml::Value::Number(n))
                if n.as_u64()
                    .is_some_and(|n| (1..=u32::MAX as u64).contains(&n)) =>
            {
                n.as_u64().map(|n| n as u32)
            }
            Some(other) => {
                return Err(self.err(
                    "jobs.cleanup.attempts",
                    format!("{other:?}"),
                    "must be a whole number from 1, or \"unlimited\"",
                ));
            }
        };
        Ok(JobsConfig {
            retained_checkpoints: retained as usize,
            delete_result_on_commit: j.delete_result_on_commit.unwrap_or(true),
            cleanup_initial_backoff: initial,
            cleanup_max_backoff: max,
            cleanup_attempts: attempts,
        })
    }

    fn plugin(&self, p: RawPlugin) -> Result<PluginConfig, ConfigError> {
        let path = self.resolve(&p.path);
        if !path.is_file() {
            return Err(self.err("plugin.path", path.display(), "no such file: build the plugins (see README) or fix the path (relative paths start at the config file's directory)"));
        }
        let sha256 = match p.sha256 {
            Some(h) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(h) => {
                return Err(self.err(
                    "plugin.sha256",
                    format!("{h:?}"),
                    "must be 64 hex digits (the output of sha256sum)",
                ));
            }
            None => None,
        };
        let mut settings = Vec::new();
        for (key, value) in p.settings {
            let text = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.err(
                        &format!("plugin.settings.{key}"),
                        format!("{other:?}"),
                        "must be a string, number or boolean",
                    ));
                }
            };
            settings.push((key, text));
        }
        let memory_limit = p.memory_limit.map_or(DEFAULT_MEMORY_LIMIT, |b| b.0);
        if !((1 << 20)..=(4u64 << 30)).contains(&memory_limit) {
            return Err(self.err(
                "plugin.memory-limit",
                Bytes(memory_limit),
                "must be between 1MiB and 4GiB",
            ));
        }
        let call_timeout = p.call_timeout.map_or(DEFAULT_CALL_TIMEOUT, |d| d.0);
        if call_timeout < Duration::from_millis(10) || call_timeout > Duration::from_secs(600) {
            return Err(self.err(
                "plugin.call-timeout",
                Dur(call_timeout),
                "must be between 10ms and 10m",
            ));
        }
        let restart_backoff = p
            .restart_backoff
            .map_or(Duration::from_millis(100), |d| d.0);
        let restart_backoff_max = p
            .restart_backoff_max
            .map_or(Duration::from_secs(10), |d| d.0);
        if restart_backoff.is_zero() || restart_backoff > restart_backoff_max {
            return Err(self.err(
                "plugin.restart-backoff",
                Dur(restart_backoff),
                format!(
                    "must be above zero and at most plugin.restart-backoff-max ({})",
                    Dur(restart_backoff_max)
                ),
            ));
        }
        let state_instances = p.state_instances.unwrap_or(DEFAULT_STATE_INSTANCES);
        if !(1..=MAX_STATE_INSTANCES).contains(&state_instances) {
            return Err(self.err(
                "plugin.state-instances",
                state_instances,
                format!(
                    "must be between 1 and {MAX_STATE_INSTANCES}: how many state calls may run at once, each in its own plugin instance of up to plugin.memory-limit"
                ),
            ));
        }
        let cache_dir = match p.cache_dir {
            Some(dir) if dir.as_os_str() == "off" => None,
            Some(dir) => Some(self.resolve(&dir)),
            None => default_cache_dir(),
        };
        Ok(PluginConfig {
            path,
            sha256,
            settings,
            memory_limit,
            call_timeout,
            cache_dir,
            restart_backoff,
            restart_backoff_max,
            state_instances: state_instances as usize,
        })
    }
}

/// `$XDG_CACHE_HOME/ha-sidecar`, else `$HOME/.cache/ha-sidecar`; none if neither is set.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ha-sidecar"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let path = dir.path().join("c.yaml");
        Config::parse(&path, yaml)
    }

    const MIN: &str = "member: {id: a}\nplugin: {path: p.wasm}\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.timing.lease, DEFAULT_LEASE);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.plugin.path.ends_with("p.wasm"));
    }

    #[test]
    fn state_instances_default_and_bounds() {
        assert_eq!(
            parse(MIN).unwrap().plugin.state_instances,
            DEFAULT_STATE_INSTANCES as usize
        );
        let four = "member: {id: a}\nplugin: {path: p.wasm, state-instances: 4}\n";
        assert_eq!(parse(four).unwrap().plugin.state_instances, 4);
        for bad in ["0", "65"] {
            let e = parse(&format!(
                "member: {{id: a}}\nplugin: {{path: p.wasm, state-instances: {bad}}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("plugin.state-instances") && e.contains("between 1 and 64"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MIN}timing: {{leese: 3s}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timing") && e.contains("leese"), "{e}");
    }

    #[test]
    fn timing_invariants_are_enforced() {
        let e = parse(&format!(
            "{MIN}timing: {{lease: 15s, renew-deadline: 15s, retry-period: 5s}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("timing.renew-deadline") && e.contains("shorter than timing.lease"),
            "{e}"
        );
        let e = parse(&format!(
            "{MIN}timing: {{lease: 15s, renew-deadline: 2s, retry-period: 2s}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("1.2"), "{e}");
    }

    #[test]
    fn flink_config_fills_what_the_sidecar_config_leaves_unset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        std::fs::write(
            dir.path().join("flink-conf.yaml"),
            "high-availability: zookeeper\nhigh-availability.zookeeper.quorum: zk1:2181, zk2:2181\nhigh-availability.zookeeper.path.root: /flink\nhigh-availability.cluster-id: /prod\nhigh-availability.storageDir: file:///ha\nhigh-availability.zookeeper.client.session-timeout: 30000\nhigh-availability.zookeeper.client.tolerate-suspended-connections: true\n",
        )
        .unwrap();
        let c = Config::parse(&dir.path().join("c.yaml"), "flink-config: flink-conf.yaml\nmember: {id: a}\nplugin: {path: p.wasm, settings: {root: /mine}}\n").unwrap();
        let zk = c
            .grants
            .get::<crate::capabilities::zookeeper::ZkSettings>()
            .unwrap();
        assert_eq!(zk.quorum, "zk1:2181,zk2:2181");
        assert_eq!(zk.session_timeout, Duration::from_secs(30));
        assert!(zk.tolerate_suspended_connections);
        assert!(
            c.plugin.settings.contains(&("root".into(), "/mine".into())),
            "the sidecar's own value wins"
        );
        assert!(
            c.plugin
                .settings
                .contains(&("cluster-id".into(), "prod".into()))
        );
        assert_eq!(c.storage.dir.as_deref(), Some(Path::new("/ha/prod")));
        std::fs::write(
            dir.path().join("k8s.yaml"),
            "high-availability:\n  type: kubernetes\n",
        )
        .unwrap();
        let e = Config::parse(
            &dir.path().join("c.yaml"),
            "flink-config: k8s.yaml\nmember: {id: a}\nplugin: {path: p.wasm}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("high-availability.type") && e.contains("kubernetes"),
            "{e}"
        );
    }

    #[test]
    fn storage_and_jobs() {
        let c = parse(&format!(
            "{MIN}storage: {{dir: 'file:///var/ha'}}\njobs: {{cleanup: {{attempts: unlimited}}}}\n"
        ))
        .unwrap();
        assert_eq!(c.storage.dir.as_deref(), Some(Path::new("/var/ha")));
        assert_eq!(c.jobs.cleanup_attempts, None);
        assert_eq!(c.jobs.retained_checkpoints, 1);
        let e = parse(&format!("{MIN}storage: {{dir: 's3://bucket/x'}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.dir") && e.contains("s3://"), "{e}");
        let e = parse(&format!("{MIN}jobs: {{cleanup: {{attempts: 0}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs.cleanup.attempts"), "{e}");
    }

    #[test]
    fn outgoing_http_endpoints_are_checked_one_by_one() {
        let c = parse(&format!(
            "{MIN}capabilities: {{outgoing-http: {{endpoints: ['http://127.0.0.1:2379', 'https://etcd.example']}}}}\n"
        ))
        .unwrap();
        let granted = c
            .grants
            .get::<crate::capabilities::outgoing_http::Endpoints>()
            .unwrap();
        assert_eq!(granted.0[1].to_string(), "https://etcd.example:443");
        let e = parse(&format!(
            "{MIN}capabilities: {{outgoing-http: {{endpoints: ['http://ok:1', 'http://etcd:2379/v3']}}}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("capabilities.outgoing-http.endpoints[1]")
                && e.contains("http://etcd:2379/v3")
                && e.contains("without a path"),
            "{e}"
        );
        let e = parse(&format!(
            "{MIN}capabilities: {{outgoing-http: {{endpoints: []}}}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("lists no endpoint"), "{e}");
    }

    #[test]
    fn capability_sections_go_to_their_capability() {
        let e = parse(&format!("{MIN}capabilities: {{sockets: {{}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("capabilities")
                && e.contains("`sockets`")
                && e.contains("`zookeeper`")
                && e.contains("`outgoing-http`"),
            "{e}"
        );
        let e = parse(&format!(
            "{MIN}capabilities: {{zookeeper: {{quorum: 'zk1:2181', client: {{sesion-timeout: 5s}}}}}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("capabilities.zookeeper.client")
                && e.contains("sesion-timeout")
                && e.contains("line 3"),
            "{e}"
        );
        let e = parse(&format!(
            "{MIN}capabilities: {{zookeeper: {{quorum: 'zk1'}}}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("capabilities.zookeeper.quorum"), "{e}");
        let c = parse(&format!(
            "{MIN}capabilities: {{filesystem: {{dir: fs}}, zookeeper: {{quorum: 'zk1:2181'}}}}\n"
        ))
        .unwrap();
        assert!(c.grants.is_granted("filesystem") && c.grants.is_granted("zookeeper"));
        assert!(!c.grants.is_granted("kubernetes"));
        let dir = c
            .grants
            .get::<crate::capabilities::filesystem::Dir>()
            .unwrap();
        assert!(dir.0.is_absolute() && dir.0.ends_with("fs"), "{dir:?}");
    }

    #[test]
    fn max_connections_is_checked_and_optional() {
        assert_eq!(parse(MIN).unwrap().max_connections, None);
        let c = parse(&format!("{MIN}http: {{max-connections: 300}}\n")).unwrap();
        assert_eq!(c.max_connections, Some(300));
        for bad in ["0", "15", "65537"] {
            let e = parse(&format!("{MIN}http: {{max-connections: {bad}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("http.max-connections") && e.contains(bad) && e.contains("between 16"),
                "{e}"
            );
        }
        let e = parse(&format!("{MIN}http: {{max-connections: lots}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.max-connections"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let e = parse(&format!("{MIN}http: {{listen: 'localhost'}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen") && e.contains("localhost"), "{e}");
        let e = parse("member: {id: 'a b'}\nplugin: {path: p.wasm}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("member.id"), "{e}");
        let e = parse("member: {id: a}\nplugin: {path: missing.wasm}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plugin.path") && e.contains("missing.wasm"),
            "{e}"
        );
        let e = parse(&format!("{MIN}timing: {{lease: 15}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timing.lease") && e.contains("no unit"), "{e}");
    }
}
