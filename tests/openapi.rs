//! The OpenAPI document (`docs/openapi.yaml`) against real sidecars on the
//! file backend: the sidecar serves the repository's bytes; schemathesis
//! (from PyPI, installed by `scripts/setup.sh`) drives every documented
//! operation against a leader and a standby and finds no server error, no
//! undocumented status, content type, header or body; and every refusal the
//! document gives an example of, provoked on purpose, changes no state.
//!
//! `OPENAPI_SEED=<the printed seed>` replays a schemathesis run;
//! `OPENAPI_EXAMPLES=<n>` generates n cases per operation instead of 20;
//! `SCHEMATHESIS=<path to st>` runs another install;
//! `OPENAPI_REPORTS=<dir>` keeps its reports (JSON summary, HAR of every
//! exchange) there.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Per operation and run, unless `OPENAPI_EXAMPLES` says otherwise: bounds
/// how long the runs take (about 35 s for all three on a 2-core machine).
const MAX_EXAMPLES: &str = "20";
/// What schemathesis checks on every response.
/// (`unsupported_method`: a method the document does not list for a path is
/// 405 with `Allow`.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method";
/// Small, so that a 413 is cheap to provoke.
const MAX_BODY: usize = 4096;

fn document_path() -> PathBuf {
    repo_root().join("docs/openapi.yaml")
}

fn document() -> serde_yaml::Value {
    let text = std::fs::read_to_string(document_path()).expect("read docs/openapi.yaml");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// The `st` to run: `SCHEMATHESIS`, else the one `scripts/setup.sh`
/// installs, else one on PATH. Missing, the test fails with how to install it.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let installed = repo_root().join(".cache/schemathesis/bin/st");
    if installed.is_file() {
        return installed;
    }
    let on_path = Command::new("st").arg("--version").output();
    match on_path {
        Ok(out) if out.status.success() => PathBuf::from("st"),
        _ => panic!(
            "schemathesis is not installed: run ./scripts/test.sh (its ensure_schemathesis installs it into .cache/schemathesis), \
             or `pip install schemathesis` and put `st` on PATH, or set SCHEMATHESIS to its `st`"
        ),
    }
}

/// A sidecar of the test cluster: long polls capped at 200 ms (schemathesis
/// sends `wait=` freely), a small `http.max-body`, results kept after their
/// cleanup, and `election` as given.
fn start(cluster: &Cluster, id: &str, election: &str) -> Sidecar {
    cluster.start_with(id, |port| {
        cluster
            .file_config(
                id,
                port,
                &format!(
                    "jobs: {{delete-result-on-commit: false}}\nelection: {{candidacy: {election}}}\n"
                ),
            )
            .replace(
                "http: {",
                &format!("http: {{max-wait: 200ms, max-body: {MAX_BODY}, "),
            )
    })
}

fn wait_until_known(s: &Sidecar, term: u64) {
    wait_for(
        &format!("{} to see term {term}", s.id),
        Duration::from_secs(10),
        || (s.leader()["term"].as_u64() == Some(term)).then_some(()),
    );
}

#[test]
fn the_sidecar_serves_the_document_in_the_repository() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    let r = s.get("/openapi.yaml").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    assert_eq!(
        r.body,
        std::fs::read(document_path()).unwrap(),
        "the served document differs from docs/openapi.yaml"
    );
}

/// A method a documented path does not take is 405 `method_not_allowed`
/// with the `Allow` header RFC 9110 requires, from the route table and from
/// the handlers that tell methods apart alike (the job routes answered 404,
/// and no 405 carried `Allow`, until schemathesis's unsupported_method
/// check said so).
#[test]
fn a_method_a_path_does_not_take_is_405_with_allow() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    for (method, path, allow) in [
        ("POST", "/leader", "GET"),
        ("GET", "/leader/resign", "POST"),
        ("GET", "/candidacy/c1", "PUT, DELETE"),
        ("POST", "/state/k", "GET, PUT, DELETE"),
        ("QUERY", "/state/bad%20key", "GET, PUT, DELETE"),
        ("POST", "/leader/components/dispatcher", "GET, PUT, DELETE"),
        ("PATCH", "/leader/components/bad%20name", "GET, PUT, DELETE"),
        ("DELETE", "/jobs/j1/graph", "GET, PUT"),
        ("POST", "/jobs/j1/counter", "GET, PUT"),
        ("DELETE", "/jobs/j1/result", "GET, PUT"),
        ("PUT", "/jobs/j1/checkpoints", "GET"),
        ("PUT", "/jobs/j1/checkpoints/latest", "GET"),
        ("DELETE", "/jobs/j1/checkpoints/3", "GET, PUT"),
    ] {
        let r = request(s.port, method, path, &[], b"").unwrap();
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"], "method_not_allowed", "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}

