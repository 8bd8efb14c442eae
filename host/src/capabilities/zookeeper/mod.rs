//! The `zookeeper` capability: one ZooKeeper session per sidecar (see
//! `session`), shared by every instance of the plugin, with Flink's
//! connection settings (`capabilities.zookeeper`, checked here, or Flink's
//! own `high-availability.zookeeper.*` keys from a Flink config). The
//! session's health ends leadership when the session can no longer back it;
//! `ops` answers the plugin's calls.

mod contract_0_1;
mod kerberos;
mod keytab;
mod ops;
mod sasl;
mod session;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use wasmtime::component::Linker;

pub use session::{ConnectError, ZkSession, stat, to_wit};

use super::{
    BoxFuture, Capability, Connection, Health, HostState, InstanceParts, Prepared, SectionContext,
    Settings,
};
use crate::metrics::Metrics;
use crate::section::{ConfigError, Dur, FlinkConfig, FlinkDur, parse_flink_duration};

pub struct ZooKeeper;

/// Connection settings, named after Flink's `high-availability.zookeeper.*` keys.
/// Its `Debug` leaves the digest credentials out, so no debug print or
/// error that carries the settings can put a password into a log.
#[derive(Clone)]
pub struct ZkSettings {
    pub quorum: String,
    pub session_timeout: Duration,
    pub connection_timeout: Duration,
    pub retry_wait: Duration,
    pub max_retry_wait: Duration,
    pub max_retry_attempts: u32,
    pub tolerate_suspended_connections: bool,
    /// `creator`: nodes readable and writable only by the authenticated identity.
    pub acl_creator: bool,
    /// Digest authentication: `user:password`.
    pub digest: Option<String>,
    /// TLS to every member (`tls`); none: plain TCP.
    pub tls: Option<tls::ZkTls>,
    /// SASL authentication (`sasl`): DIGEST-MD5 or Kerberos.
    pub sasl: Option<sasl::ZkSasl>,
}

impl std::fmt::Debug for ZkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkSettings")
            .field("quorum", &self.quorum)
            .field("session_timeout", &self.session_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("retry_wait", &self.retry_wait)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("max_retry_attempts", &self.max_retry_attempts)
            .field(
                "tolerate_suspended_connections",
                &self.tolerate_suspended_connections,
            )
            .field("acl_creator", &self.acl_creator)
            .field("digest", &self.digest.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// Flink's `high-availability.zookeeper.*` keys, without that prefix.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawZookeeper {
    quorum: String,
    #[serde(default)]
    client: RawZkClient,
    /// `user:password` for digest authentication.
    digest: Option<String>,
    tls: Option<tls::RawZkTls>,
    sasl: Option<sasl::RawZkSasl>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawZkClient {
    session_timeout: Option<FlinkDur>,
    connection_timeout: Option<FlinkDur>,
    retry_wait: Option<FlinkDur>,
    max_retry_wait: Option<FlinkDur>,
    max_retry_attempts: Option<u32>,
    tolerate_suspended_connections: Option<bool>,
    acl: Option<String>,
}

const KEY: &str = "capabilities.zookeeper";

/// Flink's keys (and their deprecated aliases) this capability reads.
const FLINK_QUORUM: &[&str] = &[
    "high-availability.zookeeper.quorum",
    "recovery.zookeeper.quorum",
];
const FLINK_ROOT: &[&str] = &[
    "high-availability.zookeeper.path.root",
    "recovery.zookeeper.path.root",
];

/// A `high-availability.zookeeper.client.*` key and its deprecated alias.
fn flink_client_key(name: &str) -> [String; 2] {
    [
        format!("high-availability.zookeeper.client.{name}"),
        format!("recovery.zookeeper.client.{name}"),
    ]
}

impl Capability for ZooKeeper {
    fn name(&self) -> &'static str {
        "zookeeper"
    }

    fn claims(&self, interface: &str) -> bool {
        matches!(interface, "ha:zookeeper/client" | "ha:sidecar/zookeeper")
    }

    fn linked(&self) -> &'static [&'static str] {
        &["ha:zookeeper/client@0.1.0", "ha:sidecar/zookeeper@0.1.0"]
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        let mut raw: Option<RawZookeeper> = cx.section(self.name())?;
        if let Some(f) = cx.flink {
            if raw.is_none()
                && let Some((_, q)) = f.get(FLINK_QUORUM)
            {
                raw = Some(RawZookeeper {
                    quorum: q.to_string(),
                    client: RawZkClient::default(),
                    digest: None,
                    tls: None,
                    sasl: None,
                });
            }
            if let Some(z) = raw.as_mut() {
                fill_from_flink(&mut z.client, f, cx)?;
                if z.sasl.is_none() {
                    z.sasl = sasl::from_flink(f).map_err(|(key, value, reason)| {
                        cx.keys
                            .err(&format!("flink-config {}: {key}", f.path), value, reason)
                    })?;
                }
            }
        }
        match raw {
            Some(z) => Ok(Some(Arc::new(validate(z, cx)?))),
            None => Ok(None),
        }
    }

    fn flink_ha_type(&self) -> Option<&'static str> {
        Some("ZooKeeper")
    }

    fn process_env(&self, settings: &dyn Settings) -> Vec<(&'static str, std::ffi::OsString)> {
        super::typed::<ZkSettings>(settings, self)
            .ok()
            .and_then(|s| s.sasl.as_ref())
            .map_or_else(Vec::new, sasl::ZkSasl::process_env)
    }

    fn flink_plugin_settings(&self, flink: &FlinkConfig) -> Vec<(String, String)> {
        flink
            .get(FLINK_ROOT)
            .map(|(_, root)| ("root".to_string(), root.to_string()))
            .into_iter()
            .collect()
    }

    fn connect<'a>(
        &'a self,
        settings: &'a dyn Settings,
    ) -> BoxFuture<'a, anyhow::Result<Option<Arc<dyn Connection>>>> {
        Box::pin(async move {
            let settings: &ZkSettings = super::typed(settings, self)?;
            let session = ZkSession::connect(settings.clone()).await?;
            Ok(Some(session as Arc<dyn Connection>))
        })
    }

    fn prepare(
        &self,
        _settings: &dyn Settings,
        connection: Option<Arc<dyn Connection>>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        // No connection when only checking the plugin (`validate`): no
        // instance is made then.
        let session = match connection {
            Some(c) => Some(
                (c as Arc<dyn std::any::Any + Send + Sync>)
                    .downcast::<ZkSession>()
                    .map_err(|_| anyhow::anyhow!("{KEY}: connected to something else"))?,
            ),
            None => None,
        };
        if let Some(s) = &session {
            s.record_refusals_in(metrics.clone());
        }
        Ok(Box::new(Granted(session)))
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        crate::bindings::ha::zookeeper::client::add_to_linker::<HostState, ops::Data>(
            linker,
            ops::view,
        )?;
        // Its 0.1.0 name, for plugins built for contract 0.1.
        crate::bindings::contract_0_1::ha::sidecar::zookeeper::add_to_linker::<HostState, ops::Data>(
            linker,
            ops::view,
        )
    }
}

