//! Start-up refusals: each prints the key or interface at fault, the value and
//! what to do, and exits non-zero without serving.

mod support;

use support::*;

/// Asserts that `ha-sidecar run <config>` and `validate <config>` both fail
/// and mention every needle.
fn refused(cluster: &Cluster, yaml: &str, needles: &[&str]) {
    let cfg = cluster.write_config("bad", yaml);
    for cmd in ["validate", "run"] {
        let (code, out) = run_cli(&[cmd, &cfg.to_string_lossy()]);
        assert_ne!(code, 0, "`{cmd}` accepted:\n{yaml}\n{out}");
        for n in needles {
            assert!(out.contains(n), "`{cmd}` output lacks {n:?}:\n{out}");
        }
    }
}

fn good(cluster: &Cluster) -> String {
    cluster.file_config("s1", free_port(), "")
}

#[test]
fn a_good_config_validates() {
    let cluster = Cluster::new();
    let cfg = cluster.write_config("ok", &good(&cluster));
    let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let cluster = Cluster::new();
    let g = good(&cluster);
    refused(
        &cluster,
        &g.replace("timing: {lease", "timing: {leese: 3s, lease"),
        &["timing", "leese"],
    );
    refused(&cluster, &format!("{g}colour: blue\n"), &["colour"]);
    refused(
        &cluster,
        &g.replace(
            "lease: 2s, renew-deadline: 1500ms",
            "lease: 2s, renew-deadline: 2s",
        ),
        &["timing.renew-deadline", "2s", "shorter than timing.lease"],
    );
    refused(
        &cluster,
        &g.replace("retry-period: 400ms", "retry-period: 1400ms"),
        &["timing.renew-deadline", "1.2"],
    );
    refused(
        &cluster,
        &g.replace("lease: 2s", "lease: 2"),
        &["timing.lease", "no unit"],
    );
    refused(
        &cluster,
        &g.replace("listen: '127.0.0.1:", "listen: 'localhost:"),
        &["http.listen", "localhost"],
    );
    refused(
        &cluster,
        &g.replace("member: {id: s1", "member: {id: 's 1'"),
        &["member.id", "s 1"],
    );
    refused(&cluster, "member: [", &["bad.yaml"]);
}

#[test]
fn a_missing_plugin_file_is_named() {
    let cluster = Cluster::new();
    let g = good(&cluster).replace("ha_plugin_file.wasm", "no_such_plugin.wasm");
    refused(
        &cluster,
        &g,
        &["plugin.path", "no_such_plugin.wasm", "no such file"],
    );
}

#[test]
fn a_wrong_sha256_is_refused() {
    let cluster = Cluster::new();
    let wrong = "0".repeat(64);
    let g = good(&cluster).replace("  settings:", &format!("  sha256: {wrong}\n  settings:"));
    refused(&cluster, &g, &["plugin.sha256", &wrong, "expects"]);
    // And the right one is accepted.
    let right = ha_sidecar::runtime::sha256_hex(&std::fs::read(plugin("ha_plugin_file")).unwrap());
    let cfg = cluster.write_config(
        "ok",
        &good(&cluster).replace("  settings:", &format!("  sha256: {right}\n  settings:")),
    );
    let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_plugin_importing_an_ungranted_capability_is_refused() {
    let cluster = Cluster::new();
    // The file plugin needs a directory; without the grant it is refused at load.
    let no_grant = SidecarYaml::new("s1", free_port(), "ha_plugin_file")
        .settings("cluster-id: test, poll-interval-ms: 20")
        .build();
    refused(
        &cluster,
        &no_grant,
        &["wasi:filesystem/", "capabilities.filesystem"],
    );
    // Sockets only with capabilities.tcp.
    let net = good(&cluster).replace(
        &plugin("ha_plugin_file").display().to_string(),
        &plugin("fixture_net_user").display().to_string(),
    );
    refused(&cluster, &net, &["wasi:sockets/", "capabilities.tcp"]);
}

#[test]
fn a_plugin_for_another_contract_version_is_refused() {
    let cluster = Cluster::new();
    let v1 = good(&cluster).replace(
        &plugin("ha_plugin_file").display().to_string(),
        &plugin("fixture_contract_v1").display().to_string(),
    );
    refused(
        &cluster,
        &v1,
        &["ha:sidecar@1.0.0", "ha:sidecar@0.1.0", "rebuild"],
    );
}

#[test]
fn bad_plugin_settings_stop_the_start() {
    let cluster = Cluster::new();
    let cfg = cluster.write_config(
        "bad",
        &good(&cluster).replace("poll-interval-ms: 20", "poll-interval-ms: 20, colour: blue"),
    );
    let (code, out) = run_cli(&["run", &cfg.to_string_lossy()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("plugin.settings.colour"), "{out}");
}

#[test]
fn a_restart_loads_the_compiled_plugin_from_the_cache() {
    let cluster = Cluster::new();
    let cache = cluster.path().join("cache");
    let port = free_port();
    let yaml = cluster.file_config("s1", port, "").replace(
        &shared_cache_dir().display().to_string(),
        &cache.display().to_string(),
    );
    let cfg = cluster.write_config("s1", &yaml);
    for (run, expect) in [(1, "from=Compiled"), (2, "from=Cache")] {
        let log = cluster.path().join(format!("run{run}.log"));
        let mut s = Sidecar::start("s1", port, &cfg, &log);
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(std::time::Duration::from_secs(15)).success());
        assert!(
            s.log_text().contains(expect),
            "start {run} should say {expect}:\n{}",
            s.log_text()
        );
    }
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 1, "one compiled artifact expected in the cache");
}

