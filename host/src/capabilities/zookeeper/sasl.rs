//! SASL to ZooKeeper (`capabilities.zookeeper.sasl`), with zookeeper-client's
//! own mechanisms: `DIGEST-MD5` (a user of the servers' JAAS `Server`
//! section, its password read from a file) and `GSSAPI` (Kerberos, with a
//! keytab and principal, or the ticket cache of the sidecar's user).
//!
//! Everything is read and checked when the config is loaded: an unreadable
//! password file, a keytab without a key for the principal, a krb5.conf
//! that is not there stop the start with the key that names them. With a
//! Flink config and no `sasl` section, Flink's own keys decide, as Flink's
//! ZooKeeper client would (`zookeeper.sasl.*`, `security.kerberos.login.*`).
//!
//! Kerberos is MIT's GSSAPI library, which takes its keytab, cache and
//! krb5.conf from the environment: `process_env` gives the variables,
//! which `main` sets before any thread starts (the library reads them at
//! each connect, and refreshes the ticket from the keytab by itself).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zookeeper_client as zk;

use super::keytab;
use crate::section::FlinkConfig;

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawZkSasl {
    mechanism: String,
    /// DIGEST-MD5: the user and the file holding its password.
    username: Option<String>,
    password_file: Option<PathBuf>,
    /// GSSAPI: the primary of the servers' principal (Flink's
    /// `zookeeper.sasl.service-name`).
    service_name: Option<String>,
    /// GSSAPI with a keytab: the sidecar's principal and its keytab; both
    /// unset: the ticket cache.
    principal: Option<String>,
    keytab: Option<PathBuf>,
    /// GSSAPI: the krb5.conf to use instead of the system's.
    krb5_conf: Option<PathBuf>,
}

/// Checked SASL settings; the `Debug` form shows no password.
#[derive(Clone)]
pub enum ZkSasl {
    DigestMd5 { username: String, password: String },
    Gssapi(Kerberos),
}

#[derive(Clone, Debug)]
pub struct Kerberos {
    pub service_name: String,
    /// With its keytab; none: the ticket cache.
    pub keytab: Option<(String, PathBuf)>,
    pub krb5_conf: Option<PathBuf>,
}

impl fmt::Debug for ZkSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZkSasl::DigestMd5 { username, .. } => {
                write!(f, "DIGEST-MD5(user {username:?}, password <redacted>)")
            }
            ZkSasl::Gssapi(k) => write!(f, "GSSAPI({k:?})"),
        }
    }
}

/// What is wrong with which sub-key of `sasl`.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SaslError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

