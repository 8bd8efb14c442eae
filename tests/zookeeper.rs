//! The ZooKeeper backend against real ZooKeeper 3.8 servers (Debian package),
//! started by the harness on free loopback ports with a 200 ms tick.

mod support;
#[path = "support/zk.rs"]
mod zk;

use std::time::{Duration, Instant};

use support::*;
use zk::ZooKeeper;

/// The session timeout the sidecars ask for (the server allows 0.4 to 4 s).
const SESSION: Duration = Duration::from_secs(2);

fn zk_config(cluster: &Cluster, id: &str, port: u16, quorum: &str) -> std::path::PathBuf {
    zk_config_with(cluster, id, port, quorum, "")
}

fn zk_config_with(
    cluster: &Cluster,
    id: &str,
    port: u16,
    quorum: &str,
    settings: &str,
) -> std::path::PathBuf {
    let yaml = SidecarYaml::new(id, port, "ha_plugin_zookeeper")
        .settings(&format!("root: /flink, cluster-id: test{settings}"))
        .capability(&zookeeper_grant(quorum, SESSION))
        .build();
    cluster.write_config(id, &yaml)
}

fn start(cluster: &Cluster, id: &str, quorum: &str) -> Sidecar {
    let port = free_port();
    let cfg = zk_config(cluster, id, port, quorum);
    Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
}

fn three(cluster: &Cluster, quorum: &str) -> Vec<Sidecar> {
    ["z1", "z2", "z3"]
        .iter()
        .map(|id| start(cluster, id, quorum))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_backend_passes_the_conformance_suite() {
    let server = ZooKeeper::standalone();
    // The sidecar config the other tests use: one session per simulated
    // sidecar, as `plugin check` does it.
    let cluster = Cluster::new();
    assert_conformance(&zk_config(
        &cluster,
        "conformance",
        free_port(),
        &server.quorum(),
    ))
    .await;
}

/// The same backend built for contract 0.1, served through the host's
/// adapter for the old `ha:sidecar/zookeeper` interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zookeeper_backend_built_for_contract_0_1_passes_the_conformance_suite() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let cfg = zk_config(&cluster, "conformance", free_port(), &server.quorum());
    assert_conformance(&with_contract_0_1_build(&cfg)).await;
}

#[test]
fn one_leader_among_three_with_flinks_layout() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server.quorum());
    agreed_leader(&sidecars);
    // The tree Flink's tools expect: latch nodes and connection_info.
    let dump = server.four_letter("dump").unwrap();
    assert!(
        dump.contains("/flink/test/leader/latch/_c_"),
        "no latch nodes in:\n{dump}"
    );
    assert!(
        dump.contains("/flink/test/leader/dispatcher/connection_info"),
        "no connection_info in:\n{dump}"
    );
}

#[test]
fn kill_9_fails_over_after_the_session_timeout_and_sigterm_at_once() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    // SIGTERM: the leader deletes its latch node and closes its session;
    // kill -9: the latch node goes when the server expires the session.
    let Takeovers { graceful, crash } = sigterm_then_kill9(
        three(&cluster, &server.quorum()),
        SESSION + Duration::from_secs(10),
    );
    println!(
        "ZooKeeper takeover: SIGTERM {graceful:?}, kill -9 {crash:?} (session {SESSION:?}, tick {:?})",
        zk::TICK
    );
    assert!(
        graceful < Duration::from_secs(1),
        "graceful takeover took {graceful:?}"
    );
    assert!(
        crash >= SESSION - zk::TICK,
        "took over {crash:?} after a kill -9, before the session could expire"
    );
}

#[test]
fn a_fenced_write_from_a_deposed_leader_is_rejected() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server.quorum());
    let a = sole_leader(&sidecars, Duration::from_secs(20));
    let old = sidecars[a].term().to_string();
    assert_eq!(
        sidecars[a]
            .put("jobs/j1/graph", b"v1", &[("x-ha-term", &old)])
            .status,
        200
    );
    assert_eq!(
        request(
            sidecars[a].port,
            "POST",
            "/leader/resign?holdoff=60s",
            &[],
            b""
        )
        .unwrap()
        .status,
        200
    );
    let b = sole_leader(&sidecars, Duration::from_secs(10));
    assert_deposed_write_rejected(&sidecars, &sidecars[b], &old);
}

