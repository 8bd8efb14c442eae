//! The etcd backend (`plugins/etcd`, built only on the SDK's compare-and-set
//! election and outgoing HTTP) against a real etcd 3.4 (Debian package),
//! started by the harness on free loopback ports.

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use etcd::Etcd;
use support::*;

/// The lease in `TIMING`: a silent leader is replaced after this much
/// observed silence.
const LEASE: Duration = Duration::from_secs(2);

/// A sidecar config on the etcd plugin: `endpoints` is what the plugin is
/// told to use, `granted` what the host lets it reach.
fn etcd_config(
    cluster: &Cluster,
    id: &str,
    port: u16,
    endpoints: &str,
    granted: Option<&str>,
) -> PathBuf {
    let mut yaml = SidecarYaml::new(id, port, "ha_plugin_etcd")
        .settings(&format!("endpoints: '{endpoints}', cluster-id: test"));
    if let Some(g) = granted {
        yaml = yaml.capability(&format!("outgoing-http: {{endpoints: ['{g}']}}"));
    }
    cluster.write_config(id, &yaml.build())
}

fn start(cluster: &Cluster, id: &str, etcd: &Etcd) -> Sidecar {
    let port = free_port();
    let cfg = etcd_config(cluster, id, port, &etcd.endpoint(), Some(&etcd.endpoint()));
    Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
}

fn three(cluster: &Cluster, etcd: &Etcd) -> Vec<Sidecar> {
    ["e1", "e2", "e3"]
        .iter()
        .map(|id| start(cluster, id, etcd))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_passes_the_conformance_suite() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    let cfg = etcd_config(
        &cluster,
        "conformance",
        free_port(),
        &server.endpoint(),
        Some(&server.endpoint()),
    );
    assert_conformance(&cfg).await;
}

#[test]
fn one_leader_among_three_and_everyone_agrees() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    agreed_leader(&sidecars);
    // The leader renews every retry period, so its renewal record appears.
    // Beside them, one member record per candidate.
    let keys = wait_for("the renewal record", Duration::from_secs(5), || {
        let keys = server.keys("/ha-sidecar/test/election/");
        (keys.len() == 5).then_some(keys)
    });
    assert_eq!(
        keys,
        [
            "/ha-sidecar/test/election/leader",
            "/ha-sidecar/test/election/members/e1",
            "/ha-sidecar/test/election/members/e2",
            "/ha-sidecar/test/election/members/e3",
            "/ha-sidecar/test/election/renewal"
        ],
        "the election records are not where the plugin documents them"
    );
}

#[test]
fn kill_9_fails_over_after_the_lease_and_sigterm_at_once() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    // SIGTERM: the leader resigns and a standby watching the record wakes at
    // once; kill -9: the standbys time the silence by their own clocks.
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(three(&cluster, &server), LEASE + Duration::from_secs(10));
    println!("etcd takeover: SIGTERM {graceful:?}, kill -9 {crash:?} (lease {LEASE:?})");
    assert!(
        crash >= LEASE,
        "took over {crash:?} after a kill -9, before a full lease of silence"
    );
}

#[test]
fn a_fenced_write_from_a_paused_and_deposed_leader_is_rejected() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    assert_paused_leader_is_deposed(&three(&cluster, &server), LEASE + Duration::from_secs(10));
}

#[test]
fn outgoing_http_reaches_only_granted_endpoints() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    // No grant at all: the plugin imports wasi:http, so it is refused at load.
    let port = free_port();
    let cfg = etcd_config(&cluster, "nogrant", port, &server.endpoint(), None);
    let (code, out) = run_cli(&["run", &cfg.to_string_lossy()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("wasi:http/") && out.contains("capabilities.outgoing-http"),
        "the refusal should name the interface and the missing grant: {out}"
    );
    // A grant for etcd, but the plugin told to use another server: every
    // request to it is refused before a connection is made.
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_url = format!("http://{}", decoy.local_addr().unwrap());
    let port = free_port();
    let cfg = etcd_config(
        &cluster,
        "elsewhere",
        port,
        &decoy_url,
        Some(&server.endpoint()),
    );
    let s = Sidecar::start(
        "elsewhere",
        port,
        &cfg,
        &cluster.path().join("elsewhere.log"),
    );
    wait_for("the refusal to be logged", Duration::from_secs(10), || {
        s.log_text()
            .contains("refused an outgoing request")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!s.leads(), "elected without reaching any store");
    assert!(
        matches!(decoy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the ungranted server received a connection"
    );
    let log = s.log_text();
    assert!(log.contains(&decoy_url.replace("http://", "")), "{log}");
    assert!(
        server.keys("/ha-sidecar/").is_empty(),
        "something reached etcd"
    );
}

#[test]
fn members_and_a_handover_to_a_chosen_standby() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    support::roster::assert_members_and_targeted_handover(&sidecars, LEASE);
}

#[test]
fn a_handover_with_a_standby_stopped_at_each_step_never_makes_two_leaders() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    support::roster::assert_handover_faults_keep_one_leader(
        &sidecars,
        Duration::from_millis(1500),
        LEASE,
    );
}

/// The state-instance pool (8 by default, as no filesystem is granted here)
/// under 16 concurrent fenced writers, through every sidecar, while the
/// leader resigns six times.
#[test]
fn parallel_fenced_writers_during_handovers_never_pass_a_stale_term() {
    let server = Etcd::start();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server);
    agreed_leader(&sidecars);
    let (acked, refused) = support::parallel::assert_parallel_fenced_writers_keep_the_fence(
        &sidecars,
        16,
        6,
        Duration::from_millis(1500),
        LEASE,
    );
    println!("parallel fenced writers on etcd: {acked} acknowledged, {refused} refused");
}
