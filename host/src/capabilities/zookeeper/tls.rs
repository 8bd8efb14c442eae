//! TLS to ZooKeeper (`capabilities.zookeeper.tls`): the CA that signs the
//! members' certificates and, for a `secureClientPort` with
//! `ssl.clientAuth=need`, a client certificate and its key.
//!
//! The files are read, and their PEM checked, when the config is loaded: a
//! missing or bad file stops the start with the key that names it. Every
//! member of the quorum is then reached over TLS (zookeeper-client's own
//! rustls support); the quorum lists the members' secure client ports.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zookeeper_client as zk;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawZkTls {
    ca_file: PathBuf,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// The PEM texts, read at load; the debug form names only the files.
#[derive(Clone)]
pub struct ZkTls {
    ca: String,
    identity: Option<(String, String)>,
    files: String,
}

impl fmt::Debug for ZkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkTls({})", self.files)
    }
}

/// Which sub-key of `tls` failed, on which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {file}: {reason}")]
pub struct ZkTlsError {
    pub key: &'static str,
    pub file: String,
    pub reason: String,
}

impl ZkTls {
    pub fn load(raw: &RawZkTls, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, ZkTlsError> {
        let read = |key: &'static str, p: &Path| {
            let path = resolve(p);
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|e| ZkTlsError {
                    key,
                    file: path.display().to_string(),
                    reason: format!("cannot read: {e}"),
                })
        };
        let (ca_path, ca) = read("ca-file", &raw.ca_file)?;
        let mut files = format!("ca-file {}", ca_path.display());
        let identity = match (&raw.cert_file, &raw.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let (cert_path, cert) = read("cert-file", c)?;
                let (key_path, key) = read("key-file", k)?;
                files.push_str(&format!(
                    ", cert-file {}, key-file {}",
                    cert_path.display(),
                    key_path.display()
                ));
                Some((cert, key))
            }
            (Some(c), None) | (None, Some(c)) => {
                return Err(ZkTlsError {
                    key: if raw.cert_file.is_some() {
                        "key-file"
                    } else {
                        "cert-file"
                    },
                    file: resolve(c).display().to_string(),
                    reason: "cert-file and key-file go together: set both, or neither".into(),
                });
            }
        };
        let tls = Self {
            ca,
            identity,
            files,
        };
        // Checked now, so that a bad PEM is a config error, not a failed connect.
        tls.options().map_err(|e| ZkTlsError {
            key: "ca-file",
            file: tls.files.clone(),
            reason: format!("not usable PEM: {e}"),
        })?;
        Ok(tls)
    }

    /// The client's TLS options: only this CA is trusted.
    pub fn options(&self) -> Result<zk::TlsOptions, zk::Error> {
        crate::capabilities::ensure_tls_provider();
        let options = zk::TlsOptions::new().with_pem_ca(&self.ca)?;
        match &self.identity {
            Some((cert, key)) => options.with_pem_identity(cert, key),
            None => Ok(options),
        }
    }

    pub fn describe(&self) -> &str {
        &self.files
    }
}
