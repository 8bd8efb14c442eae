//! The process's file-descriptor budget (RLIMIT_NOFILE), split between HTTP
//! connections and a reserve for everything that keeps the leadership: the
//! backend (the file plugin's election directory, the ZooKeeper session,
//! the Kubernetes and etcd connections), the storage dir, the compile cache
//! and the runtime itself.
//!
//! Without the split, a local client that opens idle connections until the
//! limit makes the leader's renewals fail with "Too many open files" and
//! deposes it: connections are cheap to open, renewals must never starve.

/// Descriptors kept out of the connection cap. What the sidecar holds apart
/// from connections is far less: about 30 at rest (standard streams, the
/// runtime's epoll and eventfds, the plugin's preopened directory), a few per
/// plugin call (3 instances, one call each at a time), one session per
/// backend service, and at most 2 per storage-dir operation, of which
/// `storage::CONCURRENT_BLOB_OPS` run at once.
pub const RESERVE: u64 = 256;
/// Fewer connections than this cannot serve a sidecar's own clients (the
/// guarded process, its probes, a long poll or two) next to a flood.
pub const MIN_CONNECTIONS: u64 = 16;
/// Default cap when the limit allows more: the API is local, its clients are
/// the guarded process, probes and tools, and each connection can hold up to
/// `http::MAX_BUF` of buffered request, so the cap also bounds memory.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;

/// RLIMIT_NOFILE as found at start, after raising the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    /// The limit that applies (soft), after raising it.
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before the sidecar raised it.
    pub was: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error(
        "http.max-connections = {cap}: with {reserve} file descriptors kept in reserve for the backend, the storage dir and the plugin, the file-descriptor limit of {soft} (RLIMIT_NOFILE, hard limit {hard}) leaves room for at most {room} connections; lower http.max-connections to {room} or less, or raise the limit (ulimit -n, LimitNOFILE= in a systemd unit, the container runtime's nofile ulimit)"
    )]
    CapTooHigh {
        cap: u64,
        reserve: u64,
        soft: u64,
        hard: u64,
        room: u64,
    },
    #[error(
        "the file-descriptor limit is {soft} (RLIMIT_NOFILE, hard limit {hard}): the sidecar keeps {reserve} descriptors in reserve for the backend, the storage dir and the plugin and needs room for at least {min} connections; raise the limit to at least {need} (ulimit -n, LimitNOFILE= in a systemd unit, the container runtime's nofile ulimit)"
    )]
    LimitTooLow {
        soft: u64,
        hard: u64,
        reserve: u64,
        min: u64,
        need: u64,
    },
}

/// Reads RLIMIT_NOFILE and raises the soft limit to the hard one (an
/// unprivileged process may; the default soft limit of 1024 is a relic of
/// `select`, which the sidecar does not use). If raising fails, the soft
/// limit stays what it was and the cap is planned within it.
pub fn raise_nofile() -> std::io::Result<Nofile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = lim.rlim_cur;
    let hard = lim.rlim_max;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(soft = was, hard, error = %std::io::Error::last_os_error(), "cannot raise the file-descriptor limit to the hard limit; planning within the soft limit");
        }
    }
    Ok(Nofile {
        soft: lim.rlim_cur,
        hard,
        was,
    })
}

/// The connection cap: the configured one if the limit leaves the reserve
/// beside it, else the default, `DEFAULT_MAX_CONNECTIONS` or what the limit
/// leaves after the reserve, whichever is smaller.
pub fn connection_cap(configured: Option<u64>, limit: Nofile) -> Result<u64, BudgetError> {
    // RLIM_INFINITY is u64::MAX: no overflow below.
    let room = limit.soft.saturating_sub(RESERVE);
    match configured {
        Some(cap) if cap > room => Err(BudgetError::CapTooHigh {
            cap,
            reserve: RESERVE,
            soft: limit.soft,
            hard: limit.hard,
            room,
        }),
        Some(cap) => Ok(cap),
        None if room < MIN_CONNECTIONS => Err(BudgetError::LimitTooLow {
            soft: limit.soft,
            hard: limit.hard,
            reserve: RESERVE,
            min: MIN_CONNECTIONS,
            need: RESERVE + MIN_CONNECTIONS,
        }),
        None => Ok(room.min(DEFAULT_MAX_CONNECTIONS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64) -> Nofile {
        Nofile {
            soft,
            hard: soft,
            was: soft,
        }
    }

    #[test]
    fn default_leaves_the_reserve_and_stays_bounded() {
        assert_eq!(connection_cap(None, limit(512)), Ok(512 - RESERVE));
        assert_eq!(
            connection_cap(None, limit(4096)),
            Ok(DEFAULT_MAX_CONNECTIONS)
        );
        assert_eq!(
            connection_cap(None, limit(u64::MAX)),
            Ok(DEFAULT_MAX_CONNECTIONS)
        );
        assert!(matches!(
            connection_cap(None, limit(RESERVE + MIN_CONNECTIONS - 1)),
            Err(BudgetError::LimitTooLow { .. })
        ));
    }

    #[test]
    fn a_configured_cap_must_leave_the_reserve() {
        assert_eq!(connection_cap(Some(3000), limit(4096)), Ok(3000));
        assert_eq!(
            connection_cap(Some(4096 - RESERVE), limit(4096)),
            Ok(4096 - RESERVE)
        );
        let e = connection_cap(Some(4000), limit(4096)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("http.max-connections = 4000")
                && text.contains("at most 3840")
                && text.contains("4096"),
            "{text}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let l = raise_nofile().unwrap();
        assert!(l.soft >= l.was);
        assert!(l.soft == l.hard || l.soft == l.was);
    }
}
