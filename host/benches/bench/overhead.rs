//! What the plugin architecture costs: a call across the WebAssembly
//! boundary, a fresh instance, compiling a plugin against loading it from
//! the compile cache, and a sidecar process from start to serving (with the
//! memory a first, compiling start leaves behind).

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_sidecar::config::Grants;
use ha_sidecar::metrics::Metrics;
use ha_sidecar::runtime::{LoadedPlugin, Member, Setup, Timing, cache, engine, sha256_hex};

use crate::backends::Backend;
use crate::group::{Group, progress};
use crate::procfs;
use crate::report::{Report, Row, Samples, Section, human, mib, ms};
use crate::support::{free_port, plugin, plugin_config, request, shared_cache_dir, sidecar_bin};

const BOUNDARY_CALLS: u32 = 200_000;
const INSTANTIATIONS: usize = 200;
const COMPILES: usize = 3;
const CACHED_LOADS: usize = 20;
const WARM_STARTS: usize = 10;

/// The fixture's `get` touches only its own memory, so a call costs what the
/// boundary costs: the epoch deadline, the canonical ABI both ways, the
/// timeout wrapper and the metrics the sidecar records for every call.
pub fn boundary(report: &mut Report) {
    progress("plugin boundary and instantiation (in-process fixture_faulty)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    rt.block_on(async {
        let cfg = plugin_config("fixture_faulty", &[("fault", "none")]);
        let plugin =
            LoadedPlugin::load(&cfg, &Grants::default(), None, Arc::new(Metrics::default()))
                .expect("load fixture_faulty");
        let setup = Setup {
            me: Member {
                id: "bench".into(),
                address: "http://bench.invalid:1".into(),
            },
            session: "bench".into(),
            timing: Timing {
                lease_ms: 2000,
                renew_deadline_ms: 1500,
                retry_ms: 400,
            },
            settings: cfg.settings.clone(),
        };

        let mut made = Vec::with_capacity(INSTANTIATIONS);
        for _ in 0..INSTANTIATIONS {
            let t = Instant::now();
            let instance = plugin
                .instantiate("state", &setup)
                .await
                .expect("instantiate fixture_faulty");
            made.push(t.elapsed());
            drop(instance);
        }
        let made = Samples::new(made);
        report.add(
            Row::new(
                Section::Overhead,
                "plugin instantiate + configure, median / p99",
                "-",
            )
            .value(format!(
                "{} / {}",
                human(made.pct(0.5)),
                human(made.pct(0.99))
            ))
            .samples(made.len())
            .compare("one per role (election, discovery, state) at start and after a trap")
            .figure("median_us", ms(made.pct(0.5)) * 1e3)
            .figure("p99_us", ms(made.pct(0.99)) * 1e3),
        );

        let mut instance = plugin
            .instantiate("state", &setup)
            .await
            .expect("instantiate fixture_faulty");
        instance
            .put("k", b"a small value", None, None)
            .await
            .expect("put k");
        for _ in 0..BOUNDARY_CALLS / 10 {
            black_box(instance.get("k").await.expect("get k"));
        }
        let t = Instant::now();
        for _ in 0..BOUNDARY_CALLS {
            black_box(instance.get(black_box("k")).await.expect("get k"));
        }
        let per_call = t.elapsed() / BOUNDARY_CALLS;
        report.add(
            Row::new(
                Section::Overhead,
                "plugin call, in-memory get (boundary cost)",
                "-",
            )
            .value(format!("{:.2} µs/call", per_call.as_secs_f64() * 1e6))
            .target("< 5 µs", per_call < Duration::from_micros(5))
            .samples(BOUNDARY_CALLS)
            .compare("mean over back-to-back calls, with the sidecar's per-call metrics")
            .figure("us_per_call", per_call.as_secs_f64() * 1e6),
        );
    });
}

/// Compiling the backend's plugin (what a first start does) against loading
/// it from the compile cache (every later start), in-process. Leaves the
/// shared cache warm for the sidecars started afterwards.
pub fn compile(report: &mut Report, backend: &dyn Backend) {
    progress(&format!("{}: compile vs cached load", backend.name()));
    let wasm = std::fs::read(plugin(backend.plugin())).expect("read the plugin");
    let sha = sha256_hex(&wasm);
    let engine = engine::new_engine().expect("create an engine");
    let mut compiled = Vec::with_capacity(COMPILES);
    for _ in 0..COMPILES {
        let t = Instant::now();
        black_box(cache::load_or_compile(&engine, &wasm, &sha, None).expect("compile"));
        compiled.push(t.elapsed());
    }
    let shared = shared_cache_dir();
    let (_, _) =
        cache::load_or_compile(&engine, &wasm, &sha, Some(&shared)).expect("fill the cache");
    let mut loaded = Vec::with_capacity(CACHED_LOADS);
    for _ in 0..CACHED_LOADS {
        let t = Instant::now();
        let (component, source) = cache::load_or_compile(&engine, &wasm, &sha, Some(&shared))
            .expect("load from the cache");
        loaded.push(t.elapsed());
        assert_eq!(
            source,
            cache::Source::Cache,
            "the compile cache was not used"
        );
        black_box(component);
    }
    let (compiled, loaded) = (Samples::new(compiled), Samples::new(loaded));
    report.add(
        Row::new(
            Section::Overhead,
            format!(
                "{}: compile / load from the compile cache, median",
                backend.plugin()
            ),
            backend.name(),
        )
        .value(format!(
            "{} / {}",
            human(compiled.pct(0.5)),
            human(loaded.pct(0.5))
        ))
        .samples(format!("{} + {}", compiled.len(), loaded.len()))
        .compare(format!("{} KiB component", wasm.len() / 1024))
        .figure("compile_ms", ms(compiled.pct(0.5)))
        .figure("cached_load_ms", ms(loaded.pct(0.5))),
    );
}

