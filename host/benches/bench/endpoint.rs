//! `GET /leader` and the leader-only `GET /leader/self` under concurrent
//! keep-alive load from the load generator process, and the sidecar's
//! memory idle and under that load.
//!
//! "On one core" is taken literally where the machine allows it: the sidecar
//! runs pinned to one CPU and the load generator on the others, so the
//! throughput is what one core of sidecar serves. The sidecar's CPU time is
//! reported too, which shows whether that core or the client was the limit.

use std::time::Duration;

use crate::backends::Backend;
use crate::group::{Group, SETTLE_TIMEOUT, progress};
use crate::loadgen::{self, LoadSpec};
use crate::procfs;
use crate::report::{Report, Row, Section, human, mib, ms, thousands};
use crate::support::wait_for;

const RATE_TARGET: f64 = 50_000.0;
const LATENCY_TARGET: Duration = Duration::from_millis(1);
const WARMUP: Duration = Duration::from_secs(1);

pub struct Load {
    pub connections: usize,
    pub duration: Duration,
}

pub fn run(report: &mut Report, backend: &dyn Backend, load: &Load) {
    let group = Group::new(backend);
    let sidecar = group.start("e1");
    wait_for("e1 to lead", SETTLE_TIMEOUT, || {
        sidecar.leads().then_some(())
    });
    let pid = sidecar.pid();
    // Idle, but after the election and a few requests: what a standing
    // leader holds.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = procfs::rss_kib(pid);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sidecar_cpu = cores - 1;
    let pinned = cores >= 2 && procfs::pin_process(pid, sidecar_cpu);
    let placement = if pinned {
        "sidecar pinned to 1 core, load generator on the rest"
    } else {
        "sidecar not pinned"
    };
    let mut loaded_rss = 0;

    for (path, label) in [
        ("/leader", "GET /leader"),
        ("/leader/self", "GET /leader/self (leader-only)"),
    ] {
        progress(&format!(
            "{label}: {} connections for {}",
            load.connections,
            human(load.duration)
        ));
        let mut spec = LoadSpec::get(sidecar.port, path, load.connections, WARMUP, load.duration);
        if pinned {
            spec.cpus = (0..sidecar_cpu).collect();
        }
        let mut cpu_before = None;
        let r = loadgen::run(&spec, || {
            cpu_before = procfs::cpu_seconds(pid);
            loaded_rss = loaded_rss.max(procfs::rss_kib(pid).unwrap_or(0));
        });
        let sidecar_cpu_s = cpu_before.zip(procfs::cpu_seconds(pid)).map(|(a, b)| b - a);
        loaded_rss = loaded_rss.max(procfs::rss_kib(pid).unwrap_or(0));

        let rate = r.rate();
        let busy = sidecar_cpu_s.map_or(String::new(), |c| {
            format!("sidecar {:.0}% CPU, ", 100.0 * c / r.seconds)
        });
        let notes = format!(
            "{placement}; {busy}load generator {:.0}% CPU{}",
            100.0 * r.cpu_seconds / r.seconds,
            r.error_note()
        );
        let clean = r.errors == 0;
        report.add(
            Row::new(
                Section::LeaderEndpoint,
                format!("{label} throughput"),
                backend.name(),
            )
            .value(format!("{} req/s", thousands(rate)))
            .target(">= 50,000 req/s on one core", clean && rate >= RATE_TARGET)
            .samples(format!(
                "{} s, {} conns",
                r.seconds.round(),
                load.connections
            ))
            .compare(notes)
            .figure("requests_per_s", rate)
            .figure("errors", r.errors as f64),
        );
        if let Some(cpu) = sidecar_cpu_s.filter(|c| *c > 0.0) {
            let per_cpu = r.requests as f64 / cpu;
            report.add(
                Row::new(
                    Section::LeaderEndpoint,
                    format!("{label} per sidecar CPU-second"),
                    backend.name(),
                )
                .value(format!("{} req/s", thousands(per_cpu)))
                .target(
                    ">= 50,000 req/s on one core",
                    clean && per_cpu >= RATE_TARGET,
                )
                .samples(format!("{cpu:.1} CPU-s"))
                .compare("requests served / CPU time the sidecar used meanwhile")
                .figure("requests_per_cpu_s", per_cpu),
            );
        }
        report.add(
            Row::new(
                Section::LeaderEndpoint,
                format!("{label} latency p50 / p99 under that load"),
                backend.name(),
            )
            .value(format!("{} / {}", human(r.p50()), human(r.p99())))
            .target("p99 < 1 ms", clean && r.p99() < LATENCY_TARGET)
            .samples(thousands(r.requests as f64))
            .compare(format!(
                "p99.9 {}, max {}",
                human(Duration::from_nanos(r.p999_ns)),
                human(Duration::from_nanos(r.max_ns))
            ))
            .figure("p50_ms", ms(r.p50()))
            .figure("p99_ms", ms(r.p99()))
            .figure("p999_ms", r.p999_ns as f64 / 1e6)
            .figure("max_ms", r.max_ns as f64 / 1e6),
        );
    }

    if let Some(idle) = idle_rss {
        let note = "plugin loaded from a warm compile cache".to_string();
        rss_row(report, backend, "sidecar RSS, leading, idle", idle, note);
    }
    if loaded_rss > 0 {
        let split = procfs::status_kib(pid, "RssAnon:")
            .zip(procfs::status_kib(pid, "RssFile:"))
            .map_or(String::new(), |(a, f)| {
                format!("; now anon {}, file {}", mib(a), mib(f))
            });
        let note = format!("largest seen at the start and end of each measured window{split}");
        rss_row(
            report,
            backend,
            "sidecar RSS, under the endpoint load",
            loaded_rss,
            note,
        );
    }
}

fn rss_row(report: &mut Report, backend: &dyn Backend, metric: &str, kib: u64, note: String) {
    report.add(
        Row::new(Section::Overhead, metric, backend.name())
            .value(mib(kib))
            .target("< 30 MiB", kib < 30 * 1024)
            .samples(1)
            .compare(note)
            .figure("rss_mib", kib as f64 / 1024.0),
    );
}