struct Granted(Option<Arc<ZkSession>>);

impl Prepared for Granted {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        if let Some(session) = &self.0 {
            parts.contexts.insert(ops::Context {
                session: session.clone(),
            });
        }
        Ok(())
    }
}

impl Connection for ZkSession {
    fn health_signal(&self) -> Option<watch::Receiver<Health>> {
        Some(self.health())
    }

    fn shut_down(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close())
    }
}

/// Fills what the sidecar config leaves unset from Flink's client keys.
fn fill_from_flink(
    c: &mut RawZkClient,
    f: &FlinkConfig,
    cx: &SectionContext<'_>,
) -> Result<(), ConfigError> {
    let bad = |key: &str, value: &str, reason: String| {
        cx.keys.err(
            &format!("flink-config {}: {key}", f.path),
            format!("{value:?}"),
            reason,
        )
    };
    let get = |name: &str| {
        let keys = flink_client_key(name);
        f.get(&keys.each_ref().map(String::as_str))
            .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    let dur = |name: &str, slot: &mut Option<FlinkDur>| -> Result<(), ConfigError> {
        if slot.is_none()
            && let Some((k, v)) = get(name)
        {
            *slot = Some(FlinkDur(
                parse_flink_duration(&v).map_err(|e| bad(&k, &v, e))?,
            ));
        }
        Ok(())
    };
    dur("session-timeout", &mut c.session_timeout)?;
    dur("connection-timeout", &mut c.connection_timeout)?;
    dur("retry-wait", &mut c.retry_wait)?;
    dur("max-retry-wait", &mut c.max_retry_wait)?;
    if c.max_retry_attempts.is_none()
        && let Some((k, v)) = get("max-retry-attempts")
    {
        c.max_retry_attempts = Some(
            v.trim()
                .parse()
                .map_err(|_| bad(&k, &v, "must be a whole number".into()))?,
        );
    }
    if c.tolerate_suspended_connections.is_none()
        && let Some((k, v)) = get("tolerate-suspended-connections")
    {
        c.tolerate_suspended_connections = Some(
            v.trim()
                .parse()
                .map_err(|_| bad(&k, &v, "must be true or false".into()))?,
        );
    }
    if c.acl.is_none()
        && let Some((_, v)) = get("acl")
    {
        c.acl = Some(v.trim().to_string());
    }
    Ok(())
}

/// Flink's defaults: session 60 s, connection 15 s, retry wait 5 s, 3
/// attempts, suspended connections not tolerated, open ACLs.
fn validate(z: RawZookeeper, cx: &SectionContext<'_>) -> Result<ZkSettings, ConfigError> {
    let keys = cx.keys;
    let timing = cx.timing;
    let quorum: String = z.quorum.chars().filter(|c| !c.is_whitespace()).collect();
    let bad_quorum = quorum.is_empty()
        || quorum.split(',').any(|hp| match hp.rsplit_once(':') {
            Some((host, port)) => host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0),
            None => true,
        });
    if bad_quorum {
        return Err(keys.err(
            &format!("{KEY}.quorum"),
            format!("{:?}", z.quorum),
            "must be host:port pairs separated by commas, such as zk1:2181,zk2:2181,zk3:2181",
        ));
    }
    let c = z.client;
    let ms = |d: Option<FlinkDur>, default: u64| d.map_or(Duration::from_millis(default), |d| d.0);
    let session_timeout = ms(c.session_timeout, 60_000);
    let connection_timeout = ms(c.connection_timeout, 15_000);
    let retry_wait = ms(c.retry_wait, 5_000);
    let max_retry_wait = ms(c.max_retry_wait, 60_000);
    if session_timeout < Duration::from_millis(100) {
        return Err(keys.err(
            &format!("{KEY}.client.session-timeout"),
            Dur(session_timeout),
            "must be at least 100ms (the server also clamps it to [2, 20] ticks)",
        ));
    }
    if connection_timeout.is_zero() || retry_wait.is_zero() || max_retry_wait < retry_wait {
        return Err(keys.err(
            &format!("{KEY}.client"),
            format!(
                "connection-timeout {}, retry-wait {}, max-retry-wait {}",
                Dur(connection_timeout),
                Dur(retry_wait),
                Dur(max_retry_wait)
            ),
            "timeouts and waits must be above zero, and max-retry-wait at least retry-wait",
        ));
    }
    // A leader whose renewals fail keeps calling itself leader until the
    // renew deadline; that must end before its session could expire.
    if timing.renew_deadline >= session_timeout {
        return Err(keys.err(
            "timing.renew-deadline",
            Dur(timing.renew_deadline),
            format!("must be shorter than {KEY}.client.session-timeout ({}), so that a leader that cannot renew steps down before its session can expire; lower timing.renew-deadline or raise the session timeout", Dur(session_timeout)),
        ));
    }
    let tls = match &z.tls {
        None => None,
        Some(raw) => Some(
            tls::ZkTls::load(raw, |p| keys.resolve(p))
                .map_err(|t| keys.err(&format!("{KEY}.tls.{}", t.key), &t.file, t.reason))?,
        ),
    };
    let sasl = match &z.sasl {
        None => None,
        Some(raw) => Some(
            sasl::ZkSasl::load(raw, |p| keys.resolve(p))
                .map_err(|e| keys.err(&format!("{KEY}.sasl.{}", e.key), &e.value, e.reason))?,
        ),
    };
    let acl_creator = match c.acl.as_deref().unwrap_or("open") {
        "open" => false,
        "creator" if z.digest.is_some() || sasl.is_some() => true,
        "creator" => {
            return Err(keys.err(
                &format!("{KEY}.client.acl"),
                "creator",
                format!("needs an authenticated identity: set {KEY}.sasl (DIGEST-MD5 or GSSAPI) or {KEY}.digest (user:password)"),
            ));
        }
        other => {
            return Err(keys.err(
                &format!("{KEY}.client.acl"),
                format!("{other:?}"),
                "must be open or creator",
            ));
        }
    };
    if let Some(d) = &z.digest
        && !d.contains(':')
    {
        return Err(keys.err(
            &format!("{KEY}.digest"),
            "(hidden)",
            "must be user:password",
        ));
    }
    Ok(ZkSettings {
        tls,
        sasl,
        quorum,
        session_timeout,
        connection_timeout,
        retry_wait,
        max_retry_wait,
        max_retry_attempts: c.max_retry_attempts.unwrap_or(3).max(1),
        tolerate_suspended_connections: c.tolerate_suspended_connections.unwrap_or(false),
        acl_creator,
        digest: z.digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_print_of_the_settings_holds_no_password() {
        let s = ZkSettings {
            quorum: "zk:2181".into(),
            session_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            retry_wait: Duration::from_millis(200),
            max_retry_wait: Duration::from_secs(1),
            max_retry_attempts: 3,
            tolerate_suspended_connections: false,
            acl_creator: true,
            digest: Some("alice:s3cret-password".into()),
            tls: None,
            sasl: Some(sasl::ZkSasl::DigestMd5 {
                username: "bob".into(),
                password: "an0ther-s3cret".into(),
            }),
        };
        let printed = format!("{s:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("bob"), "{printed}");
        assert!(
            printed.contains("<redacted>") && printed.contains("zk:2181"),
            "{printed}"
        );
    }
}
