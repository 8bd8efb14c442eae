//! The monitoring examples (`examples/monitoring`): the alert rules and the
//! example Prometheus config pass `promtool`, and in a real Prometheus
//! (Debian's package, started by the harness) that scrapes three real
//! sidecars the alerts fire and clear around a crash of the leader, and
//! every expression of the Grafana dashboard is one Prometheus accepts and
//! answers.

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use prometheus::{PROMTOOL, Prometheus};
use support::*;

const CLUSTER: &str = "monitored";
/// A longer lease than the other tests: the no-leader alert must have time
/// to fire before a standby takes over.
const MONITORED_LEASE: Duration = Duration::from_secs(5);

fn examples() -> PathBuf {
    repo_root().join("examples/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(examples())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PROMTOOL} ({e}): run ./scripts/test.sh, which installs the Debian package prometheus")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rules_and_the_example_config() {
    let rules = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(rules.contains("SUCCESS: 7 rules found"), "{rules}");
    let config = promtool(&["check", "config", "prometheus.yaml"]);
    assert!(config.contains("SUCCESS"), "{config}");
}

/// The rules as shipped, every `for` shortened to one second, so that a
/// test sees an alert go pending, fire and clear within seconds.
fn quick_rules(cluster: &Cluster) -> PathBuf {
    let text = std::fs::read_to_string(examples().join("alerts.yaml")).unwrap();
    let quick: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(quick, text, "alerts.yaml has no `for` to shorten");
    let path = cluster.path().join("alerts.yaml");
    std::fs::write(&path, quick).unwrap();
    path
}

fn wait_alert(prom: &Prometheus, name: &str, state: Option<&str>, within: Duration) -> Duration {
    let since = Instant::now();
    wait_for(&format!("alert {name} to be {state:?}"), within, || {
        (prom.alert_state(name).as_deref() == state).then_some(())
    });
    since.elapsed()
}

#[test]
fn the_alerts_fire_and_clear_around_a_crash_of_the_leader_and_the_dashboard_queries_work() {
    let cluster = Cluster::new();
    let start = |id: &str| {
        cluster.start_with(id, |port| {
            cluster.file_config(id, port, "").replace(
                "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms",
                "timing: {lease: 5s, renew-deadline: 4s, retry-period: 1s",
            )
        })
    };
    let mut sidecars: Vec<Sidecar> = ["m1", "m2", "m3"].iter().map(|id| start(id)).collect();
    let ports: Vec<u16> = sidecars.iter().map(|s| s.port).collect();
    let prom = Prometheus::start(&ports, CLUSTER, &quick_rules(&cluster));
    let leader = agreed_leader(&sidecars);
    wait_for(
        "Prometheus to scrape all three",
        Duration::from_secs(20),
        || {
            let up = prom.query("count(up{job=\"ha-sidecar\"} == 1)");
            (up.first().map(|r| r["value"][1].clone()) == Some("3".into())).then_some(())
        },
    );
    wait_for(
        "Prometheus to see the leader",
        Duration::from_secs(10),
        || {
            let leads = prom.query("sum(ha_sidecar_leader{job=\"ha-sidecar\"})");
            (leads.first().map(|r| r["value"][1].clone()) == Some("1".into())).then_some(())
        },
    );
    // Pending while the first election ran; inactive once a rule
    // evaluation has seen the leader.
    wait_alert(&prom, "HaSidecarNoLeader", None, Duration::from_secs(5));

    // kill -9 of the leader: no one leads for up to a lease, so the
    // no-leader alert fires, then clears once a standby has taken over.
    let id = sidecars[leader].id.clone();
    let port = sidecars[leader].port;
    sidecars[leader].kill9();
    let fired = wait_alert(
        &prom,
        "HaSidecarNoLeader",
        Some("firing"),
        MONITORED_LEASE + Duration::from_secs(5),
    );
    let rest: Vec<Sidecar> = sidecars
        .drain(..)
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s)
        .collect();
    sole_leader(&rest, MONITORED_LEASE + Duration::from_secs(5));
    let cleared = wait_alert(&prom, "HaSidecarNoLeader", None, Duration::from_secs(10));
    println!("HaSidecarNoLeader fired {fired:?} after the kill, cleared {cleared:?} after that");
    // The dead sidecar is down until it is back.
    wait_alert(
        &prom,
        "HaSidecarDown",
        Some("firing"),
        Duration::from_secs(10),
    );
    let back = Sidecar::start(
        &id,
        port,
        &cluster.path().join(format!("{id}.yaml")),
        &cluster.path().join(format!("{id}-again.log")),
    );
    wait_alert(&prom, "HaSidecarDown", None, Duration::from_secs(10));
    for quiet in [
        "HaSidecarTwoLeaders",
        "HaSidecarPluginRestarts",
        "HaSidecarBackendRefused",
    ] {
        assert_eq!(
            prom.alert_state(quiet),
            None,
            "{quiet}: {:?}",
            prom.alerts()
        );
    }

    // Every panel's expression, with the dashboard's variables filled in.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(examples().join("dashboard.json")).unwrap())
            .expect("dashboard.json is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$cluster", CLUSTER)
                .replace("$__rate_interval", "1m");
            prom.query(&expr);
        }
    }
    let leaders = prom.query(&format!(
        "ha_sidecar_leader{{job=\"ha-sidecar\", cluster=\"{CLUSTER}\"}}"
    ));
    assert_eq!(leaders.len(), 3, "the leader panel's series: {leaders:?}");
    drop((rest, back));
}
