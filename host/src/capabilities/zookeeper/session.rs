//! The sidecar's one ZooKeeper session, shared by every instance of the
//! plugin, with Flink's connection settings.
//!
//! The session also tells the leadership state machine when leadership can
//! no longer be trusted: at once when the connection is lost (Curator's
//! default, Flink's `tolerate-suspended-connections: false`), or, when
//! suspended connections are tolerated, after a third of the session timeout
//! (a client notices a lost connection only about two thirds of the way to
//! the server expiring its session, so waiting longer could overlap with a
//! successor). When the client ends the session it first tries to reattach
//! it (the client may give up while the ensemble still holds the session,
//! see `reattach`); only a session the ensemble has expired is replaced by a
//! fresh one, and the plugin's old ephemeral nodes are gone with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use std::time::Instant;

use tokio::sync::{RwLock, watch};
use zookeeper_client as zk;

use super::{ZkSettings, kerberos, sasl};
use crate::bindings::ha::zookeeper::client as wit;
use crate::capabilities::Health;
use crate::metrics::Metrics;

/// Between attempts to reattach a session while ZooKeeper does not answer.
const REATTACH_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "capabilities.zookeeper.quorum: cannot connect to {quorum:?} after {attempts} attempts: {last}; check that the ensemble runs and the quorum string (host:port,host:port) is right"
    )]
    Unreachable {
        quorum: String,
        attempts: u32,
        last: String,
    },
    /// The ensemble refused the sidecar's identity: no retry can change that.
    #[error(
        "capabilities.zookeeper: {quorum:?} refused the sidecar's login ({identity}): {error}; {hint}"
    )]
    Refused {
        quorum: String,
        identity: String,
        error: String,
        hint: &'static str,
    },
}

pub struct ZkSession {
    settings: ZkSettings,
    client: RwLock<Option<zk::Client>>,
    state: watch::Sender<wit::SessionState>,
    health: watch::Sender<Health>,
    /// Set by `close`: a Closed state is then expected, not a failure.
    closing: AtomicBool,
    refusals: std::sync::OnceLock<Arc<Metrics>>,
}

impl ZkSession {
    /// Connects (retrying with Flink's backoff) and starts watching the session.
    pub async fn connect(settings: ZkSettings) -> Result<Arc<Self>, ConnectError> {
        let client = connect_with_retries(&settings).await?;
        tracing::info!(quorum = %settings.quorum, session = format!("{:#x}", client.session_id().0), timeout = ?client.session_timeout(), "ZooKeeper session established");
        let (state, _) = watch::channel(wit::SessionState::Connected);
        let (health, _) = watch::channel(Health::Ok);
        let session = Arc::new(Self {
            settings,
            client: RwLock::new(Some(client)),
            state,
            health,
            closing: AtomicBool::new(false),
            refusals: std::sync::OnceLock::new(),
        });
        tokio::spawn(session.clone().watch_session());
        Ok(session)
    }

    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    async fn current(&self) -> Result<zk::Client, wit::ZkError> {
        self.client
            .read()
            .await
            .clone()
            .ok_or_else(|| wit::ZkError::ConnectionLoss("the ZooKeeper session is closed".into()))
    }

