//! Outgoing HTTP (`wasi:http/outgoing-handler`) for plugins that reach their
//! store over HTTP, such as etcd's JSON gateway.
//!
//! The grant is a list of endpoints (scheme, host, port). A request to anything
//! else is refused before a connection is opened, so a plugin cannot be used to
//! probe the network around the sidecar. Every request is also bounded by the
//! deadline of the plugin call that made it: a store that stops answering makes
//! the call fail in time, instead of overrunning and costing the instance.
//! Connections to `http://` endpoints are kept alive between calls (`pool`).
//! An `https://` endpoint may have TLS settings of its own (`tls`: its CA, a
//! client certificate), which the host keeps: the plugin only sends requests.

mod pool;
pub(crate) mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::{Capability, Connection, HostState, InstanceParts, Prepared, SectionContext, Settings};
use crate::metrics::Metrics;
use crate::section::ConfigError;
use pool::ConnectionPool;

pub struct OutgoingHttp;

/// The servers the plugin may send requests to; any other is refused.
#[derive(Debug, Clone)]
pub struct Endpoints(pub Arc<[Endpoint]>);

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutgoingHttp {
    endpoints: Vec<String>,
    /// By endpoint, as `endpoints` lists it.
    #[serde(default)]
    tls: BTreeMap<String, tls::RawTls>,
}

const KEY: &str = "capabilities.outgoing-http";

impl Capability for OutgoingHttp {
    fn name(&self) -> &'static str {
        "outgoing-http"
    }

    /// Only the client side: a plugin answers no HTTP requests itself.
    fn claims(&self, interface: &str) -> bool {
        interface.starts_with("wasi:http/types")
            || interface.starts_with("wasi:http/outgoing-handler")
    }

    fn parse(&self, cx: &SectionContext<'_>) -> Result<Option<Arc<dyn Settings>>, ConfigError> {
        let Some(h) = cx.section::<RawOutgoingHttp>(self.name())? else {
            return Ok(None);
        };
        let mut endpoints =
            cx.endpoints(KEY, &h.endpoints, "http://127.0.0.1:2379", Endpoint::parse)?;
        for (name, raw) in &h.tls {
            let key = format!("{KEY}.tls.{name}");
            let parsed =
                Endpoint::parse(name).map_err(|r| cx.keys.err(&key, format!("{name:?}"), r))?;
            let Some(e) = endpoints.iter_mut().find(|e| **e == parsed) else {
                return Err(cx.keys.err(&key, format!("{name:?}"), format!("is not in {KEY}.endpoints; TLS settings are for a granted endpoint, written as it is listed there")));
            };
            if !e.https {
                return Err(cx.keys.err(
                    &key,
                    format!("{name:?}"),
                    "is an http:// endpoint; write it as https:// (in endpoints too) to use TLS",
                ));
            }
            let loaded = tls::Tls::load(raw, |p| cx.keys.resolve(p))
                .map_err(|t| cx.keys.err(&format!("{key}.{}", t.key), &t.file, t.reason))?;
            e.tls = Some(loaded);
        }
        Ok(Some(Arc::new(Endpoints(endpoints.into()))))
    }

    fn prepare(
        &self,
        settings: &dyn Settings,
        _connection: Option<Arc<dyn Connection>>,
        _metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Box<dyn Prepared>> {
        let endpoints: &Endpoints = super::typed(settings, self)?;
        Ok(Box::new(Granted {
            pool: ConnectionPool::new(endpoints.0.len()),
            endpoints: endpoints.clone(),
        }))
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }
}

/// The grant readied for one loaded plugin: its endpoints and the
/// connections every instance of it shares.
struct Granted {
    endpoints: Endpoints,
    pool: Arc<ConnectionPool>,
}

impl Prepared for Granted {
    fn instance(&self, parts: &mut InstanceParts<'_>) -> anyhow::Result<()> {
        parts.contexts.insert(Hooks::new(
            self.endpoints.0.clone(),
            self.pool.clone(),
            parts.role,
        ));
        Ok(())
    }
}

/// Stands in for the hooks of an instance without the grant (never
/// reached: such an instance has no `wasi:http` linked): refuses everything.
struct DenyAll;