/// Whether `v` has the `type` (or is null where `nullable`) and is one of
/// the `enum` of a (flat) schema of the document.
fn fits_schema(v: &Value, schema: &serde_yaml::Value) -> bool {
    if v.is_null() {
        return schema["nullable"].as_bool() == Some(true);
    }
    let typed = match schema["type"].as_str() {
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("boolean") => v.is_boolean(),
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        _ => true,
    };
    let listed = match schema["enum"].as_sequence() {
        Some(values) => values.iter().any(|e| e.as_str() == v.as_str()),
        None => true,
    };
    typed && listed
}

/// The lines of a chunked body read so far from `conn` (after the head),
/// at least `n` of them.
fn stream_lines(conn: &mut std::net::TcpStream, raw: &mut Vec<u8>, n: usize) -> Vec<Value> {
    use std::io::Read;
    loop {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            // Each chunk is "<hex size>\r\n<data>\r\n".
            let mut body = Vec::new();
            let mut rest = &raw[end + 4..];
            while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                        .expect("a chunk size");
                if rest.len() < eol + 2 + size + 2 {
                    break;
                }
                body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
                rest = &rest[eol + 2 + size + 2..];
            }
            let lines: Vec<Value> = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).expect("a stream line is JSON"))
                .collect();
            if lines.len() >= n {
                return lines;
            }
        }
        let mut buf = [0u8; 4096];
        let got = conn.read(&mut buf).expect("read the candidacy stream");
        assert!(
            got > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(raw)
        );
        raw.extend_from_slice(&buf[..got]);
    }
}

/// POST /candidacy answers with a stream that lasts while the candidacy is
/// open, which schemathesis cannot take: checked here against the
/// document, with renewing and closing the candidacy.
#[test]
fn the_candidacy_stream_is_as_documented() {
    use std::io::Write;
    let cluster = Cluster::new();
    let s = start(&cluster, "c1", "client");
    let doc = document();
    let post = &doc["paths"]["/candidacy"]["post"]["responses"]["200"]["content"];
    let (media, content) = post
        .as_mapping()
        .and_then(|m| m.iter().next())
        .expect("a documented stream");
    let one_of = content["schema"]["oneOf"].as_sequence().expect("oneOf");
    let line = &doc["components"]["schemas"]["CandidacyLine"];
    assert_eq!(
        one_of[0]["$ref"].as_str(),
        Some("#/components/schemas/CandidacyLine")
    );
    let closed = &one_of[1]["properties"]["closed"];

    let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"POST /candidacy HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let lines = stream_lines(&mut conn, &mut raw, 2);
    let head = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-type: {}", media.as_str().unwrap())),
        "{head}"
    );
    for (i, l) in lines.iter().enumerate() {
        for required in line["required"].as_sequence().unwrap() {
            let name = required.as_str().unwrap();
            assert!(l.get(name).is_some(), "line {i} has no {name}: {l}");
        }
        for (name, schema) in line["properties"].as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            if let Some(v) = l.get(name) {
                assert!(
                    fits_schema(v, schema),
                    "line {i}: {name} = {v} is not as documented"
                );
            }
        }
    }
    let id = lines[0]["candidacy"]
        .as_str()
        .expect("the first line names the candidacy");
    assert!(lines[0]["ttl_ms"].is_u64(), "{}", lines[0]);
    let renew = request(s.port, "PUT", &format!("/candidacy/{id}"), &[], b"").unwrap();
    assert_eq!(renew.status, 204, "{}", renew.text());
    let close = request(s.port, "DELETE", &format!("/candidacy/{id}"), &[], b"").unwrap();
    assert_eq!(close.status, 204, "{}", close.text());
    // Heartbeat lines may come first; the stream's read timeout bounds the wait.
    let mut seen = lines.len();
    let last = loop {
        let lines = stream_lines(&mut conn, &mut raw, seen + 1);
        seen = lines.len();
        let last = lines.last().unwrap();
        if last.get("closed").is_some() {
            break last.clone();
        }
        assert!(seen < 1000, "no closing line after {seen} lines");
    };
    assert!(fits_schema(&last["closed"], closed), "{last}");
    assert_eq!(last["closed"], "closed");
    let gone = request(s.port, "PUT", &format!("/candidacy/{id}"), &[], b"").unwrap();
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(gone.json()["error"], "no_candidacy");
}

