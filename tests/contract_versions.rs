//! Plugins built for the previous contract version (0.1, in which the
//! capability interfaces were part of `ha:sidecar`) against this sidecar,
//! which speaks 0.2 and 0.1 side by side. The fixtures are the real backends
//! compiled by the SDK with its `contract-0-1` feature
//! (`plugins/fixtures/contract-0-1`). The other backends' 0.1 builds run the
//! conformance suite in their own test files (zookeeper, kubernetes,
//! postgres), against their real servers.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_backend_built_for_contract_0_1_passes_the_conformance_suite() {
    let cluster = Cluster::new();
    let yaml = cluster.file_config("conformance", free_port(), "").replace(
        "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms",
        "timing: {lease: 1s, renew-deadline: 750ms, retry-period: 250ms",
    );
    let cfg = with_contract_0_1_build(&cluster.write_config("conformance", &yaml));
    assert_conformance(&cfg).await;
    // What an operator sees before loading it.
    let wasm = plugin("fixture_contract_0_1_file").display().to_string();
    let (code, out) = run_cli(&["plugin", "inspect", &wasm]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("contract: ha:sidecar/backend@0.1.0 (this sidecar speaks ha:sidecar@0.2.0, ha:sidecar@0.1.0)"),
        "{out}"
    );
    assert!(out.contains("needs:    capabilities.filesystem"), "{out}");
}

/// A rolling upgrade: one sidecar still runs the plugin built for 0.1, two
/// run the current build, on one shared directory. Leadership and fenced
/// state pass between the versions in both directions, and a write fenced
/// by a term another version granted is refused.
#[test]
fn sidecars_with_plugins_of_both_versions_share_one_cluster() {
    let cluster = Cluster::new();
    let old = cluster.start_with("old", |port| {
        let yaml = cluster.file_config("old", port, "");
        let cfg = with_contract_0_1_build(&cluster.write_config("old-current", &yaml));
        std::fs::read_to_string(cfg).unwrap()
    });
    assert!(
        old.log_text().contains("ha:sidecar/backend@0.1.0"),
        "the old sidecar's log does not name its plugin's contract:\n{}",
        old.log_text()
    );
    // The 0.1 sidecar leads first: the others start once it does.
    let old = vec![old];
    sole_leader(&old, Duration::from_secs(20));
    let first = old[0].term();
    let w = old[0].put("jobs/j1/graph", b"v0", &[("x-ha-term", &first.to_string())]);
    assert_eq!(w.status, 200, "{}", w.text());
    let mut sidecars = old;
    sidecars.push(cluster.start("new1"));
    sidecars.push(cluster.start("new2"));
    agreed_leader(&sidecars);

    // 0.1 → 0.2: the new leader reads what the old one wrote, and the old
    // term can no longer write through anyone.
    let mut old = sidecars.remove(0);
    old.signal(libc::SIGTERM);
    assert!(old.wait_exit(Duration::from_secs(15)).success());
    let next = sole_leader(&sidecars, Duration::from_secs(10));
    let second = sidecars[next].term();
    assert!(second > first, "token {second} after {first}");
    assert_eq!(
        sidecars[next].get("/state/jobs/j1/graph").unwrap().body,
        b"v0".to_vec()
    );
    let w = sidecars[next].put(
        "jobs/j1/graph",
        b"v1",
        &[("x-ha-term", &second.to_string())],
    );
    assert_eq!(w.status, 200, "{}", w.text());
    assert_deposed_write_rejected(&sidecars, &sidecars[next], &first.to_string());

    // 0.2 → 0.1: a new 0.1 sidecar joins, both current ones go (the leader
    // by kill -9), and it leads with a greater token and the latest value.
    let mut joined = vec![cluster.start_with("old2", |port| {
        let yaml = cluster.file_config("old2", port, "");
        let cfg = with_contract_0_1_build(&cluster.write_config("old2-current", &yaml));
        std::fs::read_to_string(cfg).unwrap()
    })];
    wait_for(
        "the second 0.1 sidecar to see the leader",
        Duration::from_secs(10),
        || (joined[0].leader()["term"].as_u64() == Some(second)).then_some(()),
    );
    sidecars.remove(1 - next).kill9();
    sidecars.remove(0).kill9();
    sole_leader(&joined, LEASE + Duration::from_secs(5));
    let third = joined[0].term();
    assert!(third > second, "token {third} after {second}");
    // The current leader wrote v2 last (`assert_deposed_write_rejected`).
    assert_eq!(
        joined[0].get("/state/jobs/j1/graph").unwrap().body,
        b"v2".to_vec()
    );
    let r = joined[0].put(
        "jobs/j1/graph",
        b"stale",
        &[("x-ha-term", &second.to_string())],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    joined.clear();
}

/// A plugin built before the roster export existed (here: for contract 0.1)
/// still loads; `GET /members` then shows the leader only and says why, and
/// a targeted handover is refused as unsupported, changing nothing.
#[test]
fn a_plugin_without_the_roster_shows_the_leader_only_and_refuses_a_targeted_handover() {
    let cluster = Cluster::new();
    let start = |id: &str| {
        cluster.start_with(id, |port| {
            let yaml = cluster.file_config(id, port, "");
            let cfg =
                with_contract_0_1_build(&cluster.write_config(&format!("{id}-current"), &yaml));
            std::fs::read_to_string(cfg).unwrap()
        })
    };
    let sidecars = vec![start("old1"), start("old2")];
    // The standby answers from what it has learned: wait until it knows the leader.
    let leader = agreed_leader(&sidecars);
    let term = sidecars[leader].term();
    let v = sidecars[1 - leader].get("/members").unwrap().json();
    assert_eq!(v["recorded"], false, "{v}");
    assert!(
        v["note"]
            .as_str()
            .unwrap_or("")
            .contains("ha:membership/roster"),
        "{v}"
    );
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{v}");
    assert_eq!(members[0]["id"], sidecars[leader].id.as_str());
    assert_eq!(members[0]["role"], "leader");
    let r = request(
        sidecars[leader].port,
        "POST",
        &format!("/leader/handover?to={}", sidecars[1 - leader].id),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 501, "{}", r.text());
    assert_eq!(r.json()["error"], "handover_unsupported");
    assert!(sidecars[leader].leads());
    assert_eq!(
        sidecars[leader].term(),
        term,
        "a refused handover changed the term"
    );
}
