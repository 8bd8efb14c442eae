//! Hostile input: requests, configs and plugin files made to break the
//! sidecar. Each gets a clear error (a status and, from our handlers, a JSON
//! body with a stable code and a message; from the CLI, the key, the value
//! and the reason), the process never crashes, and nothing is written: the
//! state read through the API, the backend's state directory and the storage
//! dir are byte-for-byte what they were, and a refused start leaves no
//! directory, no compiled plugin and no listening port behind.
//!
//! `tests/state_api.rs` and `tests/startup.rs` hold the first bad requests
//! and start-up refusals; these tables add what an attacker or a broken
//! client would send, and the "nothing is written" checks.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

/// What a request must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Our handler's JSON error: status and stable code.
    Json(u16, &'static str),
    /// hyper's own answer to a request it cannot parse: a bare status.
    Status(u16),
    /// Garbage that is not HTTP: a 400, or the connection closed unanswered.
    RefusedOrClosed,
}

/// What came back on one raw connection.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    body: String,
}

/// Sends `raw` on a fresh connection (a writer thread, so that a server
/// answering before the whole request is sent is still heard) and reads
/// until the server closes or `timeout` passes.
fn send_raw(port: u16, raw: Vec<u8>, timeout: Duration) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the sidecar");
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&raw);
    });
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    drop(stream);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer { status, body }
}

/// A request with `connection: close`, the headers given and a body.
fn req(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    if !headers.iter().any(|h| {
        h.to_ascii_lowercase().starts_with("content-length")
            || h.to_ascii_lowercase().starts_with("transfer-encoding")
    }) {
        raw.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Everything a write could change: every key's value and version through
/// the API, and every file of the backend's state directory and of the
/// storage dir.
#[derive(Debug, PartialEq)]
struct Snapshot {
    keys: BTreeMap<String, (Vec<u8>, Option<String>)>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

fn snapshot(s: &Sidecar, dirs: &[PathBuf]) -> Snapshot {
    let list = s.get("/state?prefix=").unwrap();
    assert_eq!(list.status, 200, "{}", list.text());
    let mut keys = BTreeMap::new();
    for key in list.json()["keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        let r = s.get(&format!("/state/{key}")).unwrap();
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        keys.insert(
            key.to_string(),
            (r.body.clone(), r.header("etag").map(String::from)),
        );
    }
    let mut files = BTreeMap::new();
    for dir in dirs {
        collect_files(dir, dir, &mut files);
    }
    Snapshot { keys, files }
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.insert(path.strip_prefix(root).unwrap().join(""), Vec::new());
            collect_files(root, &path, out);
        } else {
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&path).unwrap_or_default(),
            );
        }
    }
}

