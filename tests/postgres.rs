//! The PostgreSQL backend (`plugins/postgres`: the SDK's compare-and-set
//! election on one table, over the host's allow-listed TCP, with the
//! password from the host's secrets) against a real PostgreSQL 15 (Debian
//! package), started by the harness on a free loopback port; and the `tcp`
//! and `secrets` capabilities themselves, through the binary.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use postgres::{PASSWORD, Postgres, USER};
use support::*;

/// The lease in `TIMING`: a silent leader is replaced after this much
/// observed silence.
const LEASE: Duration = Duration::from_secs(2);
/// `timing.renew-deadline` in `TIMING`.
const RENEW_DEADLINE: Duration = Duration::from_millis(1500);

/// How a config grants the plugin its connection and its password.
struct Grant {
    /// `capabilities.tcp.endpoints` (none: no tcp grant).
    tcp: Option<String>,
    /// The YAML of `capabilities.secrets` (none: no secrets grant).
    secrets: Option<String>,
}

impl Grant {
    /// The server's endpoint, and the password in a file of `cluster`.
    fn full(cluster: &Cluster, pg: &Postgres) -> Grant {
        Grant::tcp_and(pg, &password_file(cluster))
    }

    /// The server's endpoint, and `secrets` as the secrets grant.
    fn tcp_and(pg: &Postgres, secrets: &str) -> Grant {
        Grant {
            tcp: Some(pg.endpoint()),
            secrets: Some(secrets.into()),
        }
    }
}

/// `capabilities.secrets` with `pg-password` in a file only the owner reads.
fn password_file(cluster: &Cluster) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = cluster.path().join("pg-password");
    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("secrets: {{pg-password: {{file: '{}'}}}}", path.display())
}

/// A sidecar config on the PostgreSQL plugin, told to connect to `port`.
fn pg_config(cluster: &Cluster, id: &str, http: u16, port: u16, grant: &Grant) -> PathBuf {
    pg_config_with(cluster, id, http, port, grant, "")
}

/// The same with more plugin settings (`, key: value` pairs).
fn pg_config_with(
    cluster: &Cluster,
    id: &str,
    http: u16,
    port: u16,
    grant: &Grant,
    settings: &str,
) -> PathBuf {
    let mut yaml = SidecarYaml::new(id, http, "ha_plugin_postgres").settings(&format!(
        "host: 127.0.0.1, port: '{port}', user: {USER}, database: postgres, cluster-id: test{settings}"
    ));
    if let Some(t) = &grant.tcp {
        yaml = yaml.capability(&format!("tcp: {{endpoints: ['{t}']}}"));
    }
    if let Some(s) = &grant.secrets {
        yaml = yaml.capability(s);
    }
    cluster.write_config(id, &yaml.build())
}

fn start(cluster: &Cluster, id: &str, pg: &Postgres) -> Sidecar {
    let port = free_port();
    let cfg = pg_config(cluster, id, port, pg.port(), &Grant::full(cluster, pg));
    Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
}

fn three(cluster: &Cluster, pg: &Postgres) -> Vec<Sidecar> {
    ["p1", "p2", "p3"]
        .iter()
        .map(|id| start(cluster, id, pg))
        .collect()
}

