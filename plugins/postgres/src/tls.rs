//! TLS to PostgreSQL inside the plugin: the host grants a plain TCP
//! connection (`capabilities.tcp`), and PostgreSQL starts every connection in
//! plain text anyway (an `SSLRequest`, then the handshake on the same
//! socket), so the handshake has to happen here. `rustls` with the RustCrypto
//! provider (`rustls-rustcrypto`, pure Rust) builds for `wasm32-wasip2`;
//! `rustls`' default providers (aws-lc-rs, ring) need a C toolchain for the
//! target. The server's certificate is always verified, against the CA the
//! config names, and must be for the host the settings connect to (libpq's
//! `sslmode=verify-full`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// PostgreSQL's `SSLRequest`: length 8, then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A client config trusting exactly the certificates in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("not a PEM certificate ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate rustls cannot use ({e})"))?;
        found += 1;
    }
    if found == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS version this provider supports ({e})"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The connection's byte stream: plain, or TLS over the same socket.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Asks the server for TLS on `tcp` and completes the handshake, so a
    /// certificate the config does not trust fails here, named, rather
    /// than at the first query. `host` is what the certificate must name.
    pub fn upgrade(
        mut tcp: TcpStream,
        config: Arc<ClientConfig>,
        host: &str,
    ) -> Result<Stream, String> {
        tcp.write_all(&SSL_REQUEST)
            .map_err(|e| format!("sending the SSLRequest: {e}"))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .map_err(|e| format!("reading the answer to the SSLRequest: {e}"))?;
        match answer[0] {
            b'S' => {}
            b'N' => {
                return Err("the server does not accept TLS (ssl = off in its postgresql.conf); turn ssl on there, or set plugin.settings.sslmode: disable".into());
            }
            other => {
                return Err(format!(
                    "the server answered the SSLRequest with {other:#04x}, not 'S' or 'N': is this PostgreSQL?"
                ));
            }
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a name a certificate can carry ({e})"))?;
        let mut conn =
            ClientConnection::new(config, name).map_err(|e| format!("cannot start TLS ({e})"))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| {
                format!("TLS handshake: {e}; check that plugin.settings.sslrootcert-secret holds the CA that signed the server's certificate, and that the certificate names {host}")
            })?;
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