    /// Follows the session's state; when the client ends the session,
    /// reattaches it if the ensemble still has it, else connects a fresh one.
    async fn watch_session(self: Arc<Self>) {
        loop {
            let Ok(client) = self.current().await else {
                return;
            };
            let mut states = client.state_watcher();
            // Kept to reattach: the client gives up on its own clock, not
            // the server's (see `reattach`).
            let mut lost = Some(client.session().clone());
            drop(client);
            loop {
                let state = states.changed().await;
                match state {
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        self.state.send_replace(wit::SessionState::Connected);
                        self.health.send_replace(Health::Ok);
                        tracing::info!("ZooKeeper connection restored");
                    }
                    zk::SessionState::Disconnected => {
                        self.state.send_replace(wit::SessionState::Suspended);
                        tracing::warn!("ZooKeeper connection lost; the session may still be alive");
                        // The grace runs beside this loop, which must keep
                        // following the state (a reconnect ends the grace).
                        tokio::spawn(self.clone().suspended());
                    }
                    // Expired: the ensemble said so, or the client gave up
                    // reconnecting on its own clock (then `reattach` may
                    // still find the session alive).
                    zk::SessionState::Expired | zk::SessionState::AuthFailed => {
                        self.state.send_replace(wit::SessionState::Expired);
                        self.health
                            .send_replace(Health::Lost("the ZooKeeper session expired".into()));
                        tracing::warn!(
                            ?state,
                            "ZooKeeper session ended; reattaching or connecting a new one"
                        );
                        if state == zk::SessionState::AuthFailed {
                            lost = None;
                        }
                        break;
                    }
                    zk::SessionState::Closed if self.closing.load(Relaxed) => {
                        self.state.send_replace(wit::SessionState::Closed);
                        return;
                    }
                    // Closed without our asking: as good as expired.
                    zk::SessionState::Closed => {
                        self.state.send_replace(wit::SessionState::Expired);
                        self.health
                            .send_replace(Health::Lost("the ZooKeeper session was closed".into()));
                        tracing::warn!(
                            "ZooKeeper session closed unexpectedly; reattaching or connecting a new one"
                        );
                        break;
                    }
                }
            }
            // The same session if the ensemble still has it, else a fresh
            // one, retrying for as long as it takes.
            loop {
                if self.closing.load(Relaxed) {
                    return; // closed meanwhile
                }
                let connected = match lost.take() {
                    Some(old) => match reattach(&self.settings, old.clone()).await {
                        Reattach::Done(c) => Ok(c),
                        Reattach::Gone(why) => {
                            tracing::info!(
                                session = format!("{:#x}", old.id().0),
                                why,
                                "the ZooKeeper session cannot be reattached; connecting a new one"
                            );
                            continue;
                        }
                        Reattach::Unknown(e) => {
                            tracing::warn!(session = format!("{:#x}", old.id().0), error = %e, "cannot reach ZooKeeper to reattach the session yet");
                            lost = Some(old);
                            // The attempt itself tried every member with the
                            // client's backoff; this only keeps an instant
                            // failure from spinning.
                            tokio::time::sleep(REATTACH_PAUSE).await;
                            continue;
                        }
                    },
                    None => connect_with_retries(&self.settings).await.inspect(|c| {
                        tracing::info!(
                            session = format!("{:#x}", c.session_id().0),
                            "new ZooKeeper session established"
                        )
                    }),
                };
                match connected {
                    Ok(c) => {
                        let mut slot = self.client.write().await;
                        if self.closing.load(Relaxed) {
                            return; // closed while connecting: drop the new session too
                        }
                        *slot = Some(c);
                        drop(slot);
                        self.state.send_replace(wit::SessionState::Connected);
                        self.health.send_replace(Health::Ok);
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reconnect to ZooKeeper yet"),
                }
            }
        }
    }

    /// The connection is down: leadership ends at once, or, tolerating
    /// suspended connections, if it stays down for a third of the session timeout.
    async fn suspended(self: Arc<Self>) {
        let grace = if self.settings.tolerate_suspended_connections {
            self.session_timeout().await / 3
        } else {
            Duration::ZERO
        };
        let mut state = self.state.subscribe();
        let recovered = tokio::time::timeout(
            grace,
            state.wait_for(|s| *s != wit::SessionState::Suspended),
        )
        .await
        .is_ok();
        if !recovered {
            self.health
                .send_replace(Health::Lost("the ZooKeeper connection is lost".into()));
        }
    }

    async fn session_timeout(&self) -> Duration {
        match self.client.read().await.as_ref() {
            Some(c) => c.session_timeout(),
            None => self.settings.session_timeout,
        }
    }