/// `ha-sidecar plugin check` of `wasm` with `cfg` passes every check.
fn assert_plugin_check_passes(wasm: &str, cfg: &std::path::Path) {
    let wasm = plugin(wasm).display().to_string();
    let (code, out) = run_cli(&["plugin", "check", &wasm, "--config", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_passes_the_conformance_suite() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    let cfg = pg_config(
        &cluster,
        "conformance",
        free_port(),
        server.port(),
        &Grant::full(&cluster, &server),
    );
    assert_conformance(&cfg).await;
    // And as a plugin author runs it.
    assert_plugin_check_passes("ha_plugin_postgres", &cfg);
    // The same backend built for contract 0.1 (its secret through the old
    // `ha:sidecar/secrets` interface), checked the same way.
    assert_plugin_check_passes(
        "fixture_contract_0_1_postgres",
        &with_contract_0_1_build(&cfg),
    );
}

#[test]
fn one_leader_among_three_and_the_records_are_in_the_table() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    agreed_leader(&sidecars);
    let keys = wait_for("the renewal record", Duration::from_secs(5), || {
        let keys = server.keys("ha_sidecar", "test");
        (keys.len() == 5).then_some(keys)
    });
    // Beside them, one member record per candidate.
    assert_eq!(
        keys,
        [
            "election/leader",
            "election/members/p1",
            "election/members/p2",
            "election/members/p3",
            "election/renewal"
        ],
        "the election records are not where the plugin documents them"
    );
    for s in &sidecars {
        assert!(
            !s.log_text().contains(PASSWORD),
            "{}: the password is in the log",
            s.id
        );
    }
}

#[test]
fn kill_9_fails_over_after_the_lease_and_sigterm_at_once() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(three(&cluster, &server), LEASE + Duration::from_secs(10));
    println!("postgres takeover: SIGTERM {graceful:?}, kill -9 {crash:?} (lease {LEASE:?})");
    assert!(
        crash >= LEASE,
        "took over {crash:?} after a kill -9, before a full lease of silence"
    );
}

#[test]
fn a_fenced_write_from_a_paused_and_deposed_leader_is_rejected() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    assert_paused_leader_is_deposed(&three(&cluster, &server), LEASE + Duration::from_secs(10));
}

#[test]
fn a_frozen_server_ends_leadership_by_the_renew_deadline_and_it_comes_back() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    let a = agreed_leader(&sidecars);
    let before = sidecars[a].term();
    // Every reply stops, the connections stay open: the plugin's reads
    // must give up (or the host's call bound must end them) in time.
    let paused = std::time::Instant::now();
    server.pause();
    wait_for(
        "the leader to stop claiming leadership",
        RENEW_DEADLINE + Duration::from_secs(1),
        || (!sidecars[a].leads()).then_some(()),
    );
    let stepped_down = paused.elapsed();
    assert!(
        sidecars.iter().all(|s| !s.leads()),
        "someone leads while the store answers nothing"
    );
    std::thread::sleep(Duration::from_secs(2));
    server.resume();
    let b = sole_leader(&sidecars, Duration::from_secs(30));
    let after = sidecars[b].term();
    println!(
        "postgres frozen: the leader stepped down after {stepped_down:?}; term {before} then {after}"
    );
    assert!(after >= before, "token {after} after {before}");
}

