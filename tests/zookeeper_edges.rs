//! ZooKeeper edge cases found in review, against real ZooKeeper: a standby's
//! token must not pass the fence, and tolerating suspended connections must
//! not block the session after a short blip.

mod support;
#[path = "support/zk.rs"]
mod zk;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_sidecar::capabilities::Health;
use ha_sidecar::capabilities::zookeeper::{ZkSession, ZkSettings, to_wit};
use support::*;
use zk::ZooKeeper;

fn zk_config(cluster: &Cluster, id: &str, port: u16, quorum: &str) -> std::path::PathBuf {
    let yaml = SidecarYaml::new(id, port, "ha_plugin_zookeeper")
        .settings("root: /flink, cluster-id: review")
        .capability(&zookeeper_grant(quorum, Duration::from_secs(2)))
        .build();
    cluster.write_config(id, &yaml)
}

/// A fenced write must land only while its token is the *current* term. The
/// plugin's fence is "a latch node with this sequence exists", which is also
/// true for every waiting standby's node: a token that never was a leader's
/// term passes the fence while someone else leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_token_does_not_pass_the_fence() {
    let server = ZooKeeper::standalone();
    let cluster = Cluster::new();
    let sidecars: Vec<Sidecar> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| {
            let port = free_port();
            let cfg = zk_config(&cluster, id, port, &server.quorum());
            Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
        })
        .collect();
    let a = sole_leader(&sidecars, Duration::from_secs(20));
    let current = sidecars[a].term();
    // The standbys' latch nodes, read straight from ZooKeeper.
    let client = zookeeper_client::Client::connect(&server.quorum())
        .await
        .unwrap();
    let latch = client
        .list_children("/flink/review/leader/latch")
        .await
        .unwrap();
    let standby_token = latch
        .iter()
        .filter_map(|n| n.rsplit("-latch-").next()?.parse::<u64>().ok())
        .map(|s| s + 1)
        .find(|t| *t != current)
        .expect("a standby's latch node");
    println!("leader term {current}, a standby's token {standby_token}, latch {latch:?}");
    assert!(sidecars[a].leads());
    let r = sidecars[a].put(
        "jobs/j1/graph",
        b"written with a term that is not current",
        &[("x-ha-term", &standby_token.to_string())],
    );
    assert_eq!(
        r.status,
        409,
        "a write fenced by token {standby_token} landed while term {current} leads: {}",
        r.text()
    );
}

fn settings(quorum: &str, tolerate: bool) -> ZkSettings {
    ZkSettings {
        quorum: quorum.into(),
        session_timeout: zk::MAX_SESSION_TIMEOUT, // 4 s: grace T/3 = 1.33 s
        connection_timeout: Duration::from_millis(400), // disconnect noticed after ~0.4 s
        retry_wait: Duration::from_millis(100),
        max_retry_wait: Duration::from_millis(500),
        max_retry_attempts: 3,
        tolerate_suspended_connections: tolerate,
        acl_creator: false,
        digest: None,
        tls: None,
        sasl: None,
    }
}

async fn usable(s: &ZkSession) -> bool {
    s.run(
        None,
        |c| async move { c.check_stat("/").await.map_err(to_wit) },
    )
    .await
    .is_ok()
}

/// With `tolerate-suspended-connections`, a disconnect that heals well within
/// the grace must neither cost leadership nor block the session longer than
/// the disconnect itself. The session watcher waits for the state to leave
/// `Suspended` inside the very task that would change it, so it always sits
/// out the full grace, refusing every call, and then reports `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tolerating_suspended_connections_does_not_block_the_session_after_a_blip() {
    let mut server = ZooKeeper::standalone();
    let control = ZkSession::connect(settings(&server.quorum(), false))
        .await
        .unwrap();
    let tolerant = ZkSession::connect(settings(&server.quorum(), true))
        .await
        .unwrap();
    // Record every health value the tolerant session publishes.
    let seen = Arc::new(Mutex::new(Vec::<Health>::new()));
    {
        let mut rx = tolerant.health();
        let seen = seen.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let h = rx.borrow_and_update().clone();
                seen.lock().unwrap().push(h);
            }
        });
    }
    assert!(usable(&control).await && usable(&tolerant).await);
    // A blip: long enough for both clients to notice (~0.4 s), far shorter
    // than the grace (1.33 s) and the session timeout (4 s).
    let paused = Instant::now();
    server.pause();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.resume();
    let resumed = paused.elapsed();
    let mut control_back = None;
    let mut tolerant_back = None;
    let give_up = Instant::now() + Duration::from_secs(6);
    while (control_back.is_none() || tolerant_back.is_none()) && Instant::now() < give_up {
        if control_back.is_none() && usable(&control).await {
            control_back = Some(paused.elapsed());
        }
        if tolerant_back.is_none() && usable(&tolerant).await {
            tolerant_back = Some(paused.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    println!(
        "resumed at {resumed:?}; usable again: control {control_back:?}, tolerant {tolerant_back:?}; tolerant health: {seen:?}; tolerant state now {:?}",
        tolerant.info().await.state
    );
    let (c, t) = (control_back.unwrap(), tolerant_back.unwrap());
    assert!(
        t <= c + Duration::from_millis(400),
        "the tolerant session refused calls until {t:?}, {:?} after the connection was back ({c:?})",
        t - c
    );
    assert!(
        !seen.iter().any(|h| matches!(h, Health::Lost(_))),
        "a {resumed:?} blip, within the grace, was reported as a lost session: {seen:?}"
    );
}
