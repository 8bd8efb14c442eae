//! The sidecar's own API, secured (issue 16, §4), against real sidecars on
//! the file backend: the probe listener (`http.probe-listen`) serves the
//! reads of probes and scrapers and refuses everything else, and with
//! `http.token-file` a write without the token, or with another, is refused
//! (401) and changes nothing. The token never shows in a log.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// A token as an operator would make one: 32 random bytes, hex.
fn random_token() -> String {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("read /dev/urandom");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_token(dir: &Path, token: &str) -> PathBuf {
    let p = dir.join("api-token");
    std::fs::write(&p, format!("{token}\n")).expect("write the token file");
    p
}

/// A file-backend sidecar config with more `http` keys.
fn config(cluster: &Cluster, id: &str, port: u16, http: &str) -> String {
    SidecarYaml::new(id, port, "ha_plugin_file")
        .settings("cluster-id: test, poll-interval-ms: 20")
        .capability(&format!(
            "filesystem: {{dir: '{}'}}",
            cluster.path().join("data").display()
        ))
        .http(http)
        .build()
}

fn status(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, method, path, headers, b"x").unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[test]
fn the_probe_listener_serves_reads_and_refuses_every_write() {
    let cluster = Cluster::new();
    let probes: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let sidecars: Vec<Sidecar> = ["s1", "s2"]
        .iter()
        .zip(&probes)
        .map(|(id, probe)| {
            cluster.start_with(id, |port| {
                config(
                    &cluster,
                    id,
                    port,
                    &format!("probe-listen: '127.0.0.1:{probe}'"),
                )
            })
        })
        .collect();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let standby = 1 - leader;
    let term = sidecars[leader].term().to_string();
    let written = sidecars[leader].put("jobs/j1/counter", b"41", &[("x-ha-term", &term)]);
    assert_eq!(written.status, 200, "{}", written.text());
    let version = written.header("etag").unwrap().to_string();

    // What probes and scrapers read, as the API answers it.
    let (lp, sp) = (probes[leader], probes[standby]);
    assert_eq!(status(lp, "GET", "/leader/self", &[]).status, 200);
    let not_leading = status(sp, "GET", "/leader/self", &[]);
    assert_eq!(not_leading.status, 503, "{}", not_leading.text());
    let seen = status(sp, "GET", "/leader", &[]).json();
    assert_eq!(seen["term"].to_string(), term, "{seen}");
    assert_eq!(status(lp, "GET", "/healthz", &[]).status, 200);
    assert_eq!(status(lp, "GET", "/readyz", &[]).status, 200);
    let metrics = status(lp, "GET", "/metrics", &[]);
    assert!(
        metrics.status == 200 && metrics.text().contains("ha_sidecar_leader 1"),
        "{}",
        metrics.text()
    );

    // Everything else: refused before any handler runs, on the leader's and
    // the standby's probe listener alike, with the leader's own term.
    let fenced = [("x-ha-term", term.as_str())];
    for port in [lp, sp] {
        for (method, path) in [
            ("PUT", "/state/jobs/j1/counter"),
            ("DELETE", "/state/jobs/j1/counter"),
            ("GET", "/state/jobs/j1/counter"),
            ("GET", "/state"),
            ("POST", "/leader/resign"),
            ("POST", "/candidacy"),
            ("PUT", "/candidacy/c1"),
            ("PUT", "/leader/components/dispatcher"),
            ("GET", "/leader/components"),
            ("GET", "/jobs"),
            ("GET", "/recovery"),
            ("GET", "/"),
        ] {
            let r = status(port, method, path, &fenced);
            assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
            assert_eq!(r.json()["error"], "probe_listener", "{}", r.text());
            assert!(r.text().contains("http.probe-listen"), "{}", r.text());
        }
        for (method, path) in [
            ("PUT", "/leader"),
            ("DELETE", "/leader/self"),
            ("POST", "/metrics"),
            ("POST", "/healthz"),
        ] {
            let r = status(port, method, path, &fenced);
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        }
    }

    // Nothing changed: the same leader at the same term, the same value.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sole_leader(&sidecars, Duration::from_secs(5)), leader);
    assert_eq!(sidecars[leader].term().to_string(), term);
    for s in &sidecars {
        let r = s.get("/state/jobs/j1/counter").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"41".as_slice()));
        assert_eq!(r.header("etag"), Some(version.as_str()));
    }
    let log = sidecars[leader].log_text();
    assert!(
        log.contains(&format!("probe_listen=Some(127.0.0.1:{lp})")),
        "the start line names the probe listener:\n{log}"
    );
}