/// What one schemathesis run did, from its JSON report and HAR file.
struct Run {
    operations: u64,
    test_cases: u64,
    requests: u64,
    /// Check results (each check on each response counts once).
    checks: u64,
    failures: Vec<Value>,
    /// (method, path as sent, status) of every request.
    exchanges: Vec<(String, String, u16)>,
}

/// Runs schemathesis against `s` with the extra `args`; fails on any
/// failure it reports. `name` names the run's report directory.
fn run_schemathesis(
    st: &Path,
    s: &Sidecar,
    name: &str,
    args: &[&str],
    seed: u64,
    out: &Path,
) -> Run {
    let dir = out.join(name);
    let examples = std::env::var("OPENAPI_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    let config = repo_root().join("tests/schemathesis.toml");
    std::fs::create_dir_all(&dir).expect("create the report dir");
    let output = Command::new(st)
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(document_path())
        .args(["--url", &format!("http://127.0.0.1:{}", s.port)])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--continue-on-failure"])
        .args(args)
        .args(["--report", "json,har,ndjson", "--report-json-path"])
        .arg(dir.join("report.json"))
        .arg("--report-har-path")
        .arg(dir.join("exchanges.har"))
        .arg("--report-ndjson-path")
        .arg(dir.join("events.ndjson"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report_path = dir.join("report.json");
    let report: Value = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            panic!(
                "schemathesis left no JSON report at {}:\n{stdout}\n{stderr}",
                report_path.display()
            )
        });
    let har_path = dir.join("exchanges.har");
    let har: Value = std::fs::read(&har_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("schemathesis left no HAR file at {}", har_path.display()));
    let exchanges: Vec<(String, String, u16)> = har["log"]["entries"]
        .as_array()
        .expect("HAR entries")
        .iter()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let path = url
                .split_once(&format!("127.0.0.1:{}", s.port))
                .map_or(url, |(_, p)| p);
            let path = path.split('?').next().unwrap_or_default().to_string();
            (
                e["request"]["method"].as_str().unwrap_or_default().into(),
                path,
                e["response"]["status"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect();
    let run = Run {
        operations: report["operations"]["tested"].as_u64().unwrap_or(0),
        test_cases: report["test_cases"]["generated"].as_u64().unwrap_or(0),
        requests: exchanges.len() as u64,
        checks: 0,
        failures: report["failures"].as_array().cloned().unwrap_or_default(),
        exchanges,
    };
    let failed_cases = report["test_cases"]["with_failures"].as_u64().unwrap_or(0);
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    assert!(
        output.status.success() && run.failures.is_empty() && failed_cases == 0 && errors == 0,
        "schemathesis against {} (seed {seed}; OPENAPI_SEED={seed} replays it) found failures: {}\nerrors: {}\n{stdout}\n{stderr}",
        s.id,
        serde_json::to_string_pretty(&run.failures).unwrap(),
        report["errors"]
    );
    Run {
        checks: checks_run(&dir.join("events.ndjson")),
        ..run
    }
}

/// How many check results the run's event log holds (each check on each
/// response of each scenario once); a failed one fails the run already.
fn checks_run(events: &Path) -> u64 {
    let text = std::fs::read_to_string(events).unwrap_or_else(|e| {
        panic!(
            "schemathesis left no event log at {}: {e}",
            events.display()
        )
    });
    let mut n = 0;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("an event is JSON");
        if let Some(checks) = event["ScenarioFinished"]["recorder"]["checks"].as_object() {
            for results in checks.values() {
                for r in results.as_array().expect("check results") {
                    assert_eq!(r["status"], "success", "a failed check: {r}");
                    n += 1;
                }
            }
        }
    }
    n
}

/// The document's operations as (method, path template).
fn operations(doc: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("a path item") {
            let m = method.as_str().unwrap();
            if ["get", "put", "post", "delete"].contains(&m) {
                ops.push((m.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    ops
}

/// Whether `path` (as sent, percent-encoded) fits `template`.
fn fits(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// The operation a request was for: the most concrete path that fits wins
/// (`/checkpoints/latest` over `/checkpoints/{id}`), and a method that path
/// does not take is no operation's (schemathesis's probe for a 405).
fn operation_of<'a>(
    ops: &'a [(String, String)],
    method: &str,
    path: &str,
) -> Option<&'a (String, String)> {
    let template = ops
        .iter()
        .map(|(_, t)| t)
        .filter(|t| fits(t, path))
        .min_by_key(|t| t.matches('{').count())?;
    ops.iter().find(|(m, t)| m == method && t == template)
}

fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_000
}

#[test]
fn schemathesis_finds_a_leader_and_a_standby_as_documented() {
    let st = schemathesis();
    let seed = std::env::var("OPENAPI_SEED")
        .ok()
        .map(|s| s.parse().expect("OPENAPI_SEED is a whole number"))
        .unwrap_or_else(random_seed);
    let cluster = Cluster::new();
    let leader = start(&cluster, "s1", "always");
    wait_for("s1 to lead", Duration::from_secs(20), || {
        leader.leads().then_some(())
    });
    let standby = start(&cluster, "s2", "always");
    wait_until_known(&standby, leader.term());
    let doc = document();
    let ops = operations(&doc);
    let reports = std::env::var_os("OPENAPI_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cluster.path().join("schemathesis"));
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    let mut totals = (0, 0, 0, 0);
    let term = format!("X-HA-Term: {}", leader.term());
    // First the leader with its own term on every request, so that writes
    // are accepted too (generated terms are all refused); without
    // POST /leader/resign and /leader/handover, so that it goes on leading throughout, and
    // without PUT /jobs/{job}/result, which would end the jobs the other
    // writes are for (a job with a result takes no more HA data). Then the
    // whole document against the standby, then against the leader, which
    // resigns during its run (POST /leader/resign is one of the operations).
    let runs: [(&Sidecar, &str, Vec<&str>); 3] = [
        (
            &leader,
            "leader-with-its-term",
            vec![
                "--header",
                &term,
                "--exclude-path",
                "/leader/resign",
                "--exclude-path",
                "/leader/handover",
                "--exclude-operation-id",
                "putResult",
            ],
        ),
        (&standby, "standby", vec![]),
        (&leader, "leader", vec![]),
    ];
    for (s, name, args) in &runs {
        let run = run_schemathesis(&st, s, name, args, seed, &reports);
        println!(
            "schemathesis against the {name} ({}, seed {seed}): {} operations, {} test cases, {} requests, {} checks, {} failures",
            s.id,
            run.operations,
            run.test_cases,
            run.requests,
            run.checks,
            run.failures.len()
        );
        let expected = ops.len() - if args.is_empty() { 0 } else { 3 };
        assert_eq!(
            run.operations, expected as u64,
            "every documented operation is tested"
        );
        for (method, path, status) in &run.exchanges {
            if let Some(op) = operation_of(&ops, method, path) {
                seen.entry(op.clone()).or_default().insert(*status);
            }
        }
        totals.3 += run.checks;
        totals.0 += run.test_cases;
        totals.1 += run.requests;
        totals.2 += run.failures.len();
    }
    // Which documented statuses the runs produced: a healthy file backend
    // never answers 503 to a write, so not all of them, but every operation
    // must have been answered.
    let mut documented = 0;
    let mut produced = 0;
    for (method, template) in &ops {
        let responses =
            &doc["paths"][template.as_str()][method.to_lowercase().as_str()]["responses"];
        let statuses: BTreeSet<u16> = responses
            .as_mapping()
            .expect("responses")
            .keys()
            .map(|k| k.as_str().unwrap().parse().unwrap())
            .collect();
        let got = seen
            .get(&(method.clone(), template.clone()))
            .cloned()
            .unwrap_or_default();
        assert!(!got.is_empty(), "no answer to {method} {template}");
        let undocumented: Vec<_> = got.difference(&statuses).collect();
        assert!(
            undocumented.is_empty(),
            "{method} {template} answered {undocumented:?}, which the document does not list"
        );
        documented += statuses.len();
        produced += statuses.intersection(&got).count();
        println!("  {method} {template}: documented {statuses:?}, produced {got:?}");
    }
    println!(
        "schemathesis, all runs: {} operations, {} test cases, {} requests, {} checks, {} failures; {produced} of {documented} documented statuses produced",
        ops.len(),
        totals.0,
        totals.1,
        totals.3,
        totals.2
    );
}

/// Every key's value and version, the component entries and the leader:
/// what a refused request must leave as it was.
fn snapshot(s: &Sidecar) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let keys = s.get("/state?prefix=").unwrap().json()["keys"].clone();
    for key in keys.as_array().expect("keys") {
        let key = key.as_str().unwrap();
        let shown = match key.strip_prefix("leader-info/") {
            Some(c) => s.get(&format!("/leader/components/{c}")).unwrap().text(),
            None => {
                let r = s.get(&format!("/state/{key}")).unwrap();
                format!(
                    "{} {:?} {}",
                    r.status,
                    r.header("etag"),
                    String::from_utf8_lossy(&r.body)
                )
            }
        };
        out.insert(key.to_string(), shown);
    }
    let v = s.leader();
    out.insert(
        "(leader)".into(),
        format!("{} term {}", v["leader"]["id"], v["term"]),
    );
    out.insert("(recovery)".into(), s.get("/recovery").unwrap().text());
    out.insert(
        "(components)".into(),
        s.get("/leader/components").unwrap().text(),
    );
    out
}

/// The error codes the document gives examples of, per operation and
/// status: `example.error` or `examples.*.value.error`.
fn refusal_examples(doc: &serde_yaml::Value) -> Vec<(String, String, u16, String)> {
    let resolve = |v: &serde_yaml::Value| -> serde_yaml::Value {
        match v["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                doc["components"]["responses"][name].clone()
            }
            None => v.clone(),
        }
    };
    let mut out = Vec::new();
    for (method, template) in operations(doc) {
        if method == "GET" {
            continue;
        }
        let responses =
            &doc["paths"][template.as_str()][method.to_lowercase().as_str()]["responses"];
        for (status, response) in responses.as_mapping().unwrap() {
            let status: u16 = status.as_str().unwrap().parse().unwrap();
            if !(400..500).contains(&status) {
                continue;
            }
            let media = &resolve(response)["content"]["application/json"];
            let mut codes = Vec::new();
            if let Some(code) = media["example"]["error"].as_str() {
                codes.push(code.to_string());
            }
            if let Some(examples) = media["examples"].as_mapping() {
                for (_, e) in examples {
                    codes.extend(e["value"]["error"].as_str().map(String::from));
                }
            }
            assert!(
                !codes.is_empty(),
                "{method} {template} {status} has no example error code"
            );
            for code in codes {
                out.push((method.clone(), template.clone(), status, code));
            }
        }
    }
    out
}

/// Refusals the document lists that this test does not provoke, and why:
/// (error code, path template, why).
const NOT_PROVOKED: &[(&str, &str, &str)] = &[
    (
        "invalid",
        "/state/{key}",
        "the file backend refuses no key or value",
    ),
    (
        "invalid",
        "/leader/components/{component}",
        "the file backend refuses no key or value",
    ),
    (
        "version_conflict",
        "/jobs/{job}/result",
        "only when two records of one job's result race",
    ),
];

/// A request meant to be refused with `code` by `method template`.
struct Refusal {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Only to the leader's sidecar (the refusal needs a current term), or
    /// only to the others (the leader would do it).
    to: To,
}

#[derive(PartialEq)]
enum To {
    All,
    Leader,
    NotLeader,
}

/// How to provoke `code` on `method template`, or None (see `NOT_PROVOKED`).
/// A refusal the document gains (a 401 for a write without the bearer
/// token, a handover to a member that is no live candidate) gets its way
/// here; until then the test fails, naming it.
/// `stale` is a deposed leader's term, `current` the leader's.
fn refusal(method: &str, template: &str, code: &str, stale: u64, current: u64) -> Option<Refusal> {
    let jobs = template.starts_with("/jobs/");
    let mut job = "j1";
    let mut key = "seed/a";
    let mut component = "dispatcher";
    let mut id = "2";
    let mut term = Some(current.to_string());
    let mut if_match = None;
    let mut query = "";
    let mut body: Vec<u8> = match template {
        "/leader/components/{component}" => {
            br#"{"address": "http://x.example", "session": "s"}"#.to_vec()
        }
        "/jobs/{job}/counter" => b"7".to_vec(),
        "/jobs/{job}/result" => b"{}".to_vec(),
        _ => b"refused".to_vec(),
    };
    let mut to = To::All;
    match code {
        "invalid_key" => key = "bad%20key",
        "invalid_component" => component = "bad%20component",
        "invalid_job_id" => job = "bad%20job",
        "bad_request" if template == "/leader/resign" => query = "?holdoff=soon",
        "bad_request" if template == "/leader/handover" => query = "?to=s2&holdoff=soon",
        "not_leader" if template == "/leader/handover" => {
            query = "?to=s2";
            to = To::NotLeader;
        }
        "not_a_live_candidate" => {
            query = "?to=nobody";
            to = To::Leader;
        }
        "bad_request" => term = Some("soon".into()),
        "term_required" => term = None,
        "not_leader" if template == "/leader/resign" => to = To::NotLeader,
        "not_leader" => term = Some(stale.to_string()),
        "candidacy_not_client" | "observer" | "no_candidacy" => {}
        "version_conflict" if template == "/jobs/{job}/checkpoints/{id}" => {
            id = "1";
            to = To::Leader;
        }
        "version_conflict" if !template.ends_with("/result") => {
            if_match = Some("\"999999\"".to_string());
            to = To::Leader;
        }
        "payload_too_large" => body = vec![b'x'; MAX_BODY + 1],
        "invalid" if jobs => job = "done",
        _ => return None,
    }
    let path = template
        .replace("{key}", key)
        .replace("{component}", component)
        .replace("{job}", job)
        .replace(
            "{id}",
            if template.starts_with("/candidacy/") {
                "nope"
            } else {
                id
            },
        )
        + query;
    let mut headers = Vec::new();
    if let Some(t) = term.filter(|_| {
        !["/leader/resign", "/leader/handover"].contains(&template)
            && !template.starts_with("/candidacy")
    }) {
        headers.push(("x-ha-term".to_string(), t));
    }
    if let Some(v) = if_match {
        headers.push(("if-match".to_string(), v));
    }
    if !["PUT", "POST"].contains(&method) {
        body.clear();
    }
    Some(Refusal {
        method: method.into(),
        path,
        headers,
        body,
        to,
    })
}

#[test]
fn the_documented_refusals_change_nothing() {
    let cluster = Cluster::new();
    let s1 = start(&cluster, "s1", "always");
    wait_for("s1 to lead", Duration::from_secs(20), || {
        s1.leads().then_some(())
    });
    let s2 = start(&cluster, "s2", "always");
    let observer = start(&cluster, "s3", "never");
    let stale = s1.term();
    wait_until_known(&s2, stale);
    // Data written under the first term, which then becomes stale.
    let t = stale.to_string();
    let term = [("x-ha-term", t.as_str())];
    for (path, body) in [
        ("/state/seed/a", b"one".as_slice()),
        ("/jobs/j1/graph", b"graph"),
        ("/jobs/j1/checkpoints/1", b"cp1"),
        (
            "/leader/components/dispatcher",
            br#"{"address": "http://s1.example:8081", "session": "x"}"#,
        ),
    ] {
        let r = request(s1.port, "PUT", path, &term, body).unwrap();
        assert!(r.status < 300, "{path}: {} {}", r.status, r.text());
    }
    // s1 is deposed and holds off; s2 leads.
    let r = request(s1.port, "POST", "/leader/resign?holdoff=60s", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("s2 to lead", Duration::from_secs(10), || {
        s2.leads().then_some(())
    });
    let current = s2.term();
    for s in [&s1, &observer] {
        wait_until_known(s, current);
    }
    let t = current.to_string();
    let term = [("x-ha-term", t.as_str())];
    for (path, body) in [
        ("/state/seed/b", b"two".as_slice()),
        ("/jobs/j1/counter", b"5"),
        ("/jobs/done/graph", b"g"),
        ("/jobs/done/result", b"{\"ok\": true}"),
        (
            "/leader/components/dispatcher",
            br#"{"address": "http://s2.example:8081", "session": "y"}"#,
        ),
    ] {
        let r = request(s2.port, "PUT", path, &term, body).unwrap();
        assert!(r.status < 300, "{path}: {} {}", r.status, r.text());
    }

    let before = snapshot(&s2);
    let doc = document();
    let mut sent = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    for (method, template, status, code) in refusal_examples(&doc) {
        let Some(r) = refusal(&method, &template, &code, stale, current) else {
            assert!(
                NOT_PROVOKED
                    .iter()
                    .any(|(c, t, _)| *c == code && *t == template),
                "the document lists {status} {code} on {method} {template}, which this test does not provoke: add a way to, or say why in NOT_PROVOKED"
            );
            skipped.insert(format!("{status} {code} on {method} {template}"));
            continue;
        };
        let targets: Vec<&Sidecar> = match (r.to, code.as_str()) {
            (_, "observer") => vec![&observer],
            (_, "candidacy_not_client") => vec![&s1, &s2],
            (To::All, _) => vec![&s1, &s2, &observer],
            (To::Leader, _) => vec![&s2],
            (To::NotLeader, _) => vec![&s1, &observer],
        };
        for s in targets {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let got = request(s.port, &r.method, &r.path, &headers, &r.body).unwrap();
            let body = got.text();
            assert_eq!(
                (got.status, got.json()["error"].as_str()),
                (status, Some(code.as_str())),
                "{} {} {:?} to {}: {body}",
                r.method,
                r.path,
                r.headers,
                s.id
            );
            sent += 1;
            *codes.entry(code.clone()).or_default() += 1;
        }
    }
    let after = snapshot(&s2);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "a refused request changed {k}");
    }
    assert_eq!(
        before.len(),
        after.len(),
        "a refused request added keys: {:?}",
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .collect::<Vec<_>>()
    );
    println!(
        "refused requests: {sent} sent ({} kinds: {codes:?}), state of {} keys unchanged; not provoked: {skipped:?}",
        codes.len(),
        before.len() - 3
    );
    assert!(sent > 50, "only {sent} refusals were sent");
    // The snapshot does see a change: the same write, fenced by the current
    // term, is accepted and shows.
    let r = s2.put("seed/a", b"changed", &term);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(
        snapshot(&s2).get("seed/a"),
        before.get("seed/a"),
        "the snapshot misses an accepted write"
    );
}

/// Keys in Flink's job layout written through /state rather than the job
/// API (`jobs/<x>/...` or `jobgraphs/<x>` with an `<x>` that is no job id)
/// are not jobs: GET /jobs and GET /recovery list only job ids, as the
/// document says, so a new leader is never handed one that every
/// /jobs/{job} route refuses with 400.
#[test]
fn the_job_views_list_only_job_ids_whatever_state_holds() {
    let cluster = Cluster::new();
    let s = cluster.start("solo");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let t = s.term().to_string();
    let r = request(s.port, "PUT", "/jobs/j1/graph", &[("x-ha-term", &t)], b"g").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for key in [
        "jobs/a:b/x",
        "jobgraphs/c:d",
        "jobgraphs/e/f",
        "jobs/.hidden/x",
    ] {
        let r = s.put(key, b"v", &[]);
        assert_eq!(r.status, 200, "{key}: {}", r.text());
    }
    let jobs = s.get("/jobs").unwrap();
    assert_eq!(jobs.status, 200, "{}", jobs.text());
    assert_eq!(
        jobs.json()["jobs"],
        serde_json::json!(["j1"]),
        "{}",
        jobs.text()
    );
    let recovery = s.get("/recovery").unwrap();
    assert_eq!(recovery.status, 200, "{}", recovery.text());
    let ids: Vec<Value> = recovery.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(ids, vec![serde_json::json!("j1")], "{}", recovery.text());
}
