//! The `tcp` capability: `wasi:sockets` for plugins that speak their store's
//! own wire protocol (PostgreSQL's, say), to listed endpoints only.
//!
//! Denied by default: without the grant a plugin importing `wasi:sockets` is
//! refused at load. With it, TCP is switched on in the instance's WASI
//! context and every connect goes through wasmtime-wasi's socket address
//! check, which lets through only the addresses the listed endpoints resolved
//! to when the plugin was loaded (names are resolved once, at start: a store
//! that moves to another address needs a restart). Listening, accepting and
//! UDP stay refused, so a plugin can neither serve nor scan. A refused
//! connect reaches the plugin as `access-denied`, and the host logs the
//! address with the key to add it to. There is no TLS here: the plugin gets
//! a plain TCP stream (see the guide for what that means per store).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::{Capability, Connection, HostState, InstanceParts, Prepared, SectionContext, Settings};
use crate::metrics::Metrics;
use crate::section::ConfigError;

pub struct Tcp;

const KEY: &str = "capabilities.tcp";

/// The endpoints a plugin may connect to, as the config lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<Endpoint>);

/// One `host:port` from `capabilities.tcp.endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTcp {
    endpoints: Vec<String>,
}

impl Endpoint {
    /// Accepts `host:port` or `[v6]:port`; the port is required (no store
    /// has one TCP port everyone agrees on) and nonzero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let form = "write it as host:port, such as 127.0.0.1:5432 or db.example:5432";
        if s.contains("://") {
            return Err(format!("must be host:port without a scheme; {form}"));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("has no port; {form}"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .ok_or_else(|| format!("has an unclosed '['; {form}"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "an IPv6 address needs brackets ([::1]:5432); {form}"
                ));
            }
            None => host,
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!("has no valid host; {form}"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number from 1 to 65535; {form}"))?;
        if port == 0 {
            return Err(format!("port 0 is no endpoint; {form}"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Capability for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    /// All of `wasi:sockets` (a Rust plugin's standard library imports UDP
    /// and name lookup with TCP); what is not TCP connect stays refused at
    /// run time.
    fn claims(&self, interface: &str) -> bool {
        interface.starts_with("wasi:sockets/")
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        let Some(raw) = cx.section::<RawTcp>(self.name())? else {
            return Ok(None);
        };
        let endpoints = cx.endpoints(KEY, &raw.endpoints, "127.0.0.1:5432", Endpoint::parse)?;
        Ok(Some(Arc::new(Endpoints(endpoints))))
    }

    /// Resolves every listed name now: the allow-list the connect check
    /// uses is a set of addresses.
    fn prepare(
        &self,
        settings: &dyn Settings,
        _connection: Option<Arc<dyn Connection>>,
        _metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        let endpoints: &Endpoints = super::typed(settings, self)?;
        let mut allowed = BTreeSet::new();
        for (i, e) in endpoints.0.iter().enumerate() {
            let addrs = (e.host.as_str(), e.port).to_socket_addrs().map_err(|err| {
                anyhow::anyhow!(
                    "{KEY}.endpoints[{i}] = {e}: cannot resolve {}: {err}; check the name, or list the address itself",
                    e.host
                )
            })?;
            allowed.extend(addrs);
        }
        Ok(Box::new(Allowed(Arc::new(AllowList {
            endpoints: endpoints.0.clone(),
            addrs: allowed,
        }))))
    }

    fn link(&self, _linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // `wasi:sockets` is linked with the rest of WASI (see
        // `runtime::LoadedPlugin::load`) and disabled in every instance's
        // context unless this capability switches it on.
        Ok(())
    }
}

/// The listed endpoints and the addresses they resolved to.
#[derive(Debug)]
struct AllowList {
    endpoints: Vec<Endpoint>,
    addrs: BTreeSet<SocketAddr>,
}

impl AllowList {
    /// Connects to a listed address, and the implicit bind to the wildcard
    /// address a connect makes; nothing else (no explicit bind to a chosen
    /// port, no listen, no accept, no UDP).
    fn permits(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpConnect => self.addrs.contains(&addr),
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            _ => false,
        }
    }

    fn granted(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Allowed(Arc<AllowList>);

impl Prepared for Allowed {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        let list = self.0.clone();
        let role = parts.role;
        parts
            .wasi
            .allow_tcp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, usage| {
                let ok = list.permits(addr, usage);
                if !ok {
                    tracing::warn!(
                        role,
                        %addr,
                        ?usage,
                        "refused a socket use the config does not grant (granted: connect to {}); add {addr} to {KEY}.endpoints if the plugin should connect there",
                        list.granted()
                    );
                }
                Box::pin(async move { ok })
            });
        Ok(())
    }

    fn describe(&self) -> Option<String> {
        Some(format!("tcp to {}", self.0.granted()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_host_and_port() {
        let e = Endpoint::parse("DB.example:5432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("db.example", 5432));
        let v6 = Endpoint::parse("[::1]:5432").unwrap();
        assert_eq!(v6.to_string(), "[::1]:5432");
        for bad in [
            "127.0.0.1",
            "postgres://127.0.0.1:5432",
            "::1:5432",
            ":5432",
            "db:0",
            "db:99999",
            "u@db:5432",
            "[::1:5432",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn only_listed_connects_pass() {
        let list = AllowList {
            endpoints: vec![Endpoint::parse("127.0.0.1:5432").unwrap()],
            addrs: ["127.0.0.1:5432".parse().unwrap()].into(),
        };
        let connect = SocketAddrUse::TcpConnect;
        assert!(list.permits("127.0.0.1:5432".parse().unwrap(), connect));
        assert!(!list.permits("127.0.0.1:5433".parse().unwrap(), connect));
        assert!(!list.permits("127.0.0.2:5432".parse().unwrap(), connect));
        assert!(list.permits("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind));
        assert!(!list.permits("0.0.0.0:8080".parse().unwrap(), SocketAddrUse::TcpBind));
        for usage in [
            SocketAddrUse::TcpListen,
            SocketAddrUse::TcpAccept,
            SocketAddrUse::UdpBind,
            SocketAddrUse::UdpSend,
            SocketAddrUse::UdpReceive,
        ] {
            assert!(!list.permits("127.0.0.1:5432".parse().unwrap(), usage));
        }
    }
}
