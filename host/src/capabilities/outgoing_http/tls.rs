//! TLS of one granted endpoint (`capabilities.outgoing-http.tls.<endpoint>`):
//! the CA that signs the server's certificate and, for a server that asks
//! for one (etcd's `--client-cert-auth`), a client certificate and its key.
//!
//! The files are read when the config is loaded, so a missing or unreadable
//! file stops the start with the key that names it, and the private key
//! lives in the host only: the plugin never sees it. An `https://` endpoint
//! without a `tls` entry is checked against the public web roots, as before.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTls {
    pub(crate) ca_file: PathBuf,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
}

/// A ready client configuration; its debug form names only the files.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    files: String,
    client_cert: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({})", self.files)
    }
}

/// Why a `tls` entry cannot be used: the sub-key, the file and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {file}: {reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub file: String,
    pub reason: String,
}

impl Tls {
    /// Reads and checks the files of `raw` (`resolve` makes a path relative
    /// to the config file absolute).
    pub fn load(raw: &RawTls, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, TlsError> {
        let ca = resolve(&raw.ca_file);
        let fail = |key: &'static str, file: &Path, reason: String| TlsError {
            key,
            file: file.display().to_string(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = read_certs(&ca).map_err(|r| fail("ca-file", &ca, r))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| fail("ca-file", &ca, format!("not a usable CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("ca-file", &ca, format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let mut files = format!("ca-file {}", ca.display());
        let config = match (&raw.cert_file, &raw.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let (cert, key) = (resolve(cert), resolve(key));
                let chain = read_certs(&cert).map_err(|r| fail("cert-file", &cert, r))?;
                let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    fail(
                        "key-file",
                        &key,
                        format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                    )
                })?;
                files.push_str(&format!(
                    ", cert-file {}, key-file {}",
                    cert.display(),
                    key.display()
                ));
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    fail(
                        "key-file",
                        &key,
                        format!("does not go with cert-file {}: {e}", cert.display()),
                    )
                })?
            }
            (Some(cert), None) => {
                return Err(fail(
                    "key-file",
                    Path::new("(unset)"),
                    format!("cert-file {} needs its key-file", cert.display()),
                ));
            }
            (None, Some(key)) => {
                return Err(fail(
                    "cert-file",
                    Path::new("(unset)"),
                    format!("key-file {} needs its cert-file", key.display()),
                ));
            }
        };
        Ok(Self {
            config: Arc::new(config),
            files,
            client_cert: raw.cert_file.is_some(),
        })
    }

    pub fn describe(&self) -> &str {
        &self.files
    }

    pub fn has_client_cert(&self) -> bool {
        self.client_cert
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Sends `request` over TLS with `tls`: connect, handshake, one HTTP/1
/// exchange on the connection; each step bounded by `options`.
pub async fn send(
    tls: Tls,
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
) -> Result<http::Response<WasiBody>, Error> {
    let far = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(far);
    let first_byte = options.first_byte_timeout.unwrap_or(far);
    let between = options
        .between_bytes_timeout
        .unwrap_or(far)
        .max(Duration::from_millis(1));
    let authority = request
        .uri()
        .authority()
        .ok_or(Error::HttpRequestUriInvalid)?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)?;
    let client_cert = tls.has_client_cert();
    // With TLS 1.3 a server that wants a client certificate says so only
    // after the handshake, on the first read: both places give the hint.
    let hint = if client_cert {
        ""
    } else {
        "; a server that requires a client certificate refuses a client without one: set cert-file and key-file"
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                tracing::warn!(%authority, error = %e, files = tls.describe(), "TLS handshake failed: check that ca-file signs the server's certificate and that the certificate names this host{hint}");
                Error::Tls(e)
            })?;
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(stream))
            .await
            .map_err(Error::from)
    };
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The connection is driven by a task of its own; it ends with the body.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "TLS connection ended with an error");
        }
    });
    // Origin form on the wire: the scheme and authority were for routing.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    if !request.headers().contains_key(http::header::HOST)
        && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, v);
    }
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(|e| {
            tracing::warn!(%authority, error = %e, "request over TLS failed{hint}");
            Error::from(e)
        })?;
    Ok(response.map(|incoming| {
        Paced {
            inner: incoming,
            between,
            timer: Box::pin(tokio::time::sleep(between)),
        }
        .boxed_unsync()
    }))
}

/// A response body that fails when no frame arrives for `between`.
struct Paced {
    inner: hyper::body::Incoming,
    between: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.between;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Error::from)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