impl WasiHttpHooks for DenyAll {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let deadline = self.call_deadline;
        let (contexts, ctx, table) = self.split();
        let hooks: &mut dyn WasiHttpHooks = match contexts.get_mut::<Hooks>() {
            Some(hooks) => {
                hooks.deadline = deadline;
                hooks
            }
            // A zero-sized value: leaking it allocates nothing.
            None => Box::leak(Box::new(DenyAll)),
        };
        WasiHttpCtxView { ctx, table, hooks }
    }
}

/// One granted endpoint, as the config lists it: `http://host:port`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    /// Its own TLS settings (`tls.<endpoint>`); none: the public web roots.
    tls: Option<tls::Tls>,
}

/// The same server (TLS settings aside).
impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        (self.https, &self.host, self.port) == (other.https, &other.host, other.port)
    }
}

impl Endpoint {
    /// Accepts `http://host[:port]` or `https://host[:port]` with nothing after
    /// the authority: the grant is for a server, not for a path on it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("is not a URL ({e}); write it as http://host:port"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = uri
            .authority()
            .ok_or("has no host; write it as http://host:port")?;
        if authority.as_str().contains('@') {
            return Err("must not carry credentials; pass them in the plugin's settings".into());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(
                "must name only a server (scheme, host, port), without a path or query".into(),
            );
        }
        Ok(Self {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            tls: None,
        })
    }

    fn matches(&self, uri: &http::Uri) -> bool {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let Some(authority) = uri.authority() else {
            return false;
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        https == self.https
            && port == self.port
            && authority.host().eq_ignore_ascii_case(&self.host)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The hooks wasmtime-wasi-http calls for each request of one plugin instance.
pub struct Hooks {
    allowed: Arc<[Endpoint]>,
    pool: Arc<ConnectionPool>,
    role: &'static str,
    /// When the plugin call in progress must be done (taken from
    /// `HostState::call_deadline` whenever the plugin reaches for HTTP).
    pub deadline: Option<Instant>,
}

impl Hooks {
    fn new(allowed: Arc<[Endpoint]>, pool: Arc<ConnectionPool>, role: &'static str) -> Self {
        Self {
            allowed,
            pool,
            role,
            deadline: None,
        }
    }

    /// The guest's timeouts, each capped by what is left of the call.
    fn bounded(&self, options: Option<RequestOptions>) -> RequestOptions {
        let mut o = options.unwrap_or_default();
        if let Some(deadline) = self.deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let cap = |t: Option<Duration>| Some(t.map_or(left, |t| t.min(left)));
            o.connect_timeout = cap(o.connect_timeout);
            o.first_byte_timeout = cap(o.first_byte_timeout);
            o.between_bytes_timeout = cap(o.between_bytes_timeout);
        }
        o
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri().clone();
        let Some(index) = self.allowed.iter().position(|e| e.matches(&uri)) else {
            let granted = self
                .allowed
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(
                role = self.role,
                %uri,
                "refused an outgoing request to an endpoint the config does not grant (granted: {granted}); add it to capabilities.outgoing-http.endpoints if the plugin should reach it"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let options = self.bounded(options);
        let endpoint = &self.allowed[index];
        if let Some(t) = endpoint.tls.clone() {
            return Box::new(async move {
                let response = tls::send(t, request, options).await?;
                Ok((
                    response,
                    Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), Error>> + Send>,
                ))
            });
        }
        if !endpoint.https {
            let addr = format!("{}:{}", endpoint.host, endpoint.port);
            let pool = self.pool.clone();
            return Box::new(async move {
                let response = pool.send(index, addr, request, options).await?;
                // The connection is driven by its own task, not by this future.
                let done = async { Ok(()) };
                Ok((
                    response,
                    Box::new(done) as Box<dyn Future<Output = Result<(), Error>> + Send>,
                ))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_match_exactly() {
        let e = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert!(e.matches(&"http://127.0.0.1:2379/v3/kv/range".parse().unwrap()));
        assert!(!e.matches(&"http://127.0.0.1:2380/v3/kv/range".parse().unwrap()));
        assert!(!e.matches(&"https://127.0.0.1:2379/".parse().unwrap()));
        assert!(!e.matches(&"http://127.0.0.2:2379/".parse().unwrap()));
        let d = Endpoint::parse("https://Etcd.example").unwrap();
        assert_eq!(d.to_string(), "https://etcd.example:443");
        assert!(d.matches(&"https://etcd.example/v3/watch".parse().unwrap()));
        for bad in [
            "127.0.0.1:2379",
            "ftp://x:1",
            "http://x:1/v3",
            "http://u:p@x:1",
            "http://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