/// Kills the child it holds when dropped, so a failed sample leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Process start to serving HTTP (`/healthz`) and to leading its own
/// cluster (`/leader/self`): once with an empty compile cache, then with a
/// warm one. Spawns the process itself rather than through the harness,
/// whose 10 ms poll is too coarse for a figure of a few milliseconds.
pub fn starts(report: &mut Report, backend: &dyn Backend) {
    progress(&format!(
        "{}: start to serving, 1 cold compile cache, {WARM_STARTS} warm",
        backend.name()
    ));
    let cold_cache = tempfile::tempdir().expect("create a temp dir");
    let mut serving = Vec::with_capacity(WARM_STARTS);
    let mut leading = Vec::with_capacity(WARM_STARTS);
    for i in 0..=WARM_STARTS {
        // Each start leads a cluster of its own, so none waits for another's
        // leadership to expire.
        let group = Group::new(backend);
        let cache_dir = if i == 0 {
            cold_cache.path().to_path_buf()
        } else {
            shared_cache_dir()
        };
        let port = free_port();
        let cfg = group.write_config("start", port, &cache_dir);
        let started = Instant::now();
        let mut child = Running(spawn_sidecar(&cfg, &group.log("start")));
        let to_serve = poll(&mut child, port, "/healthz", started, &group);
        let to_lead = poll(&mut child, port, "/leader/self", started, &group);
        let pid = child.0.id();
        if i > 0 {
            serving.push(to_serve);
            leading.push(to_lead);
            continue;
        }
        let rss = procfs::rss_kib(pid).zip(procfs::status_kib(pid, "VmHWM:"));
        report.add(
            Row::new(
                Section::Overhead,
                "start to serving / leading, cold compile cache",
                backend.name(),
            )
            .value(format!("{} / {}", human(to_serve), human(to_lead)))
            .samples(1)
            .compare("compiles the plugin")
            .figure("serving_ms", ms(to_serve))
            .figure("leading_ms", ms(to_lead)),
        );
        if let Some((rss, peak)) = rss {
            report.add(
                Row::new(
                    Section::Overhead,
                    "sidecar RSS right after a cold-cache start",
                    backend.name(),
                )
                .value(format!("{} (peak {})", mib(rss), mib(peak)))
                .target("< 30 MiB", rss < 30 * 1024)
                .samples(1)
                .compare("the compiler's memory, not used again once the cache is warm")
                .figure("rss_mib", rss as f64 / 1024.0)
                .figure("peak_mib", peak as f64 / 1024.0),
            );
        }
    }
    let (serving, leading) = (Samples::new(serving), Samples::new(leading));
    report.add(
        Row::new(
            Section::Overhead,
            "start to serving / leading, warm compile cache, median",
            backend.name(),
        )
        .value(format!(
            "{} / {}",
            human(serving.pct(0.5)),
            human(leading.pct(0.5))
        ))
        .target(
            "serving < 200 ms",
            serving.pct(0.5) < Duration::from_millis(200),
        )
        .samples(serving.len())
        .compare(format!(
            "max {} / {}",
            human(serving.max()),
            human(leading.max())
        ))
        .figure("serving_median_ms", ms(serving.pct(0.5)))
        .figure("leading_median_ms", ms(leading.pct(0.5))),
    );
}

fn poll(child: &mut Running, port: u16, path: &str, started: Instant, group: &Group) -> Duration {
    loop {
        if request(port, "GET", path, &[], b"").is_ok_and(|r| r.status == 200) {
            return started.elapsed();
        }
        if let Some(status) = child.0.try_wait().expect("poll the sidecar") {
            panic!(
                "the sidecar exited during start ({status}):\n{}",
                std::fs::read_to_string(group.log("start")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sidecar did not answer {path} with 200 within 60 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn spawn_sidecar(config: &Path, log: &Path) -> Child {
    Command::new(sidecar_bin())
        .args(["run", &config.to_string_lossy()])
        .env("HA_SIDECAR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("create a log file"))
        .spawn()
        .expect("spawn ha-sidecar")
}
