//! Test harness: a real MIT Kerberos KDC (Debian's `krb5-kdc` and
//! `krb5-admin-server`: `kdb5_util`, `krb5kdc`, `kadmin.local`) for realm
//! [`REALM`] on a free loopback port, with its database, stash and logs in
//! a temporary directory. Principals and their keytabs are made with
//! `kadmin.local`; clients (the sidecar, ZooKeeper's JVM) are pointed at it
//! with the [`Kdc::krb5_conf`] it writes (TCP only, no DNS, no reverse
//! lookups, so that `zookeeper/localhost` is the servers' principal).
//!
//! `scripts/test.sh` installs the packages; if they are missing, the tests
//! fail and say so. The KDC dies with the test process.

#![allow(dead_code)]

mod kdc_services {
    include!("services.rs");
}
use kdc_services::{free_ports, spawn_with_parent_death_signal};

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "HA.TEST";
const NOT_INSTALLED: &str = "MIT Kerberos is not installed: run ./scripts/test.sh, which installs the Debian packages krb5-kdc, krb5-admin-server and krb5-user";

pub struct Kdc {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Kdc {
    /// Makes the realm's database and starts the KDC; returns once it
    /// accepts connections.
    pub fn start() -> Kdc {
        let dir = tempfile::Builder::new()
            .prefix("ha-kdc-")
            .tempdir()
            .expect("create the KDC's directory");
        let port = free_ports(1)[0];
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("krb5.conf"),
            format!(
                "[libdefaults]\n\
                 default_realm = {REALM}\n\
                 dns_lookup_realm = false\n\
                 dns_lookup_kdc = false\n\
                 dns_canonicalize_hostname = false\n\
                 rdns = false\n\
                 udp_preference_limit = 1\n\
                 ticket_lifetime = 1h\n\
                 [realms]\n\
                 {REALM} = {{\n  kdc = 127.0.0.1:{port}\n}}\n\
                 [domain_realm]\n\
                 localhost = {REALM}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("kdc.conf"),
            format!(
                "[kdcdefaults]\n\
                 kdc_listen = 127.0.0.1:{port}\n\
                 kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n\
                 {REALM} = {{\n\
                 \x20 database_name = {d}/principal\n\
                 \x20 key_stash_file = {d}/stash\n\
                 \x20 acl_file = {d}/kadm5.acl\n\
                 \x20 kdc_listen = 127.0.0.1:{port}\n\
                 \x20 kdc_tcp_listen = 127.0.0.1:{port}\n\
                 \x20 max_life = 1h\n\
                 \x20 supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n\
                 }}\n\
                 [logging]\n\
                 kdc = FILE:{d}/kdc.log\n\
                 admin_server = FILE:{d}/kadmin.log\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("kadm5.acl"), "").unwrap();
        let mut kdc = Kdc {
            dir,
            port,
            child: None,
        };
        kdc.tool(
            "kdb5_util",
            &[
                "create",
                "-s",
                "-r",
                REALM,
                "-P",
                "kdc-master-key-for-tests",
            ],
        );
        let mut cmd = Command::new(sbin("krb5kdc"));
        cmd.args(["-n", "-r", REALM])
            .envs(kdc.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kdc.child = Some(
            spawn_with_parent_death_signal(cmd)
                .unwrap_or_else(|e| panic!("{NOT_INSTALLED} (krb5kdc: {e})")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the KDC does not listen on 127.0.0.1:{port}; its log:\n{}",
                std::fs::read_to_string(kdc.dir.path().join("kdc.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kdc
    }

    /// The krb5.conf clients use (`KRB5_CONFIG`, `java.security.krb5.conf`).
    pub fn krb5_conf(&self) -> PathBuf {
        self.dir.path().join("krb5.conf")
    }

    /// The environment of the Kerberos tools for this realm.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KRB5_CONFIG".into(), self.krb5_conf().display().to_string()),
            (
                "KRB5_KDC_PROFILE".into(),
                self.dir.path().join("kdc.conf").display().to_string(),
            ),
        ]
    }

    /// Adds `principal` (without the realm) with a random key and writes
    /// its key into the keytab `keytab` (which may already hold others).
    /// Returns the full principal name.
    pub fn add_principal(&self, principal: &str, keytab: &Path) -> String {
        self.kadmin(&format!("addprinc -randkey {principal}"));
        self.export_key(principal, keytab);
        format!("{principal}@{REALM}")
    }

    /// Gives `principal` a new random key and writes it to `keytab`: keytabs
    /// exported before hold a key the KDC no longer knows.
    pub fn export_key(&self, principal: &str, keytab: &Path) {
        self.kadmin(&format!("ktadd -k {} {principal}", keytab.display()));
    }

    /// Gets a ticket for `principal` from `keytab` into the cache `ccache`
    /// (kinit), valid for `lifetime` (such as `1h`).
    pub fn kinit(&self, principal: &str, keytab: &Path, ccache: &Path, lifetime: &str) {
        let out = Command::new("kinit")
            .args(["-k", "-t"])
            .arg(keytab)
            .args(["-l", lifetime, "-c"])
            .arg(ccache)
            .arg(principal)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} (kinit: {e})"));
        assert!(
            out.status.success(),
            "kinit {principal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kdc.log")).unwrap_or_default()
    }

    fn kadmin(&self, query: &str) {
        self.tool("kadmin.local", &["-r", REALM, "-q", query]);
    }

    fn tool(&self, tool: &str, args: &[&str]) {
        let out = Command::new(sbin(tool))
            .args(args)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} ({tool}: {e})"));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("error") && !text.contains("Error"),
            "{tool} {args:?} failed: {text}"
        );
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The administrative tools live in /usr/sbin, which a test's PATH may lack.
fn sbin(tool: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(tool);
    if p.exists() { p } else { PathBuf::from(tool) }
}
