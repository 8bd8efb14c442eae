//! The etcd backend against secured etcd servers (issue 16, §3), started by
//! the harness on loopback: one serving clients over TLS only and requiring
//! a client certificate (`--client-cert-auth`; certificates made with
//! openssl), one with authentication enabled (a root user, and the
//! sidecar's user with a role on its key prefix alone; tokens that expire
//! after two seconds). Each passes the conformance suite and a takeover;
//! a missing certificate, a CA that did not sign the server's, a wrong
//! password and no user at all each get an error that says what to set. No
//! log of any sidecar holds the password or the client key.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/etcd.rs"]
mod etcd;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::Certs;
use etcd::{AuthUser, Etcd, ServerTls};
use support::*;

const LEASE: Duration = Duration::from_secs(2);
const USER: &str = "sidecar";
const PASSWORD: &str = "etcd-pw-8c1f2e9a7b";
const PREFIX: &str = "/ha-sidecar/";

fn tls_server(dir: &Path) -> (Etcd, Certs) {
    let certs = Certs::make(dir);
    let server = Etcd::start_tls(ServerTls {
        cert: certs.server_cert(),
        key: certs.server_key(),
        client_ca: certs.ca(),
    });
    (server, certs)
}

/// A sidecar config on the etcd plugin, with `tls` (the YAML flow map of
/// the endpoint's TLS settings, or none) and more plugin `settings` and
/// capability grants.
fn config(
    id: &str,
    port: u16,
    etcd: &Etcd,
    tls: Option<&str>,
    settings: &str,
    more: &[String],
) -> String {
    let endpoint = etcd.endpoint();
    let tls = tls.map_or(String::new(), |t| format!(", tls: {{'{endpoint}': {t}}}"));
    let mut y = SidecarYaml::new(id, port, "ha_plugin_etcd")
        .settings(&format!(
            "endpoints: '{endpoint}', cluster-id: test{settings}"
        ))
        .capability(&format!(
            "outgoing-http: {{endpoints: ['{endpoint}']{tls}}}"
        ));
    for m in more {
        y = y.capability(m);
    }
    y.build()
}

fn client_tls(c: &Certs) -> String {
    format!(
        "{{ca-file: '{}', cert-file: '{}', key-file: '{}'}}",
        c.ca().display(),
        c.client_cert().display(),
        c.client_key().display()
    )
}

fn password_file(cluster: &Cluster, password: &str) -> PathBuf {
    let p = cluster.path().join("etcd-password");
    std::fs::write(&p, format!("{password}\n")).unwrap();
    p
}

fn auth_grant(file: &Path) -> String {
    format!("secrets: {{etcd-password: {{file: '{}'}}}}", file.display())
}

const AUTH: &str = ", user: sidecar, password-secret: etcd-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_etcd_passes_the_conformance_suite() {
    let cluster = Cluster::new();
    let (server, certs) = tls_server(cluster.path());
    let cfg = cluster.write_config(
        "conformance",
        &config(
            "conformance",
            free_port(),
            &server,
            Some(&client_tls(&certs)),
            "",
            &[],
        ),
    );
    assert_conformance(&cfg).await;
}

#[test]
fn over_tls_a_standby_takes_over_after_sigterm_and_kill_9() {
    let cluster = Cluster::new();
    let (server, certs) = tls_server(cluster.path());
    let tls = client_tls(&certs);
    let sidecars: Vec<Sidecar> = ["t1", "t2", "t3"]
        .iter()
        .map(|id| cluster.start_with(id, |port| config(id, port, &server, Some(&tls), "", &[])))
        .collect();
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(sidecars, LEASE + Duration::from_secs(10));
    println!("etcd over TLS: SIGTERM {graceful:?}, kill -9 {crash:?} (lease {LEASE:?})");
    assert!(crash >= LEASE, "took over {crash:?} after a kill -9");
    assert_no_secret_in_logs(cluster.path(), &certs.client_key_lines());
}