#[test]
fn plugin_check_runs_the_conformance_suite_on_any_plugin() {
    let cluster = Cluster::new();
    let yaml = good(&cluster).replace(
        "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms",
        "timing: {lease: 1s, renew-deadline: 750ms, retry-period: 250ms",
    );
    let cfg = cluster.write_config("check", &yaml);
    let file = plugin("ha_plugin_file").display().to_string();
    let (code, out) = run_cli(&["plugin", "check", &file, "--config", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("11 checks, 11 passed, 0 failed"), "{out}");
    // A plugin that cannot take part fails, with the reason in the table.
    let faulty = plugin("fixture_faulty").display().to_string();
    let (code, out) = run_cli(&[
        "plugin",
        "check",
        &faulty,
        "--config",
        &cfg.to_string_lossy(),
        "--only",
        "single",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("1 checks, 0 passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn plugin_inspect_names_the_imports_that_will_be_refused() {
    let foreign = plugin("fixture_foreign_import").display().to_string();
    let (code, out) = run_cli(&["plugin", "inspect", &foreign]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("no capabilities"),
        "a plugin that will be refused does not need \"no capabilities\":\n{out}"
    );
    let refused = out
        .lines()
        .skip_while(|l| !l.starts_with("refused:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        refused.contains("will not load") && refused.contains("acme:raw/device"),
        "{out}"
    );
    assert!(
        refused.contains("provides no such interface"),
        "the reason is given:\n{out}"
    );
}

#[test]
fn plugin_inspect_names_the_capabilities_a_plugin_needs() {
    // A plugin that opens sockets needs the tcp grant: inspect says so
    // rather than "no capabilities".
    let net = plugin("fixture_net_user").display().to_string();
    let (code, out) = run_cli(&["plugin", "inspect", &net]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("needs:    capabilities.tcp") && !out.contains("no capabilities"),
        "{out}"
    );
    // A plugin that imports only what a config can grant says what it needs.
    let file = plugin("ha_plugin_file").display().to_string();
    let (code, out) = run_cli(&["plugin", "inspect", &file]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("needs:    capabilities.filesystem") && !out.contains("refused:"),
        "{out}"
    );
}

#[test]
fn plugin_check_refuses_a_plugin_that_cannot_load_once_up_front() {
    let cluster = Cluster::new();
    let cfg = cluster.write_config("check", &good(&cluster));
    let net = plugin("fixture_net_user").display().to_string();
    let (code, out) = run_cli(&["plugin", "check", &net, "--config", &cfg.to_string_lossy()]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        out.matches("needs the `tcp` capability").count(),
        1,
        "the refusal is printed once:\n{out}"
    );
    assert!(
        out.contains("wasi:sockets/") && out.contains("refusing"),
        "{out}"
    );
    assert!(
        !out.contains("checks,"),
        "no checks run for a plugin that cannot load:\n{out}"
    );
}

/// `plugin inspect … | head`: a reader that goes away ends the report
/// quietly (SIGPIPE, as command line tools do), not with a panic in the
/// middle of printing.
#[test]
fn plugin_inspect_ends_quietly_when_its_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    let file = plugin("ha_plugin_file").display().to_string();
    let mut child = std::process::Command::new(sidecar_bin())
        .args(["plugin", "inspect", &file])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ha-sidecar plugin inspect");
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for plugin inspect");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE: {:?} {stderr}",
        out.status
    );
}

/// The example unit, with this build's binary and an example config for
/// its paths, passes `systemd-analyze verify` without a warning (it exits
/// 0 on mere warnings, such as an unknown `Type=`, so the output must be
/// empty too).
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("examples/systemd/ha-sidecar.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/ha-sidecar",
            &sidecar_bin().to_string_lossy(),
        )
        .replace(
            "/etc/ha-sidecar/sidecar.yaml",
            &repo_root()
                .join("examples/file-backend.yaml")
                .to_string_lossy(),
        );
    let path = dir.path().join("ha-sidecar.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (Debian's systemd package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// As systemd runs a `Type=notify` unit with `WatchdogSec=`: the sidecar
/// sends READY=1 once it serves, WATCHDOG=1 every half period while
/// healthy, and STOPPING=1 on SIGTERM, on the socket NOTIFY_SOCKET names
/// (here one the test binds, standing in for systemd's).
#[test]
fn under_systemd_it_reports_ready_pings_the_watchdog_and_reports_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let cluster = Cluster::new();
    let socket_path = cluster.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let port = free_port();
    let cfg = cluster.write_config("n1", &cluster.file_config("n1", port, ""));
    let mut s = Sidecar::start_env(
        "n1",
        port,
        &cfg,
        &cluster.path().join("n1.log"),
        &[
            ("NOTIFY_SOCKET", &socket_path.to_string_lossy()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = next();
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("STATUS=serving on 127.0.0.1:"),
        "{ready:?}"
    );
    // Served before it said so: the API answers.
    assert_eq!(s.get("/healthz").unwrap().status, 200);
    let since = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "three pings took {took:?} with a 400 ms watchdog"
    );
    s.signal(libc::SIGTERM);
    let stopping = loop {
        let m = next();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(s.wait_exit(Duration::from_secs(15)).success());
}