#[test]
fn tcp_reaches_only_granted_endpoints() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    // No tcp grant: the plugin imports wasi:sockets, so it is refused at load.
    let no_tcp = Grant {
        tcp: None,
        secrets: Some(password_file(&cluster)),
    };
    let cfg = pg_config(&cluster, "notcp", free_port(), server.port(), &no_tcp);
    let (code, out) = run_cli(&["run", &cfg.to_string_lossy()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("wasi:sockets/") && out.contains("capabilities.tcp"),
        "the refusal should name the interface and the missing grant: {out}"
    );
    // A grant for the server, but the plugin told to connect elsewhere:
    // every connect is refused before it leaves, and the log says where to
    // add the address.
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_port = decoy.local_addr().unwrap().port();
    let port = free_port();
    let cfg = pg_config(
        &cluster,
        "elsewhere",
        port,
        decoy_port,
        &Grant::full(&cluster, &server),
    );
    let s = Sidecar::start(
        "elsewhere",
        port,
        &cfg,
        &cluster.path().join("elsewhere.log"),
    );
    wait_for("the refusal to be logged", Duration::from_secs(10), || {
        s.log_text().contains("refused a socket use").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!s.leads(), "elected without reaching any store");
    assert!(
        matches!(decoy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the ungranted server received a connection"
    );
    let log = s.log_text();
    assert!(
        log.contains(&format!("127.0.0.1:{decoy_port}"))
            && log.contains("capabilities.tcp.endpoints"),
        "{log}"
    );
    assert!(
        log.contains("not listed in capabilities.tcp.endpoints"),
        "the plugin's own error should say why: {log}"
    );
}

#[test]
fn tcp_and_secrets_config_errors_name_the_key() {
    let cluster = Cluster::new();
    let bad = |tcp: &str, secrets: &str| {
        let yaml = SidecarYaml::new("bad", free_port(), "ha_plugin_postgres")
            .settings(&format!("user: {USER}"))
            .capability(tcp)
            .capability(secrets)
            .build();
        let cfg = cluster.write_config("bad", &yaml);
        let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
        assert_ne!(code, 0, "{out}");
        out
    };
    let ok_secrets = password_file(&cluster);
    for (tcp, needles) in [
        (
            "tcp: {endpoints: []}",
            vec!["capabilities.tcp.endpoints", "lists no endpoint"],
        ),
        (
            "tcp: {endpoints: ['127.0.0.1:5432', 'postgres://db:5432']}",
            vec![
                "capabilities.tcp.endpoints[1]",
                "postgres://db:5432",
                "without a scheme",
            ],
        ),
        (
            "tcp: {endpoints: ['db']}",
            vec!["capabilities.tcp.endpoints[0]", "has no port"],
        ),
        (
            "tcp: {endpoint: ['db:1']}",
            vec!["capabilities.tcp", "endpoint"],
        ),
        (
            "tcp: {endpoints: ['no-such-host.invalid:5432']}",
            vec![
                "capabilities.tcp.endpoints[0]",
                "cannot resolve no-such-host.invalid",
            ],
        ),
    ] {
        let out = bad(tcp, &ok_secrets);
        for n in needles {
            assert!(out.contains(n), "{tcp}: missing {n:?} in\n{out}");
        }
    }
    let tcp = "tcp: {endpoints: ['127.0.0.1:5432']}";
    let missing = cluster.path().join("missing");
    for (secrets, needles) in [
        (
            format!(
                "secrets: {{pg-password: {{file: '{}'}}}}",
                missing.display()
            ),
            vec!["capabilities.secrets.pg-password.file", "cannot read"],
        ),
        (
            "secrets: {pg-password: {env: HA_SIDECAR_TEST_UNSET_VARIABLE}}".to_string(),
            vec![
                "capabilities.secrets.pg-password.env",
                "HA_SIDECAR_TEST_UNSET_VARIABLE",
                "is not set",
            ],
        ),
        (
            "secrets: {pg-password: {env: A, file: b}}".to_string(),
            vec!["capabilities.secrets.pg-password", "exactly one source"],
        ),
        (
            "secrets: {'pg password': {env: A}}".to_string(),
            vec!["capabilities.secrets.pg password", "letters, digits"],
        ),
    ] {
        let out = bad(tcp, &secrets);
        for n in needles {
            assert!(out.contains(n), "{secrets}: missing {n:?} in\n{out}");
        }
    }
}

#[test]
fn the_password_comes_only_from_a_configured_secret() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    // From the environment, by the name the config gives.
    let port = free_port();
    let grant = Grant::tcp_and(
        &server,
        "secrets: {pg-password: {env: HA_TEST_PG_PASSWORD}}",
    );
    let cfg = pg_config(&cluster, "env", port, server.port(), &grant);
    let s = Sidecar::start_env(
        "env",
        port,
        &cfg,
        &cluster.path().join("env.log"),
        &[
            ("HA_TEST_PG_PASSWORD", PASSWORD),
            ("HA_SIDECAR_LOG", "debug"),
        ],
    );
    sole_leader(std::slice::from_ref(&s), Duration::from_secs(20));
    assert!(
        !s.log_text().contains(PASSWORD),
        "the password is in the log"
    );
    drop(s);
    // A secret under another name: the plugin asks for pg-password and
    // gets none; it says which secret to add, and the host which it has.
    let grant = Grant::tcp_and(&server, "secrets: {other: {env: HA_TEST_PG_PASSWORD}}");
    let port = free_port();
    let cfg = pg_config(&cluster, "other", port, server.port(), &grant);
    let s = Sidecar::spawn(
        "other",
        port,
        &cfg,
        &cluster.path().join("other.log"),
        &[("HA_TEST_PG_PASSWORD", PASSWORD)],
    );
    wait_for(
        "the missing secret to be reported",
        Duration::from_secs(20),
        || {
            let log = s.log_text();
            (log.contains("capabilities.secrets.pg-password") && log.contains("\"other\""))
                .then_some(())
        },
    );
    drop(s);
    // A wrong password: PostgreSQL's refusal is reported, nothing is written.
    let wrong = cluster.path().join("wrong");
    std::fs::write(&wrong, "not the password").unwrap();
    let grant = Grant::tcp_and(
        &server,
        &format!("secrets: {{pg-password: {{file: '{}'}}}}", wrong.display()),
    );
    let port = free_port();
    let cfg = pg_config(&cluster, "wrong", port, server.port(), &grant);
    let s = Sidecar::start("wrong", port, &cfg, &cluster.path().join("wrong.log"));
    wait_for(
        "the refused login to be logged",
        Duration::from_secs(20),
        || {
            s.log_text()
                .contains("password authentication failed")
                .then_some(())
        },
    );
    assert!(!s.leads(), "led without logging in");
    assert!(
        !s.log_text().contains("not the password"),
        "the password is in the log"
    );
}

/// `sslmode: verify-full` against a server that accepts TCP only over TLS:
/// the sidecar leads and writes over TLS (the server's own view says so),
/// a plain connection is refused by the server, and a CA that did not sign
/// the server's certificate fails the handshake with the setting to fix.
#[test]
fn tls_with_verify_full_and_refusals_without_it() {
    let server = Postgres::start_tls();
    let cluster = Cluster::new();
    let tls_grant = |ca: &std::path::Path| {
        let secrets = password_file(&cluster).replace(
            "secrets: {",
            &format!("secrets: {{pg-ca: {{file: '{}'}}, ", ca.display()),
        );
        Grant::tcp_and(&server, &secrets)
    };
    let tls = ", sslmode: verify-full, sslrootcert-secret: pg-ca";
    let port = free_port();
    let cfg = pg_config_with(
        &cluster,
        "t1",
        port,
        server.port(),
        &tls_grant(&server.ca_pem()),
        tls,
    );
    let s = Sidecar::start("t1", port, &cfg, &cluster.path().join("t1.log"));
    sole_leader(std::slice::from_ref(&s), Duration::from_secs(20));
    let term = s.term().to_string();
    let w = s.put("jobs/j1/graph", b"over tls", &[("x-ha-term", &term)]);
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(
        s.get("/state/jobs/j1/graph").unwrap().body,
        b"over tls".to_vec()
    );
    let over_tls = server
        .psql("SELECT count(*) FILTER (WHERE ssl), count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'ha-sidecar'")
        .unwrap();
    let (ssl, all) = over_tls.split_once('|').unwrap();
    assert!(
        all != "0" && ssl == all,
        "connections over TLS / all: {over_tls}"
    );
    drop(s);

    // Plain TCP: the server's pg_hba.conf has no entry for it.
    let port = free_port();
    let cfg = pg_config(
        &cluster,
        "plain",
        port,
        server.port(),
        &Grant::full(&cluster, &server),
    );
    let s = Sidecar::start("plain", port, &cfg, &cluster.path().join("plain.log"));
    wait_for(
        "the refused plain connection to be logged",
        Duration::from_secs(20),
        || {
            let log = s.log_text();
            (log.contains("no pg_hba.conf entry") && log.contains("no encryption")).then_some(())
        },
    );
    assert!(!s.leads(), "led over a refused connection");
    drop(s);

    // A CA that did not sign the server's certificate.
    let other = cluster.path().join("other-ca.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-keyout",
            &cluster.path().join("other-ca.key").to_string_lossy(),
        ])
        .args([
            "-out",
            &other.to_string_lossy(),
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let cfg = pg_config_with(
        &cluster,
        "wrong-ca",
        port,
        server.port(),
        &tls_grant(&other),
        tls,
    );
    let s = Sidecar::start("wrong-ca", port, &cfg, &cluster.path().join("wrong-ca.log"));
    wait_for(
        "the failed handshake to be logged",
        Duration::from_secs(20),
        || {
            let log = s.log_text();
            (log.contains("TLS handshake") && log.contains("sslrootcert-secret")).then_some(())
        },
    );
    assert!(!s.leads(), "led over an unverified connection");
}

#[test]
fn members_and_a_handover_to_a_chosen_standby() {
    let server = Postgres::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    support::roster::assert_members_and_targeted_handover(&sidecars, LEASE);
}