#[test]
fn writes_need_the_bearer_token_and_are_refused_without_it_or_with_another() {
    let cluster = Cluster::new();
    let token = random_token();
    let file = write_token(cluster.path(), &token);
    let http = format!("token-file: '{}'", file.display());
    let sidecars: Vec<Sidecar> = ["s1", "s2"]
        .iter()
        .map(|id| cluster.start_with(id, |port| config(&cluster, id, port, &http)))
        .collect();
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let l = &sidecars[leader];
    let term = l.term().to_string();
    let good = format!("Bearer {token}");
    let other = format!("Bearer {}", random_token());
    let truncated = format!("Bearer {}", &token[..token.len() - 1]);
    let lowercase_scheme = format!("bearer {token}");
    let basic = format!("Basic {token}");

    for auth in [None, Some(&other), Some(&truncated), Some(&basic)] {
        let mut headers = vec![("x-ha-term", term.as_str())];
        if let Some(a) = auth {
            headers.push(("authorization", a.as_str()));
        }
        for (method, path) in [
            ("PUT", "/state/jobs/j1/counter"),
            ("DELETE", "/state/jobs/j1/counter"),
            ("POST", "/leader/resign"),
            ("POST", "/candidacy"),
            ("PUT", "/leader/components/dispatcher"),
        ] {
            let r = status(l.port, method, path, &headers);
            assert_eq!(r.status, 401, "{method} {path} ({auth:?}): {}", r.text());
            assert_eq!(r.json()["error"], "unauthorized");
            assert!(r.text().contains("http.token-file"), "{}", r.text());
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"ha-sidecar\"")
            );
        }
    }
    // Nothing changed; reads need no token.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sole_leader(&sidecars, Duration::from_secs(5)), leader);
    assert_eq!(l.term().to_string(), term);
    assert_eq!(l.get("/state/jobs/j1/counter").unwrap().status, 404);

    // With the token (any case of the scheme), the writes go through.
    for auth in [&good, &lowercase_scheme] {
        let r = l.put(
            "jobs/j1/counter",
            b"42",
            &[("x-ha-term", &term), ("authorization", auth)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        sidecars[1 - leader]
            .get("/state/jobs/j1/counter")
            .unwrap()
            .body,
        b"42"
    );

    // The operator's handover: refused without --token-file, done with it.
    let address = format!("127.0.0.1:{}", l.port);
    let (code, out) = run_cli(&["handover", "--address", &address, "--timeout", "10s"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401") && out.contains("--token-file"), "{out}");
    assert_eq!(
        l.term().to_string(),
        term,
        "a refused handover changed the leader"
    );
    let file_arg = file.display().to_string();
    let (code, out) = run_cli(&[
        "handover",
        "--address",
        &address,
        "--token-file",
        &file_arg,
        "--timeout",
        "20s",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains(&token),
        "the token is in the CLI's output: {out}"
    );
    let next = sole_leader(&sidecars, Duration::from_secs(20));
    assert_ne!(next, leader);

    assert_no_secret_in_logs(cluster.path(), std::slice::from_ref(&token));
}

/// Settings that cannot work stop `validate` (and so the start) with the key,
/// the value and what to do; a token file's contents are never shown.
#[test]
fn bad_api_security_settings_are_refused_with_the_key() {
    let cluster = Cluster::new();
    let port = free_port();
    let short = cluster.path().join("short-token");
    std::fs::write(&short, "tooshort\n").unwrap();
    let spaced = cluster.path().join("spaced-token");
    std::fs::write(&spaced, "0123456789 abcdef0123456789\n").unwrap();
    let cases = [
        (
            format!("token-file: '{}'", cluster.path().join("missing").display()),
            vec!["http.token-file", "missing", "cannot read"],
            None,
        ),
        (
            format!("token-file: '{}'", short.display()),
            vec!["http.token-file", "at least 16"],
            Some("tooshort"),
        ),
        (
            format!("token-file: '{}'", spaced.display()),
            vec!["http.token-file", "HTTP header"],
            Some("abcdef0123456789"),
        ),
        (
            format!("probe-listen: '127.0.0.1:{port}'"),
            vec!["http.probe-listen", "overlaps http.listen"],
            None,
        ),
        (
            format!("probe-listen: '0.0.0.0:{port}'"),
            vec!["http.probe-listen", "overlaps http.listen"],
            None,
        ),
        (
            "probe-listen: 'pod-network:4041'".to_string(),
            vec!["http.probe-listen", "pod-network:4041", "0.0.0.0:4041"],
            None,
        ),
    ];
    for (i, (http, wanted, secret)) in cases.iter().enumerate() {
        let cfg = cluster.write_config(&format!("c{i}"), &config(&cluster, "s1", port, http));
        let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
        assert_eq!(code, 1, "{http}: {out}");
        for w in wanted {
            assert!(out.contains(w), "{http}: no {w:?} in: {out}");
        }
        if let Some(secret) = secret {
            assert!(
                !out.contains(secret),
                "{http}: the file's contents show: {out}"
            );
        }
    }

    // A probe port already taken stops the start, naming the key.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cfg = cluster.write_config(
        "taken",
        &config(
            &cluster,
            "s1",
            port,
            &format!("probe-listen: '127.0.0.1:{taken_port}'"),
        ),
    );
    let log = cluster.path().join("taken.log");
    let mut s = Sidecar::spawn("s1", port, &cfg, &log, &[]);
    let exit = s.wait_exit(Duration::from_secs(30));
    assert!(!exit.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "http.probe-listen: cannot listen on 127.0.0.1:{taken_port}"
        )),
        "{text}"
    );
}

/// The Kubernetes example probes the probe listener, keeps the API on
/// loopback and lists no port of the sidecar in the NetworkPolicy.
#[test]
fn the_kubernetes_example_probes_the_read_only_listener() {
    let dir = repo_root().join("examples/kubernetes");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    };
    let cm: serde_yaml::Value = serde_yaml::from_str(&read("sidecar-config.yaml")).unwrap();
    let sidecar: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["ha-sidecar.yaml"].as_str().unwrap()).unwrap();
    let listen = sidecar["http"]["listen"].as_str().unwrap();
    assert!(listen.starts_with("127.0.0.1:"), "http.listen: {listen}");
    let probe = sidecar["http"]["probe-listen"].as_str().unwrap();
    let probe_port: u64 = probe.rsplit(':').next().unwrap().parse().unwrap();
    let deployment = read("deployment.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&deployment)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let containers = docs[0]["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let c = containers
        .iter()
        .find(|c| c["name"] == "ha-sidecar")
        .expect("the ha-sidecar container");
    for probe_kind in ["readinessProbe", "livenessProbe"] {
        let port = &c[probe_kind]["httpGet"]["port"];
        let named = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| &p["name"] == port)
            .map(|p| p["containerPort"].as_u64().unwrap());
        assert_eq!(
            port.as_u64().or(named),
            Some(probe_port),
            "{probe_kind} probes {port:?}, not the probe listener ({probe})"
        );
    }
    let policy: serde_yaml::Value = serde_yaml::from_str(&read("networkpolicy.yaml")).unwrap();
    let open: Vec<u64> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert!(!open.contains(&probe_port), "{open:?}");
}
