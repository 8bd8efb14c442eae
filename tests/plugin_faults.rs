//! A plugin that traps, spins forever, hangs in a host call or blows its
//! memory limit: the sidecar stays up, steps down, throws the instance away
//! and recovers with a fresh one.

mod support;

use std::time::Duration;

use support::*;

fn faulty_sidecar(cluster: &Cluster, fault: &str) -> Sidecar {
    let port = free_port();
    let yaml = format!(
        "member: {{id: f1}}\nhttp: {{listen: '127.0.0.1:{port}'}}\nplugin:\n  path: '{}'\n  cache-dir: '{}'\n  call-timeout: 300ms\n  restart-backoff: 200ms\n  restart-backoff-max: 1s\n  settings: {{fault: {fault}, after-keeps: 2}}\n{TIMING}",
        plugin("fixture_faulty").display(),
        shared_cache_dir().display(),
    );
    let cfg = cluster.write_config(fault, &yaml);
    Sidecar::start(
        "f1",
        port,
        &cfg,
        &cluster.path().join(format!("{fault}.log")),
    )
}

fn metric(s: &Sidecar, name: &str) -> u64 {
    let text = s.get("/metrics").unwrap().text();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn survives(fault: &str, outcome: &str) {
    let cluster = Cluster::new();
    let mut s = faulty_sidecar(&cluster, fault);
    wait_for("leadership", Duration::from_secs(10), || {
        s.leads().then_some(())
    });
    // After two renewals the plugin misbehaves: the sidecar must step down...
    wait_for("step-down after the fault", Duration::from_secs(10), || {
        (!s.leads()).then_some(())
    });
    assert_eq!(s.get("/leader/self").unwrap().status, 503);
    // ...restart the instance and lead again with a fresh one.
    wait_for("a plugin restart", Duration::from_secs(10), || {
        (metric(&s, "ha_sidecar_plugin_restarts_total{role=\"election\"}") >= 1).then_some(())
    });
    wait_for("leadership again", Duration::from_secs(10), || {
        s.leads().then_some(())
    });
    assert!(s.is_running(), "the sidecar died:\n{}", s.log_text());
    assert_eq!(s.get("/healthz").unwrap().status, 200);
    assert!(
        metric(
            &s,
            &format!("ha_sidecar_plugin_calls_total{{call=\"keep\",outcome=\"{outcome}\"}}")
        ) >= 1
    );
    assert!(
        metric(
            &s,
            "ha_sidecar_leadership_transitions_total{to=\"follower\"}"
        ) >= 1
    );
    // State calls use their own instance and keep working.
    assert_eq!(s.put("k", b"v", &[]).status, 200);
}

#[test]
fn a_plugin_that_traps_is_restarted() {
    survives("trap", "trap");
}

#[test]
fn a_plugin_that_spins_forever_is_interrupted() {
    survives("spin", "timeout");
}

#[test]
fn a_plugin_that_hangs_in_a_host_call_is_abandoned() {
    survives("hang", "timeout");
}

#[test]
fn a_plugin_that_blows_its_memory_limit_is_restarted() {
    survives("oom", "trap");
}