    /// Closes the session so its ephemeral nodes go at once instead of after
    /// the session timeout.
    pub async fn close(&self) {
        let Some(client) = self.client.write().await.take() else {
            return;
        };
        let mut states = client.state_watcher();
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !states.changed().await.is_terminated() {}
        })
        .await;
        tracing::info!("ZooKeeper session closed");
    }

    /// Runs one operation, bounded by the connection timeout and by what is
    /// left of the plugin call's own deadline (so a slow ensemble makes the
    /// call answer `connection-loss` instead of getting the instance killed).
    /// The operation maps its own errors (see `to_wit`).
    pub async fn run<T, F, Fut>(&self, deadline: Option<Instant>, op: F) -> Result<T, wit::ZkError>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, wit::ZkError>>,
    {
        let client = self.current().await?;
        if *self.state.borrow() == wit::SessionState::Suspended {
            return Err(wit::ZkError::ConnectionLoss(
                "not connected to ZooKeeper".into(),
            ));
        }
        // Leave the plugin a little time to turn the answer into its own.
        let left = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_millis(100))
        });
        let bound = left.map_or(self.settings.connection_timeout, |l| {
            l.min(self.settings.connection_timeout)
        });
        let result = match tokio::time::timeout(bound, op(client)).await {
            Ok(r) => r,
            Err(_) => Err(wit::ZkError::ConnectionLoss(format!(
                "no answer from ZooKeeper within {bound:?}"
            ))),
        };
        self.note_refusal(&result);
        result
    }

    /// Where ACL refusals are recorded (the sidecar's metrics): set when
    /// the capability is prepared for a plugin.
    pub fn record_refusals_in(&self, metrics: Arc<Metrics>) {
        let _ = self.refusals.set(metrics);
    }

    /// A NoAuth is a missing permission, not an outage: recorded, so that
    /// the sidecar stops at start, or backs off and turns unhealthy,
    /// instead of retrying in silence. Any answer that is not a NoAuth
    /// means the identity got through.
    fn note_refusal<T>(&self, result: &Result<T, wit::ZkError>) {
        let Some(metrics) = self.refusals.get() else {
            return;
        };
        match result {
            Err(wit::ZkError::Other(m)) if m.starts_with(NO_AUTH) => {
                let who = self.settings.sasl.as_ref().map_or_else(
                    || {
                        if self.settings.digest.is_some() {
                            "the digest user of capabilities.zookeeper.digest".to_string()
                        } else {
                            "no login".to_string()
                        }
                    },
                    |s| s.identity(),
                );
                metrics.refusals.record("zookeeper", Some(&format!(
                    "{m}: the nodes' ACL does not admit this sidecar's identity ({who}); nodes made with client.acl: creator admit only the identity that made them, so every sidecar of a cluster must log in as the same user or principal"
                )));
            }
            Ok(_)
            | Err(
                wit::ZkError::NoNode
                | wit::ZkError::NodeExists
                | wit::ZkError::BadVersion
                | wit::ZkError::NotEmpty,
            ) => metrics.refusals.record("zookeeper", None),
            Err(_) => {}
        }
    }

    pub async fn info(&self) -> wit::SessionInfo {
        let state = *self.state.borrow();
        match self.client.read().await.as_ref() {
            Some(c) => wit::SessionInfo {
                id: c.session_id().0,
                state,
                timeout_ms: c.session_timeout().as_millis() as u32,
            },
            None => wit::SessionInfo {
                id: 0,
                state: wit::SessionState::Closed,
                timeout_ms: 0,
            },
        }
    }

    pub fn create_options(&self, mode: wit::CreateMode) -> zk::CreateOptions<'static> {
        let mode = match mode {
            wit::CreateMode::Persistent => zk::CreateMode::Persistent,
            wit::CreateMode::PersistentSequential => zk::CreateMode::PersistentSequential,
            wit::CreateMode::Ephemeral => zk::CreateMode::Ephemeral,
            wit::CreateMode::EphemeralSequential => zk::CreateMode::EphemeralSequential,
        };
        mode.with_acls(if self.settings.acl_creator {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        })
    }
}

fn connector(s: &ZkSettings) -> zk::Connector {
    let mut connector = zk::Client::connector()
        .with_session_timeout(s.session_timeout)
        .with_connection_timeout(s.connection_timeout);
    if let Some(d) = &s.digest {
        connector = connector.with_auth("digest", d.as_bytes());
    }
    if let Some(sasl) = &s.sasl {
        connector = connector.with_sasl(sasl.options());
    }
    if let Some(t) = &s.tls {
        connector = connector.with_tls(t.options());
    }
    connector
}

/// Connects with `connector`: over TLS to every member when `tls` is set.
async fn open(s: &ZkSettings, connector: zk::Connector) -> Result<zk::Client, zk::Error> {
    match &s.tls {
        Some(t) => connector.secure_connect(&s.quorum).await.inspect_err(|e| {
            tracing::warn!(quorum = %s.quorum, error = %e, files = t.describe(), "TLS connection to ZooKeeper failed: check that the quorum lists the members' secureClientPort, that ca-file signs their certificates, and, if they require one (ssl.clientAuth=need), set cert-file and key-file")
        }),
        None => connector.connect(&s.quorum).await,
    }
}

/// What became of an attempt to reattach a session the client gave up on.
enum Reattach {
    /// The ensemble still had it: its ephemeral nodes (the latch node, so
    /// leadership) are intact.
    Done(zk::Client),
    /// The ensemble says it is over (expired, moved, refused).
    Gone(String),
    /// No answer: the session may still be alive.
    Unknown(zk::Error),
}

/// Reattaches a session the client declared lost. The client stops
/// reconnecting once the session timeout (× 7/5) has passed on its own
/// clock since it last heard from the ensemble, but the ensemble may still
/// hold the session: a paused ZooKeeper leader stops every member from
/// serving until the others elect a new one, and a new leader gives every
/// session a full timeout again. Connecting a fresh session then would
/// leave the old latch node in the queue until the ensemble expires it (one
/// more session timeout without a leader); reattaching keeps it, and with
/// it the leadership. After reattaching, a `sync` makes sure the member
/// serving us has caught up with everything the old connection saw.
async fn reattach(s: &ZkSettings, old: zk::SessionInfo) -> Reattach {
    let id = old.id();
    let attempt = async {
        let c = open(s, connector(s).with_session(old)).await?;
        if c.session_id() != id {
            return Err(zk::Error::SessionExpired);
        }
        c.sync("/").await?;
        Ok(c)
    };
    match tokio::time::timeout(s.connection_timeout, attempt).await {
        Ok(Ok(c)) => {
            tracing::info!(
                session = format!("{:#x}", id.0),
                "ZooKeeper session reattached; its ephemeral nodes are intact"
            );
            Reattach::Done(c)
        }
        Ok(Err(
            e @ (zk::Error::SessionExpired | zk::Error::SessionMoved | zk::Error::AuthFailed),
        )) => Reattach::Gone(e.to_string()),
        Ok(Err(e)) => Reattach::Unknown(e),
        Err(_) => Reattach::Unknown(zk::Error::Timeout),
    }
}

