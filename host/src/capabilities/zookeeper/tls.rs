//! TLS to ZooKeeper (`capabilities.zookeeper.tls`): the CA that signs the
//! members' certificates and, for a `secureClientPort` with
//! `ssl.clientAuth=need`, a client certificate and its key.
//!
//! The settings are etcd's (`capabilities.outgoing-http.tls`), checked by
//! the same code when the config is loaded: a missing or bad file, a key
//! that does not go with its certificate, stops the start with the key that
//! names it. Every member of the quorum is then reached over TLS
//! (zookeeper-client's own rustls support); the quorum lists the members'
//! secure client ports.

use std::fmt;
use std::path::{Path, PathBuf};

use zookeeper_client as zk;

use crate::capabilities::outgoing_http::tls::Tls;
pub use crate::capabilities::outgoing_http::tls::{RawTls as RawZkTls, TlsError as ZkTlsError};

/// The client's TLS options, made once at load (only the configured CA is
/// trusted); the debug form names only the files.
#[derive(Clone)]
pub struct ZkTls {
    options: zk::TlsOptions,
    files: String,
}

impl fmt::Debug for ZkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkTls({})", self.files)
    }
}

impl ZkTls {
    pub fn load(raw: &RawZkTls, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, ZkTlsError> {
        let checked = Tls::load(raw, &resolve)?;
        // The files were just read and checked; read as text for the client.
        let text = |key: &'static str, p: &Path| {
            let path = resolve(p);
            std::fs::read_to_string(&path).map_err(|e| ZkTlsError {
                key,
                file: path.display().to_string(),
                reason: format!("cannot read: {e}"),
            })
        };
        let unusable = |key: &'static str, e: zk::Error| ZkTlsError {
            key,
            file: checked.describe().to_string(),
            reason: format!("not usable by the ZooKeeper client: {e}"),
        };
        // The process needs a rustls provider before the client builds its configuration.
        crate::capabilities::ensure_tls_provider();
        let mut options = zk::TlsOptions::new()
            .with_pem_ca(&text("ca-file", &raw.ca_file)?)
            .map_err(|e| unusable("ca-file", e))?;
        if let (Some(cert), Some(key)) = (&raw.cert_file, &raw.key_file) {
            options = options
                .with_pem_identity(&text("cert-file", cert)?, &text("key-file", key)?)
                .map_err(|e| unusable("cert-file", e))?;
        }
        Ok(Self {
            options,
            files: checked.describe().to_string(),
        })
    }

    pub fn options(&self) -> zk::TlsOptions {
        self.options.clone()
    }

    pub fn describe(&self) -> &str {
        &self.files
    }
}
