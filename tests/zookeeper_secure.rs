//! The ZooKeeper backend against secured ZooKeeper servers (issue 16, §1
//! and §2), started by the harness on loopback: one serving clients over
//! TLS and requiring a client certificate (`secureClientPort`,
//! `ssl.clientAuth=need`; certificates made with openssl), one requiring a
//! SASL login with DIGEST-MD5 users from its JAAS `Server` section, and one
//! requiring Kerberos, with a real MIT KDC the harness starts (realm,
//! principals and keytabs made by `kadmin.local`). The SASL servers enforce
//! authentication (`enforce.auth.enabled`) and the sidecars create their
//! nodes with `creator` ACLs.
//!
//! Each secured server passes the conformance suite and a takeover among
//! three sidecars; a missing certificate, a wrong CA, no login, a wrong
//! password, a stale keytab and an empty ticket cache each stop the start
//! with an error that names what failed and what to set. No log of any
//! sidecar holds the password or the client key.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/kdc.rs"]
mod kdc;
mod support;
#[path = "support/zk.rs"]
mod zk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::Certs;
use kdc::Kdc;
use support::*;
use zk::{Security, ZooKeeper};

/// The session timeout the sidecars ask for (the servers allow 0.4 to 4 s).
const SESSION: Duration = Duration::from_secs(2);
const USER: &str = "sidecar";
const PASSWORD: &str = "zk-digest-pw-5d2e81c4";
const OTHER_USER: &str = "intruder";
const OTHER_PASSWORD: &str = "zk-other-pw-0b7a13f9";

/// A sidecar config on the ZooKeeper plugin with `creator` ACLs unless
/// `open`, and `extra` (flow-map entries such as `tls: {...}`) in its
/// `capabilities.zookeeper`.
fn config(id: &str, port: u16, quorum: &str, extra: &str) -> String {
    SidecarYaml::new(id, port, "ha_plugin_zookeeper")
        .settings("root: /flink, cluster-id: secure")
        .capability(&format!(
            "zookeeper: {{quorum: '{quorum}', client: {{session-timeout: {}ms, connection-timeout: 2s, retry-wait: 200ms, max-retry-wait: 1s, max-retry-attempts: 3, acl: {}}}{extra}}}",
            SESSION.as_millis(),
            if extra.contains("sasl") { "creator" } else { "open" },
        ))
        .build()
}

/// Starts a sidecar that must not get going: it exits by itself, with a
/// failure, and its log holds every one of `wanted`. Returns the log.
fn refused_at_start(
    cluster: &Cluster,
    id: &str,
    yaml: impl FnOnce(u16) -> String,
    env: &[(&str, &str)],
    wanted: &[&str],
) -> String {
    let port = free_port();
    let cfg = cluster.write_config(id, &yaml(port));
    let log = cluster.path().join(format!("{id}.log"));
    let mut s = Sidecar::spawn(id, port, &cfg, &log, env);
    let status = s.wait_exit(Duration::from_secs(40));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{id} started:\n{text}");
    println!(
        "{id}: {}",
        text.lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or("(no error line)")
    );
    for w in wanted {
        assert!(text.contains(w), "{id}: no {w:?} in its log:\n{text}");
    }
    text
}