#[test]
fn over_tls_a_missing_client_certificate_or_a_wrong_ca_is_named_in_the_log() {
    let cluster = Cluster::new();
    let (server, certs) = tls_server(cluster.path());
    let cases = [
        (
            "nocert",
            format!("{{ca-file: '{}'}}", certs.ca().display()),
            "set cert-file and key-file",
        ),
        (
            "wrongca",
            format!(
                "{{ca-file: '{}', cert-file: '{}', key-file: '{}'}}",
                certs.other_ca().display(),
                certs.client_cert().display(),
                certs.client_key().display()
            ),
            "TLS handshake failed",
        ),
    ];
    for (id, tls, wanted) in cases {
        let s = cluster.start_with(id, |port| config(id, port, &server, Some(&tls), "", &[]));
        let log = wait_for(
            &format!("{id}: {wanted:?} in the log"),
            Duration::from_secs(20),
            || {
                let text = s.log_text();
                text.contains(wanted).then_some(text)
            },
        );
        assert!(!s.leads(), "{id} leads without reaching etcd:\n{log}");
        assert!(
            log.contains(&server.endpoint()[8..]),
            "{id}: the log names no endpoint:\n{log}"
        );
    }
    // A plain-HTTP grant of a TLS-only server reaches nothing either.
    let plain = format!("http://{}", &server.endpoint()[8..]);
    let s = cluster.start_with("plain", |port| {
        SidecarYaml::new("plain", port, "ha_plugin_etcd")
            .settings(&format!("endpoints: '{plain}', cluster-id: test"))
            .capability(&format!("outgoing-http: {{endpoints: ['{plain}']}}"))
            .build()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!s.leads());
}

#[test]
fn tls_settings_that_cannot_work_are_refused_with_the_key() {
    let cluster = Cluster::new();
    let certs = Certs::make(cluster.path());
    let endpoint = "https://127.0.0.1:2379";
    let cases = [
        (
            format!(
                "{{'{endpoint}': {{ca-file: '{}'}}}}",
                cluster.path().join("nope.pem").display()
            ),
            vec![
                "tls.https://127.0.0.1:2379.ca-file",
                "nope.pem",
                "cannot read",
            ],
        ),
        (
            format!(
                "{{'{endpoint}': {{ca-file: '{}', cert-file: '{}'}}}}",
                certs.ca().display(),
                certs.client_cert().display()
            ),
            vec!["key-file", "needs its key-file"],
        ),
        (
            format!(
                "{{'{endpoint}': {{ca-file: '{}', cert-file: '{}', key-file: '{}'}}}}",
                certs.ca().display(),
                certs.client_cert().display(),
                certs.server_key().display()
            ),
            vec!["key-file", "does not go with cert-file"],
        ),
        (
            format!(
                "{{'{endpoint}': {{ca-file: '{}'}}}}",
                certs.client_key().display()
            ),
            vec!["ca-file", "no PEM certificate"],
        ),
        (
            format!(
                "{{'https://127.0.0.1:2380': {{ca-file: '{}'}}}}",
                certs.ca().display()
            ),
            vec!["is not in capabilities.outgoing-http.endpoints"],
        ),
    ];
    for (i, (tls, wanted)) in cases.iter().enumerate() {
        let yaml = SidecarYaml::new("v", free_port(), "ha_plugin_etcd")
            .settings(&format!("endpoints: '{endpoint}'"))
            .capability(&format!(
                "outgoing-http: {{endpoints: ['{endpoint}'], tls: {tls}}}"
            ))
            .build();
        let cfg = cluster.write_config(&format!("c{i}"), &yaml);
        let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
        assert_eq!(code, 1, "{tls}: {out}");
        for w in wanted {
            assert!(out.contains(w), "{tls}: no {w:?} in {out}");
        }
        for line in certs.client_key_lines() {
            assert!(!out.contains(&line), "the key shows in: {out}");
        }
    }
}

fn auth_server() -> Etcd {
    Etcd::start_auth(
        &AuthUser {
            name: USER,
            password: PASSWORD,
            prefix: PREFIX,
        },
        2,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_etcd_passes_the_conformance_suite() {
    let server = auth_server();
    let cluster = Cluster::new();
    let grant = auth_grant(&password_file(&cluster, PASSWORD));
    let cfg = cluster.write_config(
        "conformance",
        &config("conformance", free_port(), &server, None, AUTH, &[grant]),
    );
    assert_conformance(&cfg).await;
}

#[test]
fn with_authentication_tokens_made_void_are_renewed_and_a_standby_takes_over() {
    let mut server = auth_server();
    let cluster = Cluster::new();
    let grant = auth_grant(&password_file(&cluster, PASSWORD));
    let sidecars: Vec<Sidecar> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| {
            cluster.start_with(id, |port| {
                config(id, port, &server, None, AUTH, std::slice::from_ref(&grant))
            })
        })
        .collect();
    agreed_leader(&sidecars);
    // A restarted member knows none of the tokens it handed out: every
    // sidecar is refused its token and authenticates again.
    server.restart();
    let logs = |ids: &[&str]| -> String {
        ids.iter()
            .map(|id| std::fs::read_to_string(cluster.path().join(format!("{id}.log"))).unwrap())
            .collect()
    };
    wait_for(
        "a sidecar to authenticate again",
        Duration::from_secs(30),
        || {
            logs(&["a1", "a2", "a3"])
                .contains("authenticating again")
                .then_some(())
        },
    );
    let leader = agreed_leader(&sidecars);
    let term = sidecars[leader].term().to_string();
    let r = sidecars[leader].put("jobs/j1/counter", b"7", &[("x-ha-term", &term)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(sidecars, LEASE + Duration::from_secs(10));
    println!("etcd with auth: SIGTERM {graceful:?}, kill -9 {crash:?} (lease {LEASE:?})");
    assert!(crash >= LEASE, "took over {crash:?} after a kill -9");
    assert_no_secret_in_logs(cluster.path(), &[PASSWORD.to_string()]);
}

#[test]
fn with_authentication_a_wrong_password_or_no_user_is_refused_with_what_to_set() {
    let server = auth_server();
    let cluster = Cluster::new();
    // A wrong password stops the start.
    let wrong = "not-the-password-31337";
    let grant = auth_grant(&password_file(&cluster, wrong));
    let port = free_port();
    let cfg = cluster.write_config(
        "wrong",
        &config("wrong", port, &server, None, AUTH, &[grant]),
    );
    let log = cluster.path().join("wrong.log");
    let mut s = Sidecar::spawn("wrong", port, &cfg, &log, &[]);
    assert!(!s.wait_exit(Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("etcd refused user \"sidecar\"")
            && text.contains("capabilities.secrets.etcd-password"),
        "{text}"
    );
    // No user: every request is refused, and the log says what to set.
    let s = cluster.start_with("nouser", |port| {
        config("nouser", port, &server, None, "", &[])
    });
    let text = wait_for(
        "the missing user named in the log",
        Duration::from_secs(20),
        || {
            let t = s.log_text();
            t.contains("set plugin.settings.user").then_some(t)
        },
    );
    assert!(!s.leads(), "{text}");
    // A secret the config does not have: named at start.
    let port = free_port();
    let cfg = cluster.write_config(
        "nosecret",
        &config("nosecret", port, &server, None, AUTH, &[]),
    );
    let log = cluster.path().join("nosecret.log");
    let mut s = Sidecar::spawn("nosecret", port, &cfg, &log, &[]);
    assert!(!s.wait_exit(Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("capabilities.secrets.etcd-password"),
        "{text}"
    );
    assert_no_secret_in_logs(cluster.path(), &[PASSWORD.to_string(), wrong.to_string()]);
}
