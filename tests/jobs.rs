//! State persistence with real sidecar processes on the file backend: the
//! storage dir, job HA data, and the job result store lifecycle, including
//! crashes (kill -9 equivalents, via failpoints) at its delicate points.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const JOB: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";

fn storage_yaml(cluster: &Cluster, extra_jobs: &str) -> String {
    format!(
        "storage: {{dir: 'file://{}', inline-limit: 1KiB, sweep-interval: 300ms, sweep-grace: 500ms}}\njobs: {{retained-checkpoints: 2, cleanup: {{initial-backoff: 100ms, max-backoff: 1s}}{extra_jobs}}}\n",
        cluster.path().join("storage").display()
    )
}

/// Starts a sidecar with the storage dir configured; `env` may arm a failpoint.
fn start(cluster: &Cluster, id: &str, extra_jobs: &str, env: &[(&str, &str)]) -> Sidecar {
    let port = free_port();
    let cfg = cluster.write_config(
        id,
        &cluster.file_config(id, port, &storage_yaml(cluster, extra_jobs)),
    );
    Sidecar::start_env(
        id,
        port,
        &cfg,
        &cluster.path().join(format!("{id}.log")),
        env,
    )
}

fn blobs(cluster: &Cluster) -> Vec<PathBuf> {
    let dir = cluster.path().join("storage");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn lead(s: &Sidecar) -> String {
    wait_for(
        &format!("{} to lead", s.id),
        Duration::from_secs(20),
        || s.leads().then_some(()),
    );
    s.term().to_string()
}

fn put(s: &Sidecar, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    request(s.port, "PUT", path, headers, body).expect("PUT")
}

#[test]
fn large_values_go_through_the_storage_dir_and_round_trip() {
    let cluster = Cluster::new();
    let s = start(&cluster, "s1", "", &[]);
    let term = lead(&s);
    let big = random_bytes(200 << 10, 1);
    let r = s.put("blob/one", &big, &[("x-ha-term", &term)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let files = blobs(&cluster);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        big.len() as u64
    );
    assert_eq!(s.get("/state/blob/one").unwrap().body, big);
    // Nothing large went through the backend: only a pointer.
    let largest_in_backend = walk(&cluster.path().join("data"))
        .into_iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap_or(0);
    assert!(
        largest_in_backend < 1024,
        "a {largest_in_backend}-byte file in the backend directory"
    );
    // Replacing the value replaces the file; deleting the key deletes it.
    let bigger = random_bytes(300 << 10, 2);
    assert_eq!(
        s.put("blob/one", &bigger, &[("x-ha-term", &term)]).status,
        200
    );
    assert_eq!(s.get("/state/blob/one").unwrap().body, bigger);
    assert_eq!(
        blobs(&cluster).len(),
        1,
        "the replaced file was not deleted"
    );
    // Small values stay inline.
    assert_eq!(s.put("small", b"tiny", &[]).status, 200);
    assert_eq!(blobs(&cluster).len(), 1);
    assert_eq!(
        request(s.port, "DELETE", "/state/blob/one", &[], b"")
            .unwrap()
            .status,
        204
    );
    assert!(
        blobs(&cluster).is_empty(),
        "the deleted key's file is still there"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn a_corrupted_file_is_an_error_never_data() {
    let cluster = Cluster::new();
    let s = start(&cluster, "s1", "", &[]);
    lead(&s);
    let big = random_bytes(10 << 10, 3);
    assert_eq!(s.put("k", &big, &[]).status, 200);
    let file = blobs(&cluster).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let r = s.get("/state/k").unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"], "corrupt_value");
    assert!(r.text().contains("sha256"), "{}", r.text());
    std::fs::remove_file(&file).unwrap();
    let r = s.get("/state/k").unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (500, Some("corrupt_value")),
        "a missing file is reported too"
    );
}

#[test]
fn a_crash_between_file_and_pointer_leaves_nothing_visible_and_the_orphan_is_swept() {
    let cluster = Cluster::new();
    let mut crasher = start(
        &cluster,
        "s1",
        "",
        &[("HA_SIDECAR_FAILPOINT", "after-blob-write")],
    );
    let term = lead(&crasher);
    assert!(
        s_put_fails(&crasher, "big", &random_bytes(50 << 10, 4), &term),
        "the write should have died with the process"
    );
    assert!(!crasher.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(
        blobs(&cluster).len(),
        1,
        "the file should be durable before the crash"
    );
    // The next leader sees no key, and sweeps the orphan.
    let next = start(&cluster, "s2", "", &[]);
    lead(&next);
    assert_eq!(next.get("/state/big").unwrap().status, 404);
    wait_for("the orphan to be swept", Duration::from_secs(15), || {
        blobs(&cluster).is_empty().then_some(())
    });
    // The sweeper logs right after the deletion, from its own task: wait for the line.
    wait_for("the sweep to be logged", Duration::from_secs(5), || {
        next.log_text()
            .contains("swept an unreferenced file")
            .then_some(())
    });
}

fn s_put_fails(s: &Sidecar, key: &str, body: &[u8], term: &str) -> bool {
    request(
        s.port,
        "PUT",
        &format!("/state/{key}"),
        &[("x-ha-term", term)],
        body,
    )
    .is_err()
}

#[test]
fn job_ha_data_round_trip_with_retention_and_counter() {
    let cluster = Cluster::new();
    let s = start(&cluster, "s1", "", &[]);
    let term = lead(&s);
    let t = [("x-ha-term", term.as_str())];
    // Writes must carry a term.
    assert_eq!(
        put(&s, &format!("/jobs/{JOB}/graph"), b"g", &[]).json()["error"],
        "term_required"
    );
    let graph = random_bytes(8 << 10, 5);
    assert_eq!(
        put(&s, &format!("/jobs/{JOB}/graph"), &graph, &t).status,
        200
    );
    assert_eq!(s.get(&format!("/jobs/{JOB}/graph")).unwrap().body, graph);
    for id in 1..=3u64 {
        let payload = if id == 1 {
            random_bytes(4 << 10, 6)
        } else {
            format!("checkpoint {id}").into_bytes()
        };
        let r = put(&s, &format!("/jobs/{JOB}/checkpoints/{id}"), &payload, &t);
        assert_eq!(r.status, 201, "{}", r.text());
        if id == 3 {
            assert_eq!(
                r.json()["removed"],
                serde_json::json!([1]),
                "only the newest 2 are retained"
            );
        }
    }
    assert_eq!(
        put(&s, &format!("/jobs/{JOB}/checkpoints/3"), b"again", &t).status,
        412,
        "a checkpoint id is written once"
    );
    assert_eq!(
        s.get(&format!("/jobs/{JOB}/checkpoints")).unwrap().json()["checkpoints"],
        serde_json::json!([2, 3])
    );
    let latest = s.get(&format!("/jobs/{JOB}/checkpoints/latest")).unwrap();
    assert_eq!(
        (latest.body.as_slice(), latest.header("x-ha-checkpoint-id")),
        (b"checkpoint 3".as_slice(), Some("3"))
    );
    assert_eq!(
        blobs(&cluster).len(),
        1,
        "checkpoint 1's file must go with it (only the graph's remains)"
    );
    // The counter is a compare-and-set.
    let c = put(
        &s,
        &format!("/jobs/{JOB}/counter"),
        b"4",
        &[t[0], ("if-none-match", "*")],
    );
    assert_eq!(c.status, 200, "{}", c.text());
    let v = c.header("etag").unwrap().to_string();
    assert_eq!(
        put(
            &s,
            &format!("/jobs/{JOB}/counter"),
            b"5",
            &[t[0], ("if-match", &v)]
        )
        .status,
        200
    );
    assert_eq!(
        put(
            &s,
            &format!("/jobs/{JOB}/counter"),
            b"6",
            &[t[0], ("if-match", &v)]
        )
        .status,
        412
    );
    assert_eq!(
        s.get(&format!("/jobs/{JOB}/counter")).unwrap().json()["value"],
        5
    );
    // A stale term is fenced.
    let stale = (term.parse::<u64>().unwrap() - 1).to_string();
    assert_eq!(
        put(
            &s,
            &format!("/jobs/{JOB}/checkpoints/9"),
            b"x",
            &[("x-ha-term", &stale)]
        )
        .status,
        409
    );
    assert_eq!(
        s.get("/jobs").unwrap().json()["jobs"],
        serde_json::json!([JOB])
    );
    let view = s.get("/recovery").unwrap().json();
    assert_eq!(view["jobs"][0]["id"], JOB);
    assert_eq!(view["jobs"][0]["latest_checkpoint"], 3);
    assert_eq!(view["jobs"][0]["checkpoint_id_counter"], 5);
}

#[test]
fn a_finished_job_keeps_a_clean_result_and_is_never_recovered() {
    let cluster = Cluster::new();
    let s = start(&cluster, "s1", ", delete-result-on-commit: false", &[]);
    let term = lead(&s);
    let t = [("x-ha-term", term.as_str())];
    populate(&s, &t);
    let r = put(
        &s,
        &format!("/jobs/{JOB}/result"),
        br#"{"application-status":"SUCCEEDED"}"#,
        &t,
    );
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("clean")),
        "{}",
        r.text()
    );
    let result = s.get(&format!("/jobs/{JOB}/result")).unwrap().json();
    assert_eq!(
        (
            result["state"].as_str(),
            result["result"]["application-status"].as_str()
        ),
        (Some("clean"), Some("SUCCEEDED"))
    );
    assert_eq!(
        s.get("/recovery").unwrap().json(),
        serde_json::json!({"jobs": [], "dirty_results": []})
    );
    assert!(blobs(&cluster).is_empty(), "the job's files must be gone");
    let again = put(&s, &format!("/jobs/{JOB}/graph"), b"resubmitted", &t);
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (400, Some("invalid")),
        "{}",
        again.text()
    );
}

/// A job with a large graph, a large and a small checkpoint, and a counter.
fn populate(s: &Sidecar, t: &[(&str, &str)]) {
    assert_eq!(
        put(
            s,
            &format!("/jobs/{JOB}/graph"),
            &random_bytes(8 << 10, 7),
            t
        )
        .status,
        200
    );
    assert_eq!(
        put(
            s,
            &format!("/jobs/{JOB}/checkpoints/1"),
            &random_bytes(4 << 10, 8),
            t
        )
        .status,
        201
    );
    assert_eq!(
        put(s, &format!("/jobs/{JOB}/checkpoints/2"), b"small", t).status,
        201
    );
    assert_eq!(put(s, &format!("/jobs/{JOB}/counter"), b"2", t).status, 200);
}

/// The leader dies at `failpoint` while finishing the job; a standby takes
/// over. Returns the new leader once the crash is behind it.
fn crash_while_finishing(cluster: &Cluster, failpoint: &str) -> Sidecar {
    let mut leader = start(cluster, "s1", "", &[("HA_SIDECAR_FAILPOINT", failpoint)]);
    let term = lead(&leader);
    let standby = start(cluster, "s2", "", &[]);
    let t = [("x-ha-term", term.as_str())];
    populate(&leader, &t);
    assert!(
        request(
            leader.port,
            "PUT",
            &format!("/jobs/{JOB}/result"),
            &t,
            br#"{"application-status":"SUCCEEDED"}"#
        )
        .is_err(),
        "the leader should die before answering"
    );
    assert!(!leader.wait_exit(Duration::from_secs(10)).success());
    lead(&standby);
    standby
}

#[test]
fn a_crash_before_the_dirty_record_leaves_the_job_to_be_recovered() {
    let cluster = Cluster::new();
    let next = crash_while_finishing(&cluster, "before-dirty-record");
    let view = next.get("/recovery").unwrap().json();
    assert_eq!(view["jobs"][0]["id"], JOB, "{view}");
    assert_eq!(view["jobs"][0]["latest_checkpoint"], 2);
    assert_eq!(view["dirty_results"], serde_json::json!([]));
    assert_eq!(
        next.get(&format!("/jobs/{JOB}/checkpoints/1"))
            .unwrap()
            .status,
        200,
        "HA data must be intact"
    );
}

fn next_leader_finishes(failpoint: &str) {
    let cluster = Cluster::new();
    let next = crash_while_finishing(&cluster, failpoint);
    // The new leader finds the dirty result and completes the cleanup itself.
    wait_for(
        "the new leader to finish the cleanup",
        Duration::from_secs(20),
        || {
            let view = next.get("/recovery").unwrap().json();
            (view == serde_json::json!({"jobs": [], "dirty_results": []})).then_some(())
        },
    );
    assert_eq!(
        next.get(&format!("/jobs/{JOB}/result")).unwrap().status,
        404,
        "delete-on-commit removes the result"
    );
    assert!(
        next.get("/state?prefix=").unwrap().json()["keys"]
            .as_array()
            .unwrap()
            .is_empty(),
        "HA data left behind"
    );
    wait_for(
        "the job's files to be gone",
        Duration::from_secs(10),
        || blobs(&cluster).is_empty().then_some(()),
    );
}

#[test]
fn a_crash_after_the_dirty_record_is_finished_by_the_next_leader() {
    next_leader_finishes("after-dirty-record");
}

#[test]
fn a_crash_mid_cleanup_is_finished_by_the_next_leader() {
    next_leader_finishes("mid-cleanup");
}

#[test]
fn checkpoints_racing_with_the_job_result_never_outlive_the_cleanup() {
    let cluster = Cluster::new();
    let s = start(&cluster, "s1", "", &[]);
    let term = lead(&s);
    let t = [("x-ha-term", term.as_str())];
    populate(&s, &t);
    let port = s.port;
    let writer_term = term.clone();
    let writer = std::thread::spawn(move || {
        let mut landed_after_refusal = false;
        let mut refused = false;
        for id in 3..200u64 {
            let r = request(
                port,
                "PUT",
                &format!("/jobs/{JOB}/checkpoints/{id}"),
                &[("x-ha-term", &writer_term)],
                b"late",
            )
            .unwrap();
            match r.status {
                201 if refused => landed_after_refusal = true,
                400 => refused = true,
                _ => {}
            }
        }
        (refused, landed_after_refusal)
    });
    std::thread::sleep(Duration::from_millis(20));
    let r = put(
        &s,
        &format!("/jobs/{JOB}/result"),
        br#"{"application-status":"SUCCEEDED"}"#,
        &t,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (refused, landed_after_refusal) = writer.join().unwrap();
    assert!(
        refused,
        "no checkpoint write raced with the result (the writer finished too early)"
    );
    assert!(
        !landed_after_refusal,
        "a checkpoint was accepted after the job finished"
    );
    assert_eq!(
        s.get("/recovery").unwrap().json(),
        serde_json::json!({"jobs": [], "dirty_results": []})
    );
    assert!(
        s.get("/state?prefix=").unwrap().json()["keys"]
            .as_array()
            .unwrap()
            .is_empty(),
        "HA data outlived the cleanup"
    );
}