/// `plugin check` (the conformance suite, in a process of its own so that
/// it gets the Kerberos environment as the sidecar does) must pass.
fn assert_plugin_check(cfg: &Path, env: &[(String, String)]) {
    let out = std::process::Command::new(sidecar_bin())
        .args(["plugin", "check"])
        .arg(plugin("ha_plugin_zookeeper"))
        .arg("--config")
        .arg(cfg)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("HA_SIDECAR_LOG", "warn")
        .output()
        .expect("run ha-sidecar plugin check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "plugin check failed:\n{text}");
    assert!(
        text.contains("handover") && !text.contains("FAIL"),
        "{text}"
    );
}

fn takeover(sidecars: Vec<Sidecar>, what: &str) {
    agreed_leader(&sidecars);
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(sidecars, SESSION + Duration::from_secs(10));
    println!("ZooKeeper {what}: SIGTERM {graceful:?}, kill -9 {crash:?} (session {SESSION:?})");
}

// ---- TLS ----

fn tls_server(certs: &Certs) -> ZooKeeper {
    let dir = certs.dir.clone();
    ZooKeeper::standalone_secured(|zk_dir| {
        // ZooKeeper's PEM key store: the private key and the certificate in one file.
        let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
        let cert = std::fs::read_to_string(dir.join("server.pem")).unwrap();
        let keystore = zk_dir.join("keystore.pem");
        std::fs::write(&keystore, key + &cert).unwrap();
        Security {
            secure_port: true,
            config: format!(
                "ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
                 ssl.trustStore.location={}\nssl.trustStore.type=PEM\n\
                 ssl.clientAuth=need\n\
                 # Clients are judged by their certificate, not by the name of their address.\n\
                 ssl.hostnameVerification=false\n",
                keystore.display(),
                dir.join("ca.pem").display()
            ),
            jvm: Vec::new(),
        }
    })
}

fn client_tls(c: &Certs) -> String {
    format!(
        ", tls: {{ca-file: '{}', cert-file: '{}', key-file: '{}'}}",
        c.ca().display(),
        c.client_cert().display(),
        c.client_key().display()
    )
}

#[test]
fn over_tls_zookeeper_passes_the_conformance_suite_and_a_standby_takes_over() {
    let cluster = Cluster::new();
    let certs = Certs::make(cluster.path());
    let server = tls_server(&certs);
    let quorum = server.secure_quorum();
    let tls = client_tls(&certs);
    let cfg = cluster.write_config(
        "conformance",
        &config("conformance", free_port(), &quorum, &tls),
    );
    assert_plugin_check(&cfg, &[]);
    let sidecars: Vec<Sidecar> = ["t1", "t2", "t3"]
        .iter()
        .map(|id| cluster.start_with(id, |port| config(id, port, &quorum, &tls)))
        .collect();
    takeover(sidecars, "over TLS");
    assert_no_secret_in_logs(cluster.path(), &certs.client_key_lines());
}

#[test]
fn over_tls_a_missing_client_certificate_a_wrong_ca_or_plain_tcp_gets_no_session() {
    let cluster = Cluster::new();
    let certs = Certs::make(cluster.path());
    let server = tls_server(&certs);
    let quorum = server.secure_quorum();
    let cases = [
        (
            "nocert",
            format!(", tls: {{ca-file: '{}'}}", certs.ca().display()),
        ),
        (
            "wrongca",
            format!(
                ", tls: {{ca-file: '{}', cert-file: '{}', key-file: '{}'}}",
                certs.other_ca().display(),
                certs.client_cert().display(),
                certs.client_key().display()
            ),
        ),
        ("plain", String::new()),
    ];
    for (id, tls) in cases {
        let text = refused_at_start(
            &cluster,
            id,
            |port| config(id, port, &quorum, &tls),
            &[],
            &["capabilities.zookeeper.quorum: cannot connect to", &quorum],
        );
        if !tls.is_empty() {
            assert!(
                text.contains("TLS connection to ZooKeeper failed") && text.contains("ca-file"),
                "{id}: the log does not say what to check:\n{text}"
            );
        }
    }
    assert_no_secret_in_logs(cluster.path(), &certs.client_key_lines());
}

#[test]
fn tls_and_sasl_settings_that_cannot_work_are_refused_with_the_key() {
    let cluster = Cluster::new();
    let certs = Certs::make(cluster.path());
    let kt = cluster.path().join("not-a-keytab");
    std::fs::write(&kt, "hello").unwrap();
    let pw = cluster.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(
                ", tls: {{ca-file: '{}'}}",
                cluster.path().join("nope.pem").display()
            ),
            vec![
                "capabilities.zookeeper.tls.ca-file",
                "nope.pem",
                "cannot read",
            ],
        ),
        (
            format!(
                ", tls: {{ca-file: '{}', cert-file: '{}'}}",
                certs.ca().display(),
                certs.client_cert().display()
            ),
            vec!["capabilities.zookeeper.tls.key-file", "needs its key-file"],
        ),
        (
            format!(
                ", tls: {{ca-file: '{}', cert-file: '{}', key-file: '{}'}}",
                certs.ca().display(),
                certs.client_key().display(),
                certs.client_key().display()
            ),
            vec![
                "capabilities.zookeeper.tls.cert-file",
                "holds no PEM certificate",
            ],
        ),
        (
            ", sasl: {mechanism: PLAIN}".into(),
            vec![
                "capabilities.zookeeper.sasl.mechanism",
                "DIGEST-MD5 or GSSAPI",
            ],
        ),
        (
            ", sasl: {mechanism: DIGEST-MD5, username: sidecar}".into(),
            vec![
                "capabilities.zookeeper.sasl.password-file",
                "needs the file",
            ],
        ),
        (
            format!(
                ", sasl: {{mechanism: DIGEST-MD5, username: sidecar, password-file: '{}'}}",
                cluster.path().join("nopw").display()
            ),
            vec![
                "capabilities.zookeeper.sasl.password-file",
                "nopw",
                "cannot read",
            ],
        ),
        (
            format!(
                ", sasl: {{mechanism: GSSAPI, principal: a@HA.TEST, keytab: '{}'}}",
                kt.display()
            ),
            vec!["capabilities.zookeeper.sasl.keytab", "not a keytab"],
        ),
        (
            ", sasl: {mechanism: GSSAPI, principal: a@HA.TEST}".into(),
            vec!["capabilities.zookeeper.sasl.keytab", "remove principal"],
        ),
        (
            format!(
                ", sasl: {{mechanism: GSSAPI, password-file: '{}'}}",
                pw.display()
            ),
            vec![
                "capabilities.zookeeper.sasl.password-file",
                "not used by GSSAPI",
            ],
        ),
    ];
    for (i, (extra, wanted)) in cases.iter().enumerate() {
        let cfg = cluster.write_config(
            &format!("c{i}"),
            &config("v", free_port(), "127.0.0.1:2181", extra),
        );
        let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
        assert_eq!(code, 1, "{extra}: {out}");
        for w in wanted {
            assert!(out.contains(w), "{extra}: no {w:?} in {out}");
        }
        for line in certs.client_key_lines() {
            assert!(!out.contains(&line), "the key shows in: {out}");
        }
        assert!(!out.contains(PASSWORD), "the password shows in: {out}");
    }
    // creator ACLs without any login.
    let yaml = SidecarYaml::new("v", free_port(), "ha_plugin_zookeeper")
        .settings("root: /flink, cluster-id: secure")
        .capability("zookeeper: {quorum: '127.0.0.1:2181', client: {acl: creator}}")
        .build();
    let cfg = cluster.write_config("creator", &yaml);
    let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("capabilities.zookeeper.client.acl")
            && out.contains("set capabilities.zookeeper.sasl"),
        "{out}"
    );
}