fn bad(key: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> SaslError {
    SaslError {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl ZkSasl {
    /// Checks `raw`, reading the files it names (`resolve` makes their
    /// paths absolute, relative to the config).
    pub fn load(raw: &RawZkSasl, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, SaslError> {
        let only = |key: &'static str, set: bool, mechanism: &str| {
            if set {
                Err(bad(
                    key,
                    "(set)",
                    format!(
                        "is not used by {mechanism}: remove it, or choose the mechanism it belongs to"
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match raw.mechanism.to_ascii_uppercase().as_str() {
            "DIGEST-MD5" => {
                only("service-name", raw.service_name.is_some(), "DIGEST-MD5")?;
                only("principal", raw.principal.is_some(), "DIGEST-MD5")?;
                only("keytab", raw.keytab.is_some(), "DIGEST-MD5")?;
                only("krb5-conf", raw.krb5_conf.is_some(), "DIGEST-MD5")?;
                let username = match raw.username.as_deref().map(str::trim) {
                    Some(u) if !u.is_empty() => u.to_string(),
                    _ => {
                        return Err(bad(
                            "username",
                            "(unset)",
                            "DIGEST-MD5 needs the user, as the servers' JAAS Server section names it (user_<name>=...)",
                        ));
                    }
                };
                let Some(file) = &raw.password_file else {
                    return Err(bad(
                        "password-file",
                        "(unset)",
                        "DIGEST-MD5 needs the file that holds the user's password",
                    ));
                };
                let path = resolve(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    bad("password-file", path.display(), format!("cannot read: {e}"))
                })?;
                // One line; a trailing newline (as `echo` writes) is not part of it.
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    return Err(bad(
                        "password-file",
                        path.display(),
                        "is empty; write the user's password into it",
                    ));
                }
                Ok(ZkSasl::DigestMd5 { username, password })
            }
            "GSSAPI" => {
                only("username", raw.username.is_some(), "GSSAPI")?;
                only("password-file", raw.password_file.is_some(), "GSSAPI")?;
                let service_name = raw
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "zookeeper".into());
                if service_name.is_empty() || service_name.contains(['/', '@']) {
                    return Err(bad(
                        "service-name",
                        format!("{service_name:?}"),
                        "must be the primary of the servers' principal alone (zookeeper for zookeeper/<host>@REALM)",
                    ));
                }
                let keytab = match (&raw.principal, &raw.keytab) {
                    (None, None) => None,
                    (Some(p), Some(k)) => Some((p.clone(), check_keytab(p, &resolve(k))?)),
                    (Some(_), None) => {
                        return Err(bad(
                            "keytab",
                            "(unset)",
                            "principal needs the keytab that holds its key; to use the ticket cache instead, remove principal",
                        ));
                    }
                    (None, Some(k)) => {
                        return Err(bad(
                            "principal",
                            "(unset)",
                            format!(
                                "keytab {} needs the principal to log in as",
                                resolve(k).display()
                            ),
                        ));
                    }
                };
                let krb5_conf = match &raw.krb5_conf {
                    None => None,
                    Some(p) => {
                        let path = resolve(p);
                        std::fs::metadata(&path).map_err(|e| {
                            bad("krb5-conf", path.display(), format!("cannot read: {e}"))
                        })?;
                        Some(path)
                    }
                };
                Ok(ZkSasl::Gssapi(Kerberos {
                    service_name,
                    keytab,
                    krb5_conf,
                }))
            }
            other => Err(bad(
                "mechanism",
                format!("{other:?}"),
                "must be DIGEST-MD5 or GSSAPI (Kerberos)",
            )),
        }
    }

    pub fn options(&self) -> zk::SaslOptions {
        match self {
            ZkSasl::DigestMd5 { username, password } => {
                zk::SaslOptions::digest_md5(username.clone(), password.clone()).into()
            }
            ZkSasl::Gssapi(k) => zk::SaslOptions::gssapi()
                .with_username(k.service_name.clone())
                .into(),
        }
    }

    /// The identity the servers see, for messages (no secret in it).
    pub fn identity(&self) -> String {
        match self {
            ZkSasl::DigestMd5 { username, .. } => format!("DIGEST-MD5 user {username:?}"),
            ZkSasl::Gssapi(Kerberos {
                keytab: Some((p, k)),
                ..
            }) => format!("Kerberos principal {p:?} (keytab {})", k.display()),
            ZkSasl::Gssapi(_) => "Kerberos, the ticket cache".into(),
        }
    }

    /// What to check when the servers refuse this identity.
    pub fn hint(&self) -> &'static str {
        match self {
            ZkSasl::DigestMd5 { .. } => {
                "check capabilities.zookeeper.sasl.username and the password in its password-file against the servers' JAAS Server section"
            }
            ZkSasl::Gssapi(Kerberos { keytab: None, .. }) => {
                "the ticket cache of the sidecar's user must hold a valid ticket (kinit; klist shows it), or set capabilities.zookeeper.sasl.principal and keytab"
            }
            ZkSasl::Gssapi(_) => {
                "check that the KDC in krb5.conf answers, that the keytab's key is current (kvno), and that the servers' principal is <service-name>/<host as the quorum names it>"
            }
        }
    }

    /// The variables MIT's Kerberos library reads: a keytab to get tickets
    /// from, a cache of the sidecar's own in memory (so that it neither
    /// uses nor overwrites its user's), and the krb5.conf. None for the
    /// ticket cache without a krb5.conf, nor for DIGEST-MD5.
    pub fn process_env(&self) -> Vec<(&'static str, OsString)> {
        let ZkSasl::Gssapi(k) = self else {
            return Vec::new();
        };
        let mut env = Vec::new();
        if let Some((_, keytab)) = &k.keytab {
            let mut kt = OsString::from("FILE:");
            kt.push(keytab);
            env.push(("KRB5_CLIENT_KTNAME", kt));
            env.push((
                "KRB5CCNAME",
                OsString::from(format!("MEMORY:ha-sidecar-{}", std::process::id())),
            ));
        }
        if let Some(conf) = &k.krb5_conf {
            env.push(("KRB5_CONFIG", conf.clone().into_os_string()));
        }
        env
    }
}

/// The keytab must hold a key for `principal`, and hold it first: MIT's
/// library logs in, with an empty cache, as the keytab's first principal.
fn check_keytab(principal: &str, path: &Path) -> Result<PathBuf, SaslError> {
    let bytes = std::fs::read(path)
        .map_err(|e| bad("keytab", path.display(), format!("cannot read: {e}")))?;
    let names = keytab::principals(&bytes).map_err(|e| bad("keytab", path.display(), e))?;
    match names.iter().position(|n| n == principal) {
        Some(0) => Ok(path.to_path_buf()),
        Some(_) => Err(bad(
            "keytab",
            path.display(),
            format!(
                "holds {principal:?} but not first (it holds {}); the sidecar logs in as a keytab's first principal: give it a keytab of its own (kadmin ktadd -k FILE {principal})",
                names.join(", ")
            ),
        )),
        None if names.is_empty() => Err(bad(
            "keytab",
            path.display(),
            format!("holds no key; add one for {principal:?} (kadmin ktadd)"),
        )),
        None => Err(bad(
            "keytab",
            path.display(),
            format!(
                "holds no key for principal {principal:?}, only for {}; fix capabilities.zookeeper.sasl.principal or export its key (kadmin ktadd)",
                names.join(", ")
            ),
        )),
    }
}

/// Flink's keys for ZooKeeper SASL, as Flink's own client reads them: SASL
/// unless `zookeeper.sasl.disable`; Kerberos when the login context
/// (`zookeeper.sasl.login-context-name`, default `Client`) is one of
/// `security.kerberos.login.contexts`, with `security.kerberos.login.keytab`
/// and `.principal`, or the ticket cache (`use-ticket-cache`, default
/// true). Flink's other source, a JAAS file given to the JVM, is not read:
/// say such a login in `capabilities.zookeeper.sasl`.
pub fn from_flink(f: &FlinkConfig) -> Result<Option<RawZkSasl>, (String, String, String)> {
    let flag = |key: &str, default: bool| -> Result<bool, (String, String, String)> {
        match f.get(&[key]) {
            None => Ok(default),
            Some((_, v)) => match v.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err((
                    key.to_string(),
                    v.to_string(),
                    "must be true or false".into(),
                )),
            },
        }
    };
    if flag("zookeeper.sasl.disable", false)? {
        return Ok(None);
    }
    let context = f
        .get(&["zookeeper.sasl.login-context-name"])
        .map_or("Client", |(_, v)| v.trim());
    let kerberos = f
        .get(&["security.kerberos.login.contexts"])
        .is_some_and(|(_, v)| v.split(',').any(|c| c.trim() == context));
    if !kerberos {
        return Ok(None);
    }
    let get = |key: &str| f.get(&[key]).map(|(_, v)| v.trim().to_string());
    let keytab = get("security.kerberos.login.keytab").map(PathBuf::from);
    let principal = get("security.kerberos.login.principal");
    if keytab.is_none() && !flag("security.kerberos.login.use-ticket-cache", true)? {
        return Err((
            "security.kerberos.login.keytab".into(),
            "(unset)".into(),
            format!(
                "the login context {context} is in security.kerberos.login.contexts, but there is no keytab and use-ticket-cache is false: set security.kerberos.login.keytab and .principal"
            ),
        ));
    }
    Ok(Some(RawZkSasl {
        mechanism: "GSSAPI".into(),
        service_name: get("zookeeper.sasl.service-name"),
        principal: keytab.as_ref().and(principal),
        keytab,
        krb5_conf: get("security.kerberos.krb5-conf.path").map(PathBuf::from),
        ..RawZkSasl::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flink(text: &str) -> FlinkConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        FlinkConfig::load(&path).unwrap()
    }

    #[test]
    fn flinks_keys_choose_kerberos_as_flinks_own_client_would() {
        // The login context is among Flink's Kerberos contexts: a keytab login.
        let raw = from_flink(&flink(
            "security.kerberos.login.contexts: Client,KafkaClient\nsecurity.kerberos.login.keytab: /k.keytab\nsecurity.kerberos.login.principal: flink/jm@R\nzookeeper.sasl.service-name: zk\n",
        ))
        .unwrap()
        .expect("Kerberos");
        assert_eq!(raw.mechanism, "GSSAPI");
        assert_eq!(raw.keytab.as_deref(), Some(Path::new("/k.keytab")));
        assert_eq!(raw.principal.as_deref(), Some("flink/jm@R"));
        assert_eq!(raw.service_name.as_deref(), Some("zk"));
        // No keytab: the ticket cache, and the principal is not used.
        let raw = from_flink(&flink(
            "security.kerberos.login.contexts: Client\nsecurity.kerberos.login.principal: p@R\n",
        ))
        .unwrap()
        .expect("Kerberos");
        assert_eq!((raw.keytab, raw.principal), (None, None));
        // A context name that is not among the contexts, or SASL disabled: none.
        let other = "security.kerberos.login.contexts: Client\nzookeeper.sasl.login-context-name: ZkClient\n";
        assert!(from_flink(&flink(other)).unwrap().is_none());
        let off = "security.kerberos.login.contexts: Client\nzookeeper.sasl.disable: true\n";
        assert!(from_flink(&flink(off)).unwrap().is_none());
        assert!(from_flink(&flink("a: b\n")).unwrap().is_none());
        // No keytab and no ticket cache: refused, naming Flink's key.
        let (key, _, reason) = from_flink(&flink(
            "security.kerberos.login.contexts: Client\nsecurity.kerberos.login.use-ticket-cache: false\n",
        ))
        .unwrap_err();
        assert_eq!(key, "security.kerberos.login.keytab");
        assert!(reason.contains("use-ticket-cache is false"), "{reason}");
        let (key, value, _) = from_flink(&flink("zookeeper.sasl.disable: maybe\n")).unwrap_err();
        assert_eq!(
            (key.as_str(), value.as_str()),
            ("zookeeper.sasl.disable", "maybe")
        );
    }

    #[test]
    fn the_debug_form_holds_no_password() {
        let s = ZkSasl::DigestMd5 {
            username: "u".into(),
            password: "p4ssw0rd-secret".into(),
        };
        assert!(!format!("{s:?}").contains("p4ssw0rd"));
    }
}
