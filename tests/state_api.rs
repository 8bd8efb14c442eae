//! The fenced state API over HTTP, on the file backend.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

fn etag_of(r: &Response) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag in {} {}", r.status, r.text()))
        .to_string()
}

#[test]
fn a_write_with_a_stale_term_is_rejected_and_the_state_is_unchanged() {
    let cluster = Cluster::new();
    let sidecars = cluster.start_three();
    let a = sole_leader(&sidecars, Duration::from_secs(20));
    let old_term = sidecars[a].term().to_string();
    let r = sidecars[a].put("jobs/j1/counter", b"41", &[("x-ha-term", &old_term)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let version = etag_of(&r);

    // The leader is deposed (resigns, stays running, holds off); another takes over.
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
    assert_ne!(a, b);

    // The deposed leader's writes with its old term fail, through any sidecar.
    for s in [&sidecars[a], &sidecars[b]] {
        let r = s.put("jobs/j1/counter", b"stale", &[("x-ha-term", &old_term)]);
        assert_eq!(r.status, 409, "{}: {}", s.id, r.text());
        assert_eq!(r.json()["error"], "not_leader");
        let r = request(
            s.port,
            "DELETE",
            "/state/jobs/j1/counter",
            &[("x-ha-term", &old_term)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 409, "{}", r.text());
    }
    // Nothing changed.
    for s in &sidecars {
        let r = s.get("/state/jobs/j1/counter").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"41".as_slice()),
            "{}",
            s.id
        );
        assert_eq!(etag_of(&r), version);
    }
    // The new leader writes with its own term.
    let new_term = sidecars[b].term().to_string();
    let r = sidecars[b].put(
        "jobs/j1/counter",
        b"42",
        &[("x-ha-term", &new_term), ("if-match", &version)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A deposed leader with a stale version too is told it is fenced (409),
    // not invited to re-read and retry (412).
    let r = sidecars[b].put(
        "jobs/j1/counter",
        b"stale",
        &[("x-ha-term", &old_term), ("if-match", &version)],
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn a_lost_compare_and_set_is_412_and_changes_nothing() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let created = s.put("k", b"one", &[("if-none-match", "*")]);
    assert_eq!(created.status, 200, "{}", created.text());
    let v1 = etag_of(&created);
    let again = s.put("k", b"two", &[("if-none-match", "*")]);
    assert_eq!(again.status, 412, "{}", again.text());
    assert_eq!(again.json()["error"], "version_conflict");
    let updated = s.put("k", b"two", &[("if-match", &v1)]);
    assert_eq!(updated.status, 200);
    let v2 = etag_of(&updated);
    let lost = s.put("k", b"three", &[("if-match", &v1)]);
    assert_eq!(lost.status, 412, "{}", lost.text());
    assert_eq!(etag_of(&lost), v2, "the 412 names the current version");
    assert_eq!(
        lost.json()["current_version"].to_string(),
        v2.trim_matches('"')
    );
    let lost_delete = request(s.port, "DELETE", "/state/k", &[("if-match", &v1)], b"").unwrap();
    assert_eq!(lost_delete.status, 412);
    let r = s.get("/state/k").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, b"two".as_slice()));
    assert_eq!(
        request(s.port, "DELETE", "/state/k", &[("if-match", &v2)], b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(s.get("/state/k").unwrap().status, 404);
}

#[test]
fn list_get_put_delete_round_trip() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    for k in ["jobs/a/graph", "jobs/b/graph", "results/a"] {
        assert_eq!(s.put(k, k.as_bytes(), &[]).status, 200);
    }
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(s.put("blob", &binary, &[]).status, 200);
    assert_eq!(s.get("/state/blob").unwrap().body, binary);
    assert_eq!(
        s.get("/state?prefix=jobs/").unwrap().json()["keys"],
        serde_json::json!(["jobs/a/graph", "jobs/b/graph"])
    );
    assert_eq!(
        request(s.port, "DELETE", "/state/jobs/a/graph", &[], b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        request(s.port, "DELETE", "/state/jobs/a/graph", &[], b"")
            .unwrap()
            .status,
        204,
        "deleting an absent key is idempotent"
    );
    assert_eq!(
        s.get("/state?prefix=jobs%2F").unwrap().json()["keys"],
        serde_json::json!(["jobs/b/graph"])
    );
}

#[test]
fn a_standby_cannot_write() {
    let cluster = Cluster::new();
    let sidecars = cluster.start_three();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let standby = &sidecars[(leader + 1) % 3];
    let r = standby.put("x", b"1", &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "not_leader");
}

#[test]
fn bad_requests_get_clear_errors_and_never_crash_the_process() {
    let cluster = Cluster::new();
    let port = free_port();
    let cfg = cluster.write_config(
        "solo",
        &cluster
            .file_config("solo", port, "")
            .replace("http: {", "http: {max-body: 1KiB, "),
    );
    let mut s = Sidecar::start("solo", port, &cfg, &cluster.path().join("solo.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    // (method, path, headers, body, expected status, expected error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/nope", vec![], vec![], 404, "not_found"),
        (
            "DELETE",
            "/leader",
            vec![],
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/recovery",
            vec![],
            vec![],
            405,
            "method_not_allowed",
        ),
        ("GET", "/state/a/../b", vec![], vec![], 400, "invalid_key"),
        ("GET", "/state/a//b", vec![], vec![], 400, "invalid_key"),
        ("GET", "/state/sp%20ace", vec![], vec![], 400, "invalid_key"),
        (
            "PUT",
            "/state/k",
            vec![("if-match", "\"abc\"")],
            b"x".to_vec(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/state/k",
            vec![("if-match", "\"1\""), ("if-none-match", "*")],
            b"x".to_vec(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/state/k",
            vec![("x-ha-term", "seven")],
            b"x".to_vec(),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/state/k",
            vec![],
            vec![b'x'; 2048],
            413,
            "payload_too_large",
        ),
        (
            "GET",
            "/leader?wait=forever",
            vec![],
            vec![],
            400,
            "bad_request",
        ),
        (
            "GET",
            "/leader?known=abc",
            vec![],
            vec![],
            400,
            "bad_request",
        ),
        ("GET", "/leader?bogus=1", vec![], vec![], 400, "bad_request"),
        (
            "POST",
            "/leader/resign?holdoff=-1s",
            vec![],
            vec![],
            400,
            "bad_request",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = request(port, method, path, &headers, &body).unwrap();
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let json = r.json();
        assert_eq!(json["error"], code, "{method} {path}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: no message"
        );
    }
    // Garbage on the wire, a truncated request, an abandoned connection.
    for raw in [
        &b"\x00\x01\x02 garbage\r\n\r\n"[..],
        b"GET /leader HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"PUT /state/k HTTP/1.1\r\ncontent-length: 10\r\n\r\nab",
    ] {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = c.write_all(raw);
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.is_running(), "the sidecar died:\n{}", s.log_text());
    assert_eq!(s.get("/healthz").unwrap().status, 200);
    assert!(s.leads());
}

#[test]
fn clients_that_hang_up_mid_request_do_not_break_the_state_plugin() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    for i in 0..30 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let body = format!("value {i}");
        let _ = c.write_all(
            format!(
                "PUT /state/k HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        // Hang up at varying moments, some while the handler is inside the plugin call.
        std::thread::sleep(Duration::from_micros(100 * (i % 20)));
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = s.put("k", b"after", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = s.get("/metrics").unwrap().text();
    assert!(
        metrics.contains("ha_sidecar_plugin_restarts_total{role=\"state\"} 0"),
        "the state instance was restarted:\n{metrics}"
    );
}