// ---- SASL: DIGEST-MD5 ----

/// `config` lines and JVM options for a server that requires SASL and
/// serves the login module `jaas` (the body of its JAAS `Server` section).
fn sasl_server(jaas: String, jvm: Vec<String>) -> ZooKeeper {
    ZooKeeper::standalone_secured(move |dir| {
        let file = dir.join("jaas.conf");
        std::fs::write(&file, format!("Server {{\n  {jaas};\n}};\n")).unwrap();
        let mut options = vec![format!(
            "-Djava.security.auth.login.config={}",
            file.display()
        )];
        options.extend(jvm);
        Security {
            config:
                "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
                     enforce.auth.enabled=true\n\
                     enforce.auth.schemes=sasl\n"
                    .into(),
            jvm: options,
            secure_port: false,
        }
    })
}

fn digest_server() -> ZooKeeper {
    sasl_server(
        format!(
            "org.apache.zookeeper.server.auth.DigestLoginModule required user_{USER}=\"{PASSWORD}\" user_{OTHER_USER}=\"{OTHER_PASSWORD}\""
        ),
        Vec::new(),
    )
}

fn digest_login(cluster: &Cluster, user: &str, password: &str) -> String {
    let file = cluster.path().join(format!("{user}-{}.pw", password.len()));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        ", sasl: {{mechanism: DIGEST-MD5, username: {user}, password-file: '{}'}}",
        file.display()
    )
}