async fn connect_with_retries(s: &ZkSettings) -> Result<zk::Client, ConnectError> {
    let mut delay = s.retry_wait;
    let mut last = String::new();
    for attempt in 1..=s.max_retry_attempts.max(1) {
        match connect_once(s).await {
            Ok(c) => return Ok(c),
            Err(Failed::Refused(e)) => return Err(e),
            Err(Failed::Transient(e)) => last = e,
        }
        if attempt < s.max_retry_attempts {
            tracing::warn!(attempt, quorum = %s.quorum, error = %last, retry_in = ?delay, "cannot connect to ZooKeeper");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(s.max_retry_wait);
        }
    }
    Err(ConnectError::Unreachable {
        quorum: s.quorum.clone(),
        attempts: s.max_retry_attempts.max(1),
        last,
    })
}

/// Why one attempt to connect failed.
enum Failed {
    /// The ensemble or the KDC refused who we are: retrying cannot help.
    Refused(ConnectError),
    /// Unreachable, or no answer in time: worth another attempt.
    Transient(String),
}

/// One attempt: with Kerberos, the trial login first (see `kerberos`),
/// then the session.
async fn connect_once(s: &ZkSettings) -> Result<zk::Client, Failed> {
    if let Some(sasl::ZkSasl::Gssapi(k)) = &s.sasl {
        let (service, quorum) = (k.service_name.clone(), s.quorum.clone());
        match tokio::task::spawn_blocking(move || kerberos::try_login(&service, &quorum)).await {
            Ok(kerberos::Trial::Ok) => {}
            Ok(kerberos::Trial::Refused(e)) => return Err(Failed::Refused(refused_login(s, e))),
            Ok(kerberos::Trial::Unreachable(e)) => return Err(Failed::Transient(e)),
            // The trial itself panicked: let the connect say what it can.
            Err(e) => tracing::warn!(error = %e, "the trial Kerberos login did not finish"),
        }
    }
    match tokio::time::timeout(s.connection_timeout, open(s, connector(s))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) if refused(&e) => Err(Failed::Refused(refused_login(s, e.to_string()))),
        Ok(Err(e)) => Err(Failed::Transient(e.to_string())),
        Err(_) => Err(Failed::Transient(format!(
            "no session within {:?}",
            s.connection_timeout
        ))),
    }
}

fn refused_login(s: &ZkSettings, error: String) -> ConnectError {
    ConnectError::Refused {
        quorum: s.quorum.clone(),
        identity: s.sasl.as_ref().map_or_else(
            || "no SASL login: set capabilities.zookeeper.sasl".into(),
            |a| a.identity(),
        ),
        error,
        hint: s.sasl.as_ref().map_or(
            "the servers require authentication (enforce.auth.enabled)",
            |a| a.hint(),
        ),
    }
}

/// Whether `e` is the ensemble refusing who we are (a failed SASL login,
/// or a server that requires one we did not make), not a transient fault.
fn refused(e: &zk::Error) -> bool {
    matches!(e, zk::Error::AuthFailed | zk::Error::NoAuth)
        || e.to_string().to_ascii_lowercase().contains("sasl")
}

pub fn to_wit(e: zk::Error) -> wit::ZkError {
    match e {
        zk::Error::NoNode => wit::ZkError::NoNode,
        zk::Error::NodeExists => wit::ZkError::NodeExists,
        zk::Error::BadVersion => wit::ZkError::BadVersion,
        zk::Error::NotEmpty => wit::ZkError::NotEmpty,
        zk::Error::SessionExpired => wit::ZkError::SessionExpired,
        zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::ClientClosed => {
            wit::ZkError::ConnectionLoss(e.to_string())
        }
        zk::Error::NoAuth => wit::ZkError::Other(format!("{NO_AUTH}: {e}")),
        other => wit::ZkError::Other(other.to_string()),
    }
}

/// How a NoAuth answer starts, as the plugin sees it.
const NO_AUTH: &str = "ZooKeeper NoAuth";

pub fn stat(s: &zk::Stat) -> wit::Stat {
    wit::Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        version: s.version,
        cversion: s.cversion,
        ephemeral_owner: s.ephemeral_owner,
        num_children: s.num_children,
    }
}