#[test]
fn hostile_requests_get_clear_errors_and_write_nothing() {
    let cluster = Cluster::new();
    let port = free_port();
    let storage = cluster.path().join("storage");
    let yaml = cluster
        .file_config(
            "solo",
            port,
            &format!("storage: {{dir: '{}'}}\n", storage.display()),
        )
        .replace("http: {", "http: {max-body: 64KiB, ");
    let cfg = cluster.write_config("solo", &yaml);
    let mut s = Sidecar::start("solo", port, &cfg, &cluster.path().join("solo.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let term = s.term().to_string();
    let fence = format!("x-ha-term: {term}");

    // Some state worth protecting: a small value, a binary value large
    // enough for the storage dir, and a job's HA data.
    let blob: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    for (path, body) in [
        ("/state/app/config", b"v1".to_vec()),
        ("/state/app/blob", blob.clone()),
        ("/jobs/j1/graph", b"graph".to_vec()),
        ("/jobs/j1/checkpoints/1", b"checkpoint 1".to_vec()),
        ("/jobs/j1/counter", b"2".to_vec()),
    ] {
        let r = request(port, "PUT", path, &[("x-ha-term", &term)], &body).unwrap();
        assert!(
            r.status == 200 || r.status == 201,
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(
        s.get("/state/app/blob").unwrap().body,
        blob,
        "binary values round-trip"
    );
    let dirs = [cluster.path().join("data/test/state"), storage.clone()];
    let before = snapshot(&s, &dirs);
    let mut stored = BTreeMap::new();
    collect_files(&storage, &storage, &mut stored);
    assert!(
        !stored.is_empty(),
        "the large value went to the storage dir"
    );

    let long_key = format!("/state/{}", "a".repeat(201));
    let long_line = format!("/state/{}", "b".repeat(100_000));
    // hyper's header buffer takes up to about 400 KiB.
    let big_header = format!("x-filler: {}", "h".repeat(1 << 20));
    let many_headers: Vec<String> = (0..200).map(|i| format!("x-h{i}: {i}")).collect();
    let many: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let mut chunked_flood = Vec::new();
    for _ in 0..9 {
        chunked_flood.extend_from_slice(b"2000\r\n");
        chunked_flood.extend_from_slice(&[b'x'; 0x2000]);
        chunked_flood.extend_from_slice(b"\r\n");
    }
    chunked_flood.extend_from_slice(b"0\r\n\r\n");
    let tls_hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec();
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let raw_utf8 =
        b"PUT /state/\xff\xfe HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx".to_vec();

    use Want::*;
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        // Bodies.
        (
            "a declared body over http.max-body",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "content-length: 10485760"],
                b"",
            ),
            Json(413, "payload_too_large"),
        ),
        (
            "a chunked body over http.max-body",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "transfer-encoding: chunked"],
                &chunked_flood,
            ),
            Json(413, "payload_too_large"),
        ),
        (
            "a content-length that is not a number",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "content-length: ten"],
                b"0123456789",
            ),
            Status(400),
        ),
        (
            "two different content-lengths",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "content-length: 1", "content-length: 2"],
                b"xy",
            ),
            Status(400),
        ),
        (
            "a transfer-encoding hyper does not speak",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "transfer-encoding: gzip"],
                b"x",
            ),
            Status(400),
        ),
        (
            "a content-length and then transfer-encoding: chunked",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "content-length: 10", "transfer-encoding: chunked"],
                b"1\r\nx\r\n0\r\n\r\n",
            ),
            Json(400, "bad_request"),
        ),
        (
            "transfer-encoding: chunked and then a content-length",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "Transfer-Encoding: chunked", "Content-Length: 10"],
                b"1\r\nx\r\n0\r\n\r\n",
            ),
            Json(400, "bad_request"),
        ),
        (
            "a malformed chunk",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "transfer-encoding: chunked"],
                b"zz\r\nxx\r\n0\r\n\r\n",
            ),
            RefusedOrClosed,
        ),
        // Headers.
        (
            "a header line without a colon",
            req("PUT", "/state/app/config", &[&fence, "no colon here"], b"x"),
            Status(400),
        ),
        (
            "a 1 MiB header",
            req("GET", "/leader", &[&big_header], b""),
            Status(431),
        ),
        (
            "200 headers",
            req("GET", "/leader", &many, b""),
            Status(431),
        ),
        (
            "a term that is not ASCII",
            req(
                "PUT",
                "/state/app/config",
                &["x-ha-term: \u{e9}t\u{e9}"],
                b"x",
            ),
            Json(400, "bad_request"),
        ),
        (
            "a term beyond u64",
            req(
                "PUT",
                "/state/app/config",
                &["x-ha-term: 18446744073709551616"],
                b"x",
            ),
            Json(400, "bad_request"),
        ),
        (
            "a negative term",
            req("PUT", "/state/app/config", &["x-ha-term: -1"], b"x"),
            Json(400, "bad_request"),
        ),
        (
            "If-Match: *",
            req("PUT", "/state/app/config", &[&fence, "if-match: *"], b"x"),
            Json(400, "bad_request"),
        ),
        (
            "If-Match of version 0",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "if-match: \"0\""],
                b"x",
            ),
            Json(400, "bad_request"),
        ),
        (
            "If-None-Match with a version",
            req(
                "PUT",
                "/state/app/config",
                &[&fence, "if-none-match: \"3\""],
                b"x",
            ),
            Json(400, "bad_request"),
        ),
        (
            "a NUL in a header value",
            req("PUT", "/state/app/config", &[&fence, "x-evil: a\0b"], b"x"),
            Status(400),
        ),
        // Keys shaped like paths out of the store.
        (
            "a traversal key",
            req("PUT", "/state/../../etc/passwd", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a percent-encoded traversal key",
            req("PUT", "/state/%2e%2e/%2e%2e/etc/passwd", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "an encoded slash and dots",
            req("PUT", "/state/app%2F..%2F..%2Fx", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a dot segment",
            req("PUT", "/state/app/.", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "an empty key",
            req("PUT", "/state/", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a NUL in a key",
            req("PUT", "/state/a%00b", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a backslash in a key",
            req("PUT", "/state/a%5Cb", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a 201-byte key",
            req("PUT", &long_key, &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a non-ASCII key",
            req("PUT", "/state/caf%C3%A9", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a list prefix with an empty segment",
            req("GET", "/state?prefix=a//b", &[], b""),
            Json(400, "invalid_key"),
        ),
        (
            "a list prefix climbing out",
            req("GET", "/state?prefix=../x", &[], b""),
            Json(400, "invalid_key"),
        ),
        (
            "a traversal job id",
            req("PUT", "/jobs/..%2F..%2Fetc/graph", &[&fence], b"x"),
            Json(400, "invalid_job_id"),
        ),
        (
            "a dot-dot job id",
            req("PUT", "/jobs/../graph", &[&fence], b"x"),
            Json(400, "invalid_job_id"),
        ),
        (
            "a checkpoint id that is a path",
            req("PUT", "/jobs/j1/checkpoints/..%2F1", &[&fence], b"x"),
            Json(400, "bad_request"),
        ),
        (
            "a checkpoint id beyond u64",
            req(
                "PUT",
                "/jobs/j1/checkpoints/99999999999999999999999",
                &[&fence],
                b"x",
            ),
            Json(400, "bad_request"),
        ),
        // Invalid UTF-8.
        ("raw invalid UTF-8 in the path", raw_utf8, Status(400)),
        (
            "percent-encoded invalid UTF-8 in a key",
            req("PUT", "/state/%ff%fe", &[&fence], b"x"),
            Json(400, "invalid_key"),
        ),
        (
            "a job result that is not UTF-8",
            req("PUT", "/jobs/j1/result", &[&fence], b"\xff\xfe{}"),
            Json(400, "bad_request"),
        ),
        (
            "a checkpoint counter that is not UTF-8",
            req("PUT", "/jobs/j1/counter", &[&fence], b"\xff"),
            Json(400, "bad_request"),
        ),
        (
            "invalid UTF-8 in a query",
            req("GET", "/leader?wait=%ff", &[], b""),
            Json(400, "bad_request"),
        ),
        // Not what the API speaks.
        (
            "PATCH",
            req("PATCH", "/state/app/config", &[&fence], b"x"),
            Json(405, "method_not_allowed"),
        ),
        (
            "a 100 KB request line",
            req("GET", &long_line, &[], b""),
            Status(414),
        ),
        ("an HTTP/2 preface", h2_preface, RefusedOrClosed),
        ("a TLS ClientHello", tls_hello, RefusedOrClosed),
    ];

    let mut failures = Vec::new();
    for (name, raw, want) in cases {
        let answer = send_raw(port, raw, Duration::from_secs(5));
        let ok = match want {
            Json(status, code) => {
                answer.status == Some(status)
                    && serde_json::from_str::<serde_json::Value>(&answer.body).is_ok_and(|v| {
                        v["error"] == code && v["message"].as_str().is_some_and(|m| !m.is_empty())
                    })
            }
            Status(status) => answer.status == Some(status),
            RefusedOrClosed => matches!(answer.status, None | Some(400)),
        };
        if !ok {
            failures.push(format!("{name}: wanted {want:?}, got {answer:?}"));
        }
        assert!(
            s.is_running(),
            "the sidecar died on {name}:\n{}",
            s.log_text()
        );
    }
    assert!(
        failures.is_empty(),
        "{} case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Both lengths on a keep-alive connection, with a request smuggled in
    // behind the chunked body: one 400 that says it closes, then the close;
    // the smuggled write never runs (the snapshot below).
    let smuggle = format!(
        "PUT /state/app/config HTTP/1.1\r\nhost: x\r\n{fence}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nPUT /state/app/config HTTP/1.1\r\nhost: x\r\n{fence}\r\ncontent-length: 8\r\n\r\nsmuggled"
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(smuggle.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = Instant::now();
    let mut got = Vec::new();
    let closed = loop {
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(
        closed && sent.elapsed() < Duration::from_secs(5),
        "the connection stayed open after an ambiguous length: {text}"
    );
    assert!(text.starts_with("http/1.1 400"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.contains("\"bad_request\""), "{text}");
    assert_eq!(text.matches("http/1.1 ").count(), 1, "{text}");

    // Slow clients: a hundred connections stuck in their headers, and twenty
    // stuck halfway through a body, must not keep others from being served,
    // and a body that never arrives writes nothing.
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..120 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let partial = if i < 100 {
            format!("PUT /state/slow/k{i} HTTP/1.1\r\nhost: x\r\n{fence}\r\ncontent-le")
        } else {
            format!(
                "PUT /state/slow/k{i} HTTP/1.1\r\nhost: x\r\n{fence}\r\ncontent-length: 10\r\n\r\nhalf!"
            )
        };
        c.write_all(partial.as_bytes()).unwrap();
        slow.push(c);
    }
    for _ in 0..20 {
        let r = request_within(
            port,
            "GET",
            "/leader/self",
            &[],
            b"",
            Duration::from_secs(10),
        )
        .expect("served while slow clients hold connections");
        assert_eq!(r.status, 200);
        let r = request_within(
            port,
            "GET",
            "/state/app/config",
            &[],
            b"",
            Duration::from_secs(10),
        )
        .expect("a read served while slow clients hold connections");
        assert_eq!(r.body, b"v1");
    }
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));

    assert!(s.is_running(), "the sidecar died:\n{}", s.log_text());
    assert_eq!(s.get("/healthz").unwrap().status, 200);
    assert!(s.leads(), "still the leader");
    let after = snapshot(&s, &dirs);
    assert_eq!(after.keys, before.keys, "the state changed");
    assert_eq!(
        after.files, before.files,
        "the state or storage dir changed"
    );
}

// ------------------------------------------------------------ refused starts

/// A config for the file backend with everything it could create in `dir`:
/// the granted directory `fs`, the storage dir `storage`, the compile cache
/// `cache`.
fn contained_config(dir: &Path, port: u16, plugin_path: &Path) -> String {
    format!(
        "member: {{id: s1, address: 'http://s1.example:8081'}}\nhttp: {{listen: '127.0.0.1:{port}'}}\nplugin:\n  path: '{}'\n  cache-dir: cache\n  settings: {{cluster-id: test, poll-interval-ms: 20}}\ncapabilities: {{filesystem: {{dir: fs}}}}\nstorage: {{dir: storage}}\n{TIMING}",
        plugin_path.display()
    )
    .replace("cache-dir: cache", &format!("cache-dir: '{}'", dir.join("cache").display()))
}

/// A part of the error line (between `: `) that appears twice: a cause
/// printed again by its wrapper, or a key named twice.
fn said_twice(out: &str) -> Option<String> {
    let line = out.lines().find(|l| l.starts_with("error: "))?;
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    parts
        .iter()
        .enumerate()
        .find(|(i, p)| p.len() >= 6 && parts[i + 1..].contains(p))
        .map(|(_, p)| p.to_string())
}

/// `validate` and `run` both refuse `config`, exit 1 (no crash), say every
/// needle, no part of the message twice, and leave no directory, compiled
/// plugin or listener behind.
fn refused_cleanly(dir: &Path, config: &Path, port: u16, needles: &[&str]) -> Result<(), String> {
    for cmd in ["validate", "run"] {
        let (code, out) = run_cli(&[cmd, &config.to_string_lossy()]);
        if code != 1 || out.contains("panicked") {
            return Err(format!("`{cmd}` exited {code}:\n{out}"));
        }
        for n in needles {
            if !out.contains(n) {
                return Err(format!("`{cmd}` does not say {n:?}:\n{out}"));
            }
        }
        if let Some(twice) = said_twice(&out) {
            return Err(format!("`{cmd}` says {twice:?} twice:\n{out}"));
        }
        for left in ["fs", "storage"] {
            if dir.join(left).exists() {
                return Err(format!("`{cmd}` created {left}/:\n{out}"));
            }
        }
        let cached = std::fs::read_dir(dir.join("cache")).map_or(0, |d| d.count());
        if cached != 0 {
            return Err(format!(
                "`{cmd}` left {cached} file(s) in the compile cache:\n{out}"
            ));
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(format!("`{cmd}` left port {port} bound"));
        }
    }
    Ok(())
}

#[test]
fn malformed_configs_are_refused_with_the_key_and_leave_nothing_behind() {
    let base_dir = Cluster::new();
    let port = free_port();
    let file = plugin("ha_plugin_file");
    let good = contained_config(base_dir.path(), port, &file);
    // The base of the table is a config that works.
    let ok = base_dir.write_config("ok", &good);
    let (code, out) = run_cli(&["validate", &ok.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");

    let huge = "a".repeat(5 << 20);
    let not_utf8 =
        String::from_utf8_lossy(b"member: {id: \xff\xfe}\n").replace('\u{fffd}', "\u{80}");
    let swap = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} is not in the base config");
        good.replacen(from, to, 1)
    };
    // (what, config text, needles)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("an empty file", String::new(), vec!["bad.yaml"]),
        (
            "a list, not a mapping",
            "- member\n- plugin\n".into(),
            vec!["bad.yaml"],
        ),
        ("5 MiB of one scalar", huge, vec!["bad.yaml"]),
        (
            "tabs for indentation",
            good.replace("\n  path", "\n\tpath"),
            vec!["bad.yaml"],
        ),
        ("control characters", not_utf8, vec!["bad.yaml"]),
        (
            "a duplicate key",
            format!("{good}member: {{id: s2}}\n"),
            vec!["duplicate"],
        ),
        (
            "no member",
            good.lines().skip(1).map(|l| format!("{l}\n")).collect(),
            vec!["member"],
        ),
        (
            "a 129-character id",
            swap("id: s1", &format!("id: {}", "x".repeat(129))),
            vec!["member.id"],
        ),
        (
            "a slash in the id",
            swap("id: s1", "id: 'a/b'"),
            vec!["member.id"],
        ),
        (
            "a port beyond 65535",
            swap(&format!(":{port}'"), ":70000'"),
            vec!["http.listen"],
        ),
        (
            "a size without a number",
            swap("http: {", "http: {max-body: lots, "),
            vec!["http.max-body"],
        ),
        (
            "a two-hour long poll",
            swap("http: {", "http: {max-wait: 2h, "),
            vec!["http.max-wait"],
        ),
        (
            "a cap of 3 connections",
            swap("http: {", "http: {max-connections: 3, "),
            vec!["http.max-connections", "between 16"],
        ),
        (
            "a plugin path that is a directory",
            swap(&file.display().to_string(), "/"),
            vec!["plugin.path"],
        ),
        (
            "a malformed sha256",
            swap("  cache-dir", "  sha256: xyz\n  cache-dir"),
            vec!["plugin.sha256"],
        ),
        (
            "a 512 KiB memory limit",
            swap("  cache-dir", "  memory-limit: 512KiB\n  cache-dir"),
            vec!["plugin.memory-limit"],
        ),
        (
            "a 1 ms call timeout",
            swap("  cache-dir", "  call-timeout: 1ms\n  cache-dir"),
            vec!["plugin.call-timeout"],
        ),
        (
            "a restart backoff above its maximum",
            swap(
                "  cache-dir",
                "  restart-backoff: 5s\n  restart-backoff-max: 1s\n  cache-dir",
            ),
            vec!["plugin.restart-backoff"],
        ),
        (
            "a nested plugin setting",
            swap("poll-interval-ms: 20", "poll-interval-ms: 20, deep: {a: b}"),
            vec!["plugin.settings.deep"],
        ),
        (
            "a 5 ms retry period",
            swap("retry-period: 400ms", "retry-period: 5ms"),
            vec!["timing.retry-period"],
        ),
        (
            "a negative lease",
            swap("lease: 2s", "lease: -2s"),
            vec!["timing.lease"],
        ),
        (
            "a hundred-day lease",
            swap("lease: 2s", "lease: 100days"),
            vec!["timing.lease"],
        ),
        (
            "a bare number",
            swap("resign-holdoff: 3s", "resign-holdoff: 3"),
            vec!["timing.resign-holdoff"],
        ),
        (
            "an object store",
            swap(
                "storage: {dir: storage}",
                "storage: {dir: 's3://bucket/ha'}",
            ),
            vec!["storage.dir", "s3://"],
        ),
        (
            "a 1 MiB inline limit",
            swap(
                "storage: {dir: storage}",
                "storage: {dir: storage, inline-limit: 1MiB}",
            ),
            vec!["storage.inline-limit"],
        ),
        (
            "no retained checkpoints",
            format!("{good}jobs: {{retained-checkpoints: 0}}\n"),
            vec!["jobs.retained-checkpoints"],
        ),
        (
            "cleanup attempts that are not a number",
            format!("{good}jobs: {{cleanup: {{attempts: lots}}}}\n"),
            vec!["jobs.cleanup.attempts"],
        ),
        (
            "an empty ZooKeeper quorum",
            swap(
                "capabilities: {filesystem: {dir: fs}}",
                "capabilities: {filesystem: {dir: fs}, zookeeper: {quorum: ''}}",
            ),
            vec!["capabilities.zookeeper.quorum"],
        ),
        (
            "a ZooKeeper session shorter than the renew deadline",
            swap(
                "capabilities: {filesystem: {dir: fs}}",
                "capabilities: {filesystem: {dir: fs}, zookeeper: {quorum: '127.0.0.1:1', client: {session-timeout: 1s}}}",
            ),
            vec!["renew-deadline"],
        ),
        (
            "an unknown ACL",
            swap(
                "capabilities: {filesystem: {dir: fs}}",
                "capabilities: {filesystem: {dir: fs}, zookeeper: {quorum: '127.0.0.1:1', client: {acl: world}}}",
            ),
            vec!["capabilities.zookeeper.client.acl"],
        ),
        (
            "a missing Flink config",
            format!("flink-config: missing.yaml\n{good}"),
            vec!["missing.yaml"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, needles) in &cases {
        let dir = Cluster::new();
        let cfg = dir.write_config("bad", text);
        if let Err(e) = refused_cleanly(dir.path(), &cfg, port, needles) {
            failures.push(format!("{what}: {e}"));
        }
    }
    // A config that is a directory, or not UTF-8 at all.
    let dir = Cluster::new();
    let as_dir = dir.path().join("bad.yaml");
    std::fs::create_dir(&as_dir).unwrap();
    if let Err(e) = refused_cleanly(dir.path(), &as_dir, port, &["cannot read config file"]) {
        failures.push(format!("a directory: {e}"));
    }
    let dir = Cluster::new();
    let binary = dir.path().join("bad.yaml");
    std::fs::write(&binary, b"member: {id: \xff\xfe\x00}\n").unwrap();
    if let Err(e) = refused_cleanly(dir.path(), &binary, port, &["bad.yaml"]) {
        failures.push(format!("bytes that are not UTF-8: {e}"));
    }
    assert!(
        failures.is_empty(),
        "{} case(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn corrupt_truncated_and_foreign_plugins_are_refused_and_leave_nothing_behind() {
    let good = std::fs::read(plugin("ha_plugin_file")).unwrap();
    let mut corrupt = good.clone();
    for b in &mut corrupt[8..72] {
        *b ^= 0xA5;
    }
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "an empty file",
            Vec::new(),
            vec!["is not a WebAssembly component"],
        ),
        (
            "half a plugin",
            good[..good.len() / 2].to_vec(),
            vec!["is not a WebAssembly component"],
        ),
        (
            "a corrupted plugin",
            corrupt,
            vec!["is not a WebAssembly component"],
        ),
        (
            "a text file",
            b"#!/bin/sh\necho hello\n".to_vec(),
            vec!["is not a WebAssembly component"],
        ),
        (
            "a core module, not a component",
            core_module,
            vec!["is not a WebAssembly component"],
        ),
        (
            "a plugin of another contract version",
            std::fs::read(plugin("fixture_contract_v1")).unwrap(),
            vec!["ha:sidecar@1.0.0", "rebuild the plugin"],
        ),
        (
            "a plugin asking for sockets without the grant",
            std::fs::read(plugin("fixture_net_user")).unwrap(),
            vec!["wasi:sockets/", "capabilities.tcp"],
        ),
    ];
    let port = free_port();
    let mut failures = Vec::new();
    for (what, bytes, needles) in &cases {
        let dir = Cluster::new();
        let path = dir.path().join("plugin.wasm");
        std::fs::write(&path, bytes).unwrap();
        let cfg = dir.write_config("bad", &contained_config(dir.path(), port, &path));
        let mut all = vec!["plugin.path"];
        all.extend(needles);
        if let Err(e) = refused_cleanly(dir.path(), &cfg, port, &all) {
            failures.push(format!("{what}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