#[test]
fn with_digest_md5_zookeeper_passes_the_conformance_suite_and_a_standby_takes_over() {
    let cluster = Cluster::new();
    let server = digest_server();
    let quorum = server.quorum();
    let login = digest_login(&cluster, USER, PASSWORD);
    let cfg = cluster.write_config(
        "conformance",
        &config("conformance", free_port(), &quorum, &login),
    );
    assert_plugin_check(&cfg, &[]);
    let sidecars: Vec<Sidecar> = ["d1", "d2", "d3"]
        .iter()
        .map(|id| cluster.start_with(id, |port| config(id, port, &quorum, &login)))
        .collect();
    let leader = agreed_leader(&sidecars);
    let term = sidecars[leader].term().to_string();
    let r = sidecars[leader].put("jobs/j1/counter", b"7", &[("x-ha-term", &term)]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Another user of the same servers is authenticated, but the creator
    // ACLs keep it out of the sidecars' nodes: it cannot join the election
    // nor read their state.
    let other = digest_login(&cluster, OTHER_USER, OTHER_PASSWORD);
    let intruder = cluster.start_with("intruder", |port| config("intruder", port, &quorum, &other));
    // It backs off, and its /healthz says why (so that the platform
    // restarts it and its start check names the refusal).
    let health = wait_for(
        "the intruder to report the refusal",
        Duration::from_secs(20),
        || {
            let r = intruder.get("/healthz").ok()?;
            (r.status == 503).then(|| r.json()["message"].as_str().unwrap_or_default().to_string())
        },
    );
    assert!(
        health.contains("ACL does not admit") && health.contains("DIGEST-MD5 user \"intruder\""),
        "{health}"
    );
    assert!(!intruder.leads());
    let text = intruder.log_text();
    assert!(
        text.contains("the backend refuses what campaigning needs"),
        "{text}"
    );
    drop(intruder);
    takeover(sidecars, "with DIGEST-MD5");
    assert_no_secret_in_logs(
        cluster.path(),
        &[PASSWORD.to_string(), OTHER_PASSWORD.to_string()],
    );
}

#[test]
fn with_digest_md5_no_login_or_a_wrong_password_stops_the_start_with_what_to_check() {
    let cluster = Cluster::new();
    let server = digest_server();
    let quorum = server.quorum();
    let wrong = "not-the-password-31337";
    let login = digest_login(&cluster, USER, wrong);
    refused_at_start(
        &cluster,
        "wrong",
        |port| config("wrong", port, &quorum, &login),
        &[],
        &[
            "refused the sidecar's login",
            "DIGEST-MD5 user \"sidecar\"",
            "password-file",
        ],
    );
    let open = |id: &str, port: u16| {
        SidecarYaml::new(id, port, "ha_plugin_zookeeper")
            .settings("root: /flink, cluster-id: secure")
            .capability(&zookeeper_grant(&quorum, SESSION))
            .build()
    };
    refused_at_start(
        &cluster,
        "nologin",
        |port| open("nologin", port),
        &[],
        &[
            "refused the sidecar's login",
            "set capabilities.zookeeper.sasl",
        ],
    );
    assert_no_secret_in_logs(cluster.path(), &[PASSWORD.to_string(), wrong.to_string()]);
}

// ---- SASL: Kerberos ----

struct Realm {
    kdc: Kdc,
    server: ZooKeeper,
    /// The sidecar's principal and keytab.
    principal: String,
    keytab: PathBuf,
}

fn kerberos(cluster: &Cluster) -> Realm {
    let kdc = Kdc::start();
    let server_keytab = cluster.path().join("zookeeper.keytab");
    let server_principal = kdc.add_principal("zookeeper/localhost", &server_keytab);
    let keytab = cluster.path().join("sidecar.keytab");
    let principal = kdc.add_principal("ha-sidecar/jm", &keytab);
    let server = sasl_server(
        format!(
            "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true keyTab=\"{}\" storeKey=true useTicketCache=false principal=\"{server_principal}\"",
            server_keytab.display()
        ),
        vec![format!(
            "-Djava.security.krb5.conf={}",
            kdc.krb5_conf().display()
        )],
    );
    Realm {
        kdc,
        server,
        principal,
        keytab,
    }
}

impl Realm {
    /// The quorum as clients name it: `localhost`, so that the servers'
    /// principal is `zookeeper/localhost`.
    fn quorum(&self) -> String {
        format!("localhost:{}", self.server.client_port())
    }

    fn keytab_login(&self, keytab: &Path) -> String {
        format!(
            ", sasl: {{mechanism: GSSAPI, principal: '{}', keytab: '{}', krb5-conf: '{}'}}",
            self.principal,
            keytab.display(),
            self.kdc.krb5_conf().display()
        )
    }
}

#[test]
fn with_kerberos_zookeeper_passes_the_conformance_suite_and_a_standby_takes_over() {
    let cluster = Cluster::new();
    let realm = kerberos(&cluster);
    let quorum = realm.quorum();
    let login = realm.keytab_login(&realm.keytab);
    let cfg = cluster.write_config(
        "conformance",
        &config("conformance", free_port(), &quorum, &login),
    );
    assert_plugin_check(&cfg, &[]);
    // k1 and k2 log in from the keytab; k3 from a ticket cache that kinit
    // filled, configured through Flink's keys (a Flink config whose login
    // context Client is among security.kerberos.login.contexts, and the
    // ticket cache, Flink's default).
    let ccache = cluster.path().join("k3.ccache");
    realm
        .kdc
        .kinit(&realm.principal, &realm.keytab, &ccache, "1h");
    let flink = cluster.path().join("flink-conf.yaml");
    std::fs::write(
        &flink,
        format!(
            "high-availability.type: zookeeper\n\
             high-availability.cluster-id: secure\n\
             high-availability.storageDir: file://{}\n\
             high-availability.zookeeper.quorum: {quorum}\n\
             high-availability.zookeeper.path.root: /flink\n\
             security.kerberos.login.contexts: Client\n\
             zookeeper.sasl.service-name: zookeeper\n\
             high-availability.zookeeper.client.acl: creator\n\
             high-availability.zookeeper.client.session-timeout: {}\n\
             high-availability.zookeeper.client.connection-timeout: 2000\n\
             high-availability.zookeeper.client.retry-wait: 200\n",
            cluster.path().join("ha").display(),
            SESSION.as_millis()
        ),
    )
    .unwrap();
    let cache_env = format!("FILE:{}", ccache.display());
    let krb5 = realm.kdc.krb5_conf().display().to_string();
    let mut sidecars: Vec<Sidecar> = ["k1", "k2"]
        .iter()
        .map(|id| cluster.start_with(id, |port| config(id, port, &quorum, &login)))
        .collect();
    let port = free_port();
    let yaml = format!(
        "flink-config: '{}'\nmember: {{id: k3, address: 'http://k3.example:8081'}}\nhttp: {{listen: '127.0.0.1:{port}'}}\nplugin:\n  path: '{}'\n  cache-dir: '{}'\n{TIMING}",
        flink.display(),
        plugin("ha_plugin_zookeeper").display(),
        shared_cache_dir().display()
    );
    let cfg = cluster.write_config("k3", &yaml);
    sidecars.push(Sidecar::start_env(
        "k3",
        port,
        &cfg,
        &cluster.path().join("k3.log"),
        &[("KRB5CCNAME", &cache_env), ("KRB5_CONFIG", &krb5)],
    ));
    takeover(sidecars, "with Kerberos");
}

#[test]
fn with_kerberos_a_stale_keytab_an_empty_or_expired_ticket_cache_or_another_principal_stops_the_start()
 {
    let cluster = Cluster::new();
    let realm = kerberos(&cluster);
    let quorum = realm.quorum();
    // A keytab exported before the principal's key changed.
    let stale = cluster.path().join("stale.keytab");
    std::fs::copy(&realm.keytab, &stale).unwrap();
    let fresh = cluster.path().join("fresh.keytab");
    realm.kdc.export_key("ha-sidecar/jm", &fresh);
    let login = realm.keytab_login(&stale);
    refused_at_start(
        &cluster,
        "stale",
        |port| config("stale", port, &quorum, &login),
        &[],
        &["refused the sidecar's login", "Kerberos principal", "kvno"],
    );
    // The ticket cache, empty.
    let krb5 = realm.kdc.krb5_conf();
    let cache = format!("FILE:{}", cluster.path().join("empty.ccache").display());
    let ticket_cache = format!(
        ", sasl: {{mechanism: GSSAPI, krb5-conf: '{}'}}",
        krb5.display()
    );
    refused_at_start(
        &cluster,
        "nocache",
        |port| config("nocache", port, &quorum, &ticket_cache),
        &[("KRB5CCNAME", &cache)],
        &["refused the sidecar's login", "ticket cache", "kinit"],
    );
    // A ticket that has expired.
    let expired = cluster.path().join("expired.ccache");
    realm.kdc.kinit(&realm.principal, &fresh, &expired, "2s");
    std::thread::sleep(Duration::from_secs(3));
    let cache = format!("FILE:{}", expired.display());
    let text = refused_at_start(
        &cluster,
        "expired",
        |port| config("expired", port, &quorum, &ticket_cache),
        &[("KRB5CCNAME", &cache)],
        &["refused the sidecar's login", "ticket cache", "kinit"],
    );
    assert!(text.to_ascii_lowercase().contains("expired"), "{text}");
    // A keytab for a principal the config does not name: refused at load.
    let login = format!(
        ", sasl: {{mechanism: GSSAPI, principal: 'someone-else@HA.TEST', keytab: '{}'}}",
        fresh.display()
    );
    refused_at_start(
        &cluster,
        "otherprincipal",
        |port| config("otherprincipal", port, &quorum, &login),
        &[],
        &[
            "capabilities.zookeeper.sasl.keytab",
            "holds no key for principal \"someone-else@HA.TEST\"",
            "ha-sidecar/jm@HA.TEST",
        ],
    );
}