#[test]
fn a_leader_cut_off_from_zookeeper_steps_down_before_its_session_can_expire() {
    let mut server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let s = start(&cluster, "z1", &server.quorum());
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let cut = Instant::now();
    server.pause();
    wait_for("the leader to step down", 3 * SESSION, || {
        (!s.leads()).then_some(())
    });
    let stepped_down = cut.elapsed();
    server.resume();
    println!("stepped down {stepped_down:?} after the connection was cut (session {SESSION:?})");
    // The client notices a dead connection two thirds into the session
    // timeout; the server would expire the session at the full timeout.
    assert!(
        stepped_down < SESSION,
        "stepped down only after {stepped_down:?}, when the session could already have expired"
    );
    assert!(
        s.log_text().contains("ZooKeeper connection lost"),
        "{}",
        s.log_text()
    );
    wait_for(
        "leadership again once ZooKeeper is back",
        Duration::from_secs(20),
        || s.leads().then_some(()),
    );
}

#[test]
fn the_election_survives_the_loss_of_one_ensemble_member() {
    let mut ensemble = ZooKeeper::ensemble(3);
    let cluster = Cluster::new();
    let mut sidecars = three(&cluster, &ensemble.quorum());
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let zk_leader = ensemble.leader();
    ensemble.stop(zk_leader);
    // Clients reconnect to the survivors; then a handover must still work.
    std::thread::sleep(Duration::from_secs(1));
    sidecars[leader].signal(libc::SIGTERM);
    let mut old = sidecars.remove(leader);
    let new = sole_leader(&sidecars, Duration::from_secs(20));
    assert!(sidecars[new].term() > 0);
    let _ = old.wait_exit(Duration::from_secs(15));
}

