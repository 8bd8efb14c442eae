//! Prometheus metrics, kept in atomics and rendered by hand: a handful of
//! series does not justify a metrics framework on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Every backend call, in contract order (the roster's last).
pub const CALLS: [&str; 11] = [
    "configure",
    "campaign",
    "keep",
    "resign",
    "leader",
    "get",
    "put",
    "delete",
    "list",
    "members",
    "hand_over",
];
/// How a call ended: returned a value, returned a failure, trapped, overran its deadline.
pub const OUTCOMES: [&str; 4] = ["ok", "failure", "trap", "timeout"];
pub const ROLES: [&str; 3] = ["election", "discovery", "state"];
/// Upper bounds of the call-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub became_leader: AtomicU64,
    pub stepped_down: AtomicU64,
    calls: [[AtomicU64; OUTCOMES.len()]; CALLS.len()],
    latency_buckets: [[AtomicU64; BUCKETS.len()]; CALLS.len()],
    latency_sum_ns: [AtomicU64; CALLS.len()],
    latency_count: [AtomicU64; CALLS.len()],
    restarts: [AtomicU64; ROLES.len()],
    /// HTTP connections: open now, the cap, closed over the cap, closed idle near the cap.
    pub connections_open: AtomicU64,
    pub connections_max: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub connections_evicted: AtomicU64,
    /// What the backend refuses this sidecar (a missing permission).
    pub refusals: crate::refusals::Refusals,
}

fn index(list: &[&str], name: &str) -> usize {
    list.iter()
        .position(|n| *n == name)
        .expect("metric label is one of the declared names")
}

impl Metrics {
    pub fn record_call(&self, call: &str, outcome: &str, took: Duration) {
        let c = index(&CALLS, call);
        self.calls[c][index(&OUTCOMES, outcome)].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[c][i].fetch_add(1, Relaxed);
            }
        }
        self.latency_sum_ns[c].fetch_add(took.as_nanos() as u64, Relaxed);
        self.latency_count[c].fetch_add(1, Relaxed);
    }

    pub fn record_restart(&self, role: &str) {
        self.restarts[index(&ROLES, role)].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let w = &mut out;
        gauge(
            w,
            "ha_sidecar_leader",
            "1 while this sidecar leads and its last renewal is younger than the renew deadline.",
            self.leader.load(Relaxed),
        );
        gauge(
            w,
            "ha_sidecar_term",
            "Fencing token of the leader this sidecar last knew of (0: none).",
            self.term.load(Relaxed),
        );
        let _ = writeln!(
            w,
            "# HELP ha_sidecar_leadership_transitions_total Times this sidecar became leader or stepped down.\n# TYPE ha_sidecar_leadership_transitions_total counter"
        );
        let _ = writeln!(
            w,
            "ha_sidecar_leadership_transitions_total{{to=\"leader\"}} {}",
            self.became_leader.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "ha_sidecar_leadership_transitions_total{{to=\"follower\"}} {}",
            self.stepped_down.load(Relaxed)
        );

        let _ = writeln!(
            w,
            "# HELP ha_sidecar_plugin_calls_total Backend plugin calls by outcome.\n# TYPE ha_sidecar_plugin_calls_total counter"
        );
        for (c, call) in CALLS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "ha_sidecar_plugin_calls_total{{call=\"{call}\",outcome=\"{outcome}\"}} {}",
                    self.calls[c][o].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            w,
            "# HELP ha_sidecar_plugin_call_duration_seconds Backend plugin call latency (campaign and leader include their waits).\n# TYPE ha_sidecar_plugin_call_duration_seconds histogram"
        );
        for (c, call) in CALLS.iter().enumerate() {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "ha_sidecar_plugin_call_duration_seconds_bucket{{call=\"{call}\",le=\"{bound}\"}} {}",
                    self.latency_buckets[c][i].load(Relaxed)
                );
            }
            let count = self.latency_count[c].load(Relaxed);
            let _ = writeln!(
                w,
                "ha_sidecar_plugin_call_duration_seconds_bucket{{call=\"{call}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                w,
                "ha_sidecar_plugin_call_duration_seconds_sum{{call=\"{call}\"}} {}",
                self.latency_sum_ns[c].load(Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                w,
                "ha_sidecar_plugin_call_duration_seconds_count{{call=\"{call}\"}} {count}"
            );
        }
        let _ = writeln!(
            w,
            "# HELP ha_sidecar_plugin_restarts_total Plugin instances thrown away after a trap or an overrun deadline.\n# TYPE ha_sidecar_plugin_restarts_total counter"
        );
        for (r, role) in ROLES.iter().enumerate() {
            let _ = writeln!(
                w,
                "ha_sidecar_plugin_restarts_total{{role=\"{role}\"}} {}",
                self.restarts[r].load(Relaxed)
            );
        }
        gauge(
            w,
            "ha_sidecar_http_connections",
            "HTTP connections open now.",
            self.connections_open.load(Relaxed),
        );
        gauge(
            w,
            "ha_sidecar_http_connections_max",
            "The cap on open HTTP connections (http.max-connections).",
            self.connections_max.load(Relaxed),
        );
        let _ = writeln!(
            w,
            "# HELP ha_sidecar_http_connections_closed_total HTTP connections the sidecar closed to stay under its cap: over the cap at accept, or idle near the cap.\n# TYPE ha_sidecar_http_connections_closed_total counter"
        );
        let _ = writeln!(
            w,
            "ha_sidecar_http_connections_closed_total{{reason=\"over_cap\"}} {}",
            self.connections_rejected.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "ha_sidecar_http_connections_closed_total{{reason=\"idle_near_cap\"}} {}",
            self.connections_evicted.load(Relaxed)
        );
        gauge(
            w,
            "ha_sidecar_backend_refused",
            "1 while the backend refuses a request this sidecar needs (a missing permission, credentials not accepted).",
            u64::from(self.refusals.is_refused()),
        );
        let _ = writeln!(
            w,
            "# HELP ha_sidecar_backend_refusals_total Requests the backend refused for lack of permission.\n# TYPE ha_sidecar_backend_refusals_total counter\nha_sidecar_backend_refusals_total {}",
            self.refusals.total()
        );
        out
    }
}

fn gauge(w: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        w,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
