//! systemd's service notifications (the `sd_notify` protocol), for a sidecar
//! run as a `Type=notify` unit (`examples/systemd/`): `READY=1` once the API
//! serves, so that units ordered after it (the JobManager) start only then;
//! `WATCHDOG=1` every half `WatchdogSec=` while the sidecar is alive in the
//! sense of `/healthz`, so that systemd restarts a wedged sidecar (or one the
//! backend refuses) instead of leaving it up and useless; `STOPPING=1` at
//! shutdown. Outside systemd (`NOTIFY_SOCKET` unset) it does nothing.
//!
//! The protocol is one datagram per message on the unix socket that
//! `NOTIFY_SOCKET` names (a path, or an abstract name written `@name`).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::shared::Shared;

pub struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for, if it asked (`NOTIFY_SOCKET`).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy();
        let target = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&*name),
        };
        let notifier = target.and_then(|target| {
            Ok(Notifier {
                socket: UnixDatagram::unbound()?,
                target,
            })
        });
        match notifier {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %name, "NOTIFY_SOCKET is set but unusable, so systemd will not hear from this sidecar: {e}");
                None
            }
        }
    }

    /// Sends one message (`KEY=value` lines). A failure is logged, never
    /// fatal: the sidecar's job does not depend on its supervisor hearing it.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            tracing::warn!("cannot notify systemd ({message:?}): {e}");
        }
    }
}

/// Half the watchdog period systemd set for this process
/// (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set must be ours), as sd_notify(3)
/// advises pinging at.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog every `every` while the sidecar is healthy; while it
/// is not, says why in the unit's status instead (`systemctl status`), and
/// systemd restarts it once a whole period passes without a ping.
pub async fn watchdog(notifier: &Notifier, shared: &Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unhealthy = false;
    loop {
        tick.tick().await;
        match shared.unhealthy_reason() {
            None => {
                if unhealthy {
                    notifier.send("STATUS=serving");
                    unhealthy = false;
                }
                notifier.send("WATCHDOG=1");
            }
            Some((code, message)) => {
                if !unhealthy {
                    tracing::warn!(code, "not pinging the systemd watchdog: {message}");
                    unhealthy = true;
                }
                notifier.send(&format!("STATUS=unhealthy ({code}): {message}"));
            }
        }
    }
}