#[test]
fn a_bad_or_unreachable_quorum_is_a_clear_error() {
    let cluster = Cluster::new();
    let port = free_port();
    let bad = zk_config(&cluster, "z1", port, "localhost");
    let (code, out) = run_cli(&["run", &bad.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("capabilities.zookeeper.quorum")
            && out.contains("localhost")
            && out.contains("host:port"),
        "{out}"
    );
    let unreachable = zk_config(&cluster, "z2", port, &format!("127.0.0.1:{}", free_port()));
    let started = Instant::now();
    let (code, out) = run_cli(&["run", &unreachable.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("cannot connect") && out.contains("3 attempts"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "giving up took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_can_be_written_as_flink_writes_it() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let port = free_port();
    let address = "pekko.tcp://flink@127.0.0.1:6123/user/rpc/dispatcher_1";
    let yaml = std::fs::read_to_string(zk_config_with(
        &cluster,
        "z1",
        port,
        &server.quorum(),
        ", connection-info: flink",
    ))
    .unwrap()
    .replace("http://z1.example:8081", address);
    let cfg = cluster.write_config("z1", &yaml);
    let s = Sidecar::start("z1", port, &cfg, &cluster.path().join("z1.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let client = zookeeper_client::Client::connect(&server.quorum())
        .await
        .unwrap();
    let (data, _) = client
        .get_data("/flink/test/leader/dispatcher/connection_info")
        .await
        .unwrap();
    if let Ok(dir) = std::env::var("CONNECTION_INFO_DUMP") {
        std::fs::write(
            std::path::Path::new(&dir).join("connection_info.bin"),
            &data,
        )
        .unwrap();
    }
    // Java serialization: magic, a data block with writeUTF(address), then a java.util.UUID.
    assert_eq!(&data[..5], &[0xac, 0xed, 0x00, 0x05, 0x77]);
    assert_eq!(data[5] as usize, 2 + address.len());
    assert_eq!(&data[8..8 + address.len()], address.as_bytes());
    let rest = &data[8 + address.len()..];
    assert_eq!(&rest[..4], &[0x73, 0x72, 0x00, 0x0e]);
    assert_eq!(&rest[4..18], b"java.util.UUID");
    assert_eq!(
        rest.len(),
        18 + 8 + 3 + 15 + 14 + 2 + 16,
        "UUID class description and its two longs"
    );
    // The UUID (leastSigBits, then mostSigBits) is the leader session id the
    // sidecar reports, which the Flink HA plugin hands to Flink.
    let long = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
    let (least, most) = (
        long(&rest[rest.len() - 16..rest.len() - 8]),
        long(&rest[rest.len() - 8..]),
    );
    let written = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        most >> 32,
        (most >> 16) & 0xffff,
        most & 0xffff,
        least >> 48,
        least & 0xffff_ffff_ffff
    );
    assert_eq!(Some(written.as_str()), s.leader()["session"].as_str());
}

#[test]
fn a_sidecar_pointed_at_a_flink_config_joins_the_election() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    // A Flink 2.x config.yaml (nested), as the JobManager beside the sidecar uses it.
    std::fs::write(
        cluster.path().join("config.yaml"),
        format!(
            "jobmanager:\n  rpc:\n    address: localhost\nhigh-availability:\n  type: zookeeper\n  cluster-id: /from-flink\n  storageDir: file://{}\n  zookeeper:\n    quorum: {}\n    path:\n      root: /flink\n    client:\n      session-timeout: 2 s\n      connection-timeout: 2000\n      retry-wait: 200 ms\n",
            cluster.path().join("ha").display(),
            server.quorum()
        ),
    )
    .unwrap();
    let port = free_port();
    let cfg = cluster.write_config(
        "z1",
        &format!(
            "flink-config: config.yaml\nmember: {{id: z1}}\nhttp: {{listen: '127.0.0.1:{port}'}}\nplugin:\n  path: '{}'\n  cache-dir: '{}'\n{TIMING}",
            plugin("ha_plugin_zookeeper").display(),
            shared_cache_dir().display()
        ),
    );
    let s = Sidecar::start("z1", port, &cfg, &cluster.path().join("z1.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let dump = server.four_letter("dump").unwrap();
    assert!(
        dump.contains("/flink/from-flink/leader/latch/"),
        "the Flink cluster-id and root were not used:\n{dump}"
    );
    assert!(
        cluster.path().join("ha/from-flink").is_dir(),
        "the storage dir is <storageDir>/<cluster-id>, as in Flink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_with_creator_acls_keeps_others_out() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let port = free_port();
    let yaml = std::fs::read_to_string(zk_config(&cluster, "z1", port, &server.quorum()))
        .unwrap()
        .replace(
            "client: {",
            "digest: 'sidecar:s3cret', client: {acl: creator, ",
        );
    let cfg = cluster.write_config("z1", &yaml);
    let s = Sidecar::start("z1", port, &cfg, &cluster.path().join("z1.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let term = s.term().to_string();
    assert_eq!(
        s.put("jobs/j1/graph", b"secret", &[("x-ha-term", &term)])
            .status,
        200
    );
    let stranger = zookeeper_client::Client::connect(&server.quorum())
        .await
        .unwrap();
    let denied = stranger.get_data("/flink/test/jobs/j1/graph").await;
    assert!(
        matches!(denied, Err(zookeeper_client::Error::NoAuth)),
        "an unauthenticated client read the value: {denied:?}"
    );
    // ZooKeeper 3.8 hides even the ACL from someone who may not read the node.
    assert!(matches!(
        stranger.get_acl("/flink/test/jobs/j1/graph").await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    // Someone with the same digest identity can read it.
    let owner = zookeeper_client::Client::connector()
        .with_auth("digest", b"sidecar:s3cret")
        .connect(&server.quorum())
        .await
        .unwrap();
    let (data, _) = owner.get_data("/flink/test/jobs/j1/graph").await.unwrap();
    assert_eq!(
        &data[1..],
        b"\0secret",
        "the stored value (after the backend's tag byte and the host's envelope)"
    );
}

#[test]
fn after_its_session_expires_a_sidecar_rejoins_with_a_fresh_one() {
    let mut server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let s = start(&cluster, "z1", &server.quorum());
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let old_term = s.term();
    // Long enough for the server to expire the session once it runs again.
    server.pause();
    wait_for("the leader to step down", 3 * SESSION, || {
        (!s.leads()).then_some(())
    });
    std::thread::sleep(2 * SESSION);
    server.resume();
    wait_for(
        "leadership under a new session",
        Duration::from_secs(30),
        || s.leads().then_some(()),
    );
    let log = s.log_text();
    assert!(log.contains("ZooKeeper session ended"), "{log}");
    // The sidecar first tries to reattach its session: when its retry reaches
    // the resumed server before the server's next expiry tick, the session
    // survives (its latch node with it) and leadership resumes; otherwise the
    // server expired it and the sidecar led again under a new session.
    if log.contains("new ZooKeeper session established") {
        assert!(s.term() > old_term, "the new term must be greater");
    } else {
        assert!(
            log.contains("ZooKeeper session reattached"),
            "neither a new nor a reattached session: {log}"
        );
        assert!(s.term() >= old_term, "the term never goes back");
    }
}

/// A cluster that ran on Flink's own ZooKeeper HA leaves its state as Flink
/// writes it: a Java-serialized state handle as a node's whole data (no tag
/// byte), a `locks` child per state node (one ephemeral node in it per
/// JobManager that holds the state), and the checkpoint id counter as
/// Curator's 4-byte SharedCount. The sidecar must read those as values, list
/// them without the locks, and delete a node whose locks are released, so
/// the same cluster-id can move to the sidecar and recover its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_written_by_flinks_own_ha_is_read_listed_and_removed() {
    use zookeeper_client::{Acls, Client, CreateMode};
    let server = ZooKeeper::standalone();
    let flink = Client::connect(&server.quorum()).await.unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let base = "/flink/test";
    let job = "0123456789abcdef0123456789abcdef";
    let handle = |what: &str| [&[0xac, 0xed, 0x00, 0x05][..], what.as_bytes()].concat();
    let plan = format!("{base}/execution-plans/{job}");
    let held = format!("{base}/jobs/{job}/checkpoints/0000000000000000006");
    let released = format!("{base}/jobs/{job}/checkpoints/0000000000000000007");
    flink
        .mkdir(&format!("{base}/execution-plans"), &persistent)
        .await
        .unwrap();
    flink
        .mkdir(&format!("{base}/jobs/{job}/checkpoints"), &persistent)
        .await
        .unwrap();
    for (path, data) in [
        (&plan, handle("plan")),
        (&held, handle("chk-6")),
        (&released, handle("chk-7")),
    ] {
        flink.create(path, &data, &persistent).await.unwrap();
        flink
            .create(&format!("{path}/locks"), b"", &persistent)
            .await
            .unwrap();
    }
    // A JobManager still holds checkpoint 6 (its session is alive).
    flink
        .create(&format!("{held}/locks/jm-lock"), b"", &ephemeral)
        .await
        .unwrap();
    flink
        .create(
            &format!("{base}/jobs/{job}/checkpoint_id_counter"),
            &8i32.to_be_bytes(),
            &persistent,
        )
        .await
        .unwrap();

    let cluster = Cluster::new();
    let s = start(&cluster, "z1", &server.quorum());
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let term = s.term().to_string();
    let fence = [("x-ha-term", term.as_str())];

    let listed = s.get(&format!("/state?prefix=jobs/{job}/")).unwrap().json();
    assert_eq!(
        listed["keys"],
        serde_json::json!([
            format!("jobs/{job}/checkpoint_id_counter"),
            format!("jobs/{job}/checkpoints/0000000000000000006"),
            format!("jobs/{job}/checkpoints/0000000000000000007"),
        ]),
        "Flink's values are keys, its locks are not"
    );
    let got = s.get(&format!("/state/execution-plans/{job}")).unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.body,
        handle("plan"),
        "the state handle as Flink wrote it"
    );
    let counter = s
        .get(&format!("/state/jobs/{job}/checkpoint_id_counter"))
        .unwrap();
    assert_eq!(counter.body, 8i32.to_be_bytes(), "Flink's SharedCount");

    // Released locks: the node and its locks go.
    let del = request(
        s.port,
        "DELETE",
        &format!("/state/jobs/{job}/checkpoints/0000000000000000007"),
        &fence,
        b"",
    )
    .unwrap();
    assert_eq!(del.status, 204, "{}", del.text());
    assert!(flink.check_stat(&released).await.unwrap().is_none());
    // A lock still held: the value goes, the node stays for its holder.
    let del = request(
        s.port,
        "DELETE",
        &format!("/state/jobs/{job}/checkpoints/0000000000000000006"),
        &fence,
        b"",
    )
    .unwrap();
    assert_eq!(del.status, 204, "{}", del.text());
    assert_eq!(
        s.get(&format!(
            "/state/jobs/{job}/checkpoints/0000000000000000006"
        ))
        .unwrap()
        .status,
        404
    );
    assert!(
        flink
            .check_stat(&format!("{held}/locks/jm-lock"))
            .await
            .unwrap()
            .is_some()
    );
    // A delete fenced by a stale term is refused, and the node stays.
    let stale = request(
        s.port,
        "DELETE",
        &format!("/state/execution-plans/{job}"),
        &[("x-ha-term", "1000000")],
        b"",
    )
    .unwrap();
    assert_eq!(stale.status, 409, "{}", stale.text());
    assert!(flink.check_stat(&plan).await.unwrap().is_some());
    let del = request(
        s.port,
        "DELETE",
        &format!("/state/execution-plans/{job}"),
        &fence,
        b"",
    )
    .unwrap();
    assert_eq!(del.status, 204, "{}", del.text());
    assert!(flink.check_stat(&plan).await.unwrap().is_none());
}

#[test]
fn members_are_the_latch_children_and_a_handover_reaches_the_chosen_standby() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server.quorum());
    support::roster::assert_members_and_targeted_handover(&sidecars, Duration::from_secs(2));
}

#[test]
fn a_handover_with_a_standby_stopped_at_each_step_never_makes_two_leaders() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server.quorum());
    support::roster::assert_handover_faults_keep_one_leader(
        &sidecars,
        Duration::from_millis(1500),
        SESSION + zk::TICK,
    );
}

/// The state-instance pool (8 by default, as no filesystem is granted here)
/// under 16 concurrent fenced writers, through every sidecar, while the
/// leader resigns six times.
#[test]
fn parallel_fenced_writers_during_handovers_never_pass_a_stale_term() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &server.quorum());
    agreed_leader(&sidecars);
    let (acked, refused) = support::parallel::assert_parallel_fenced_writers_keep_the_fence(
        &sidecars,
        16,
        6,
        Duration::from_millis(1500),
        SESSION + zk::TICK,
    );
    println!("parallel fenced writers on ZooKeeper: {acked} acknowledged, {refused} refused");
}
