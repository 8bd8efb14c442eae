//! The design's performance targets (DESIGN.md, "Performance targets"),
//! measured against real sidecar processes on the file backend, and against
//! an in-process plugin for the boundary cost. They live in a benchmark, not
//! in timed tests, because timings on a shared machine are for a person to
//! judge, not for CI to fail on.
//!
//! Run it with `./scripts/bench.sh`, which builds the plugins first. Progress
//! goes to stderr and the one result table to stdout.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ha_sidecar::config::Grants;
use ha_sidecar::metrics::Metrics;
use ha_sidecar::runtime::{LoadedPlugin, Member, Setup, Timing};
use support::*;

const BOUNDARY_CALLS: u32 = 200_000;
const INSTANTIATIONS: usize = 200;
/// Enough keep-alive connections to keep the sidecar's workers busy while
/// each connection waits for its answer, few enough that queueing does not
/// dominate the latency figures.
const CONNECTIONS: usize = 4;
const LOAD_WARMUP: Duration = Duration::from_secs(1);
const LOAD_TIME: Duration = Duration::from_secs(8);
const HANDOVERS: usize = 20;
const CRASHES: usize = 5;
const STARTS: usize = 10;
/// Long enough that a standby wins the election, short enough that the
/// resigned sidecar is back in the race before the next sample.
const RESIGN_HOLDOFF: Duration = Duration::from_millis(500);
/// Time for a restarted sidecar to see the current leader before the next
/// sample, so that every sample starts from two settled standbys.
const SETTLE: Duration = Duration::from_millis(500);

fn main() {
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = Table::default();

    plugin_boundary(&mut table);
    // A first start compiles the plugin, which would weigh on the memory
    // figure; start_to_serving measures that case on purpose.
    progress("warming the compile cache");
    drop(Cluster::new().start("warm"));
    leader_endpoint(&mut table, cores);
    handovers(&mut table);
    crashes(&mut table);
    start_to_serving(&mut table);

    println!("ha-sidecar benchmark (file backend; {cores} cores; lease {LEASE:?})");
    print!("{}", table.render());
    eprintln!("bench: done in {:.0?}", began.elapsed());
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

// ---------------------------------------------------------------------------
// Plugin boundary

/// The fixture's `get` touches only its own memory, so a call costs what the
/// boundary costs: the epoch deadline, the canonical ABI both ways, the
/// timeout wrapper and the metrics the sidecar records for every call.
fn plugin_boundary(table: &mut Table) {
    progress("plugin boundary (in-process fixture_faulty)");
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
        made.sort();
        table.row(
            "plugin instantiate + configure (median)",
            us(pct(&made, 0.5)),
            "-",
            INSTANTIATIONS.to_string(),
            None,
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
        table.row(
            "plugin call, in-memory get (boundary)",
            format!("{:.2} µs/call", per_call.as_secs_f64() * 1e6),
            "< 5 µs",
            BOUNDARY_CALLS.to_string(),
            Some(per_call < Duration::from_micros(5)),
        );
    });
}

// ---------------------------------------------------------------------------
// GET /leader

/// "On one core" is taken literally where the machine allows it: the sidecar
/// runs pinned to one CPU and the load generator on the others, so the
/// throughput is what one core of sidecar serves. Its CPU time is reported
/// too, which shows whether that core was the limit or the client was.
fn leader_endpoint(table: &mut Table, cores: usize) {
    progress("GET /leader throughput and latency (one sidecar)");
    let cluster = Cluster::new();
    let sidecar = cluster.start("s1");
    wait_for("s1 to lead", Duration::from_secs(20), || {
        sidecar.leads().then_some(())
    });
    let idle_rss = proc_status_kib(sidecar.pid(), "VmRSS:");
    let sidecar_cpu = cores - 1;
    let pinned = cores >= 2 && pin_process(sidecar.pid(), sidecar_cpu);
    let client_cpus: Vec<usize> = if pinned {
        (0..sidecar_cpu).collect()
    } else {
        Vec::new()
    };

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let phase = phase.clone();
            let port = sidecar.port;
            let cpu = (!client_cpus.is_empty()).then(|| client_cpus[i % client_cpus.len()]);
            std::thread::spawn(move || load_client(port, cpu, &phase))
        })
        .collect();
    std::thread::sleep(LOAD_WARMUP);
    let cpu_before = process_cpu(sidecar.pid());
    let started = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    std::thread::sleep(LOAD_TIME);
    phase.store(STOP, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let cpu_after = process_cpu(sidecar.pid());

    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.join().expect("load client panicked"));
    }
    latencies.sort_unstable();
    let served = latencies.len() as f64;
    let rate = served / elapsed.as_secs_f64();
    let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let busy = cpu.map(|c| c / elapsed.as_secs_f64());
    let placement = if pinned {
        "sidecar on 1 core".to_string()
    } else {
        "sidecar unpinned".to_string()
    };
    table.row(
        &format!("GET /leader throughput, {placement}"),
        format!("{} req/s", thousands(rate)),
        ">= 50,000",
        format!(
            "{} s, {CONNECTIONS} conns{}",
            LOAD_TIME.as_secs(),
            busy.map(|b| format!(", sidecar {:.0}% CPU", b * 100.0))
                .unwrap_or_default()
        ),
        Some(rate >= 50_000.0),
    );
    if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
        let per_core = served / cpu;
        table.row(
            "GET /leader per sidecar CPU-second",
            format!("{} req/s", thousands(per_core)),
            ">= 50,000",
            format!("{cpu:.1} CPU-s"),
            Some(per_core >= 50_000.0),
        );
    }
    let p50 = Duration::from_nanos(pct(&latencies, 0.5));
    let p99 = Duration::from_nanos(pct(&latencies, 0.99));
    table.row(
        "GET /leader latency p50 / p99",
        format!("{} / {} ms", ms3(p50), ms3(p99)),
        "p99 < 1 ms",
        thousands(served),
        Some(p99 < Duration::from_millis(1)),
    );

    // After the load, so that the figure includes whatever serving
    // allocated; the idle figure and the anonymous/file split tell a leak or
    // an allocator's arenas from mapped code.
    let pid = sidecar.pid();
    if let Some(rss) = proc_status_kib(pid, "VmRSS:") {
        let idle = idle_rss.map(|k| format!(" (idle {})", mib(k)));
        let split = proc_status_kib(pid, "RssAnon:")
            .zip(proc_status_kib(pid, "RssFile:"))
            .map(|(a, f)| format!(" (anon {}, file {} MiB)", mib(a), mib(f)));
        table.row(
            "sidecar RSS, warm cache, after the load",
            format!("{} MiB{}", mib(rss), idle.unwrap_or_default()),
            "< 30 MiB",
            format!("1{}", split.unwrap_or_default()),
            Some(rss < 30 * 1024),
        );
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// One keep-alive connection sending one request at a time; returns the
/// latency in nanoseconds of every request that ran inside the measurement.
fn load_client(port: u16, cpu: Option<usize>, phase: &AtomicU8) -> Vec<u64> {
    if let Some(cpu) = cpu {
        pin_thread(0, cpu);
    }
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the sidecar");
    conn.set_nodelay(true).expect("set TCP_NODELAY");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let request = b"GET /leader HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    let mut buf = vec![0u8; 8192];
    let mut latencies = Vec::with_capacity(1 << 20);
    loop {
        let at_start = phase.load(Ordering::Relaxed);
        if at_start == STOP {
            return latencies;
        }
        let t = Instant::now();
        conn.write_all(request).expect("send a request");
        let status = read_response(&mut conn, &mut buf);
        let took = t.elapsed();
        assert_eq!(status, 200, "GET /leader answered {status}");
        if at_start == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
            latencies.push(took.as_nanos() as u64);
        }
    }
}

/// Reads exactly one response (headers plus content-length body) from a
/// keep-alive connection and returns its status.
fn read_response(conn: &mut TcpStream, buf: &mut [u8]) -> u16 {
    let mut len = 0;
    loop {
        let n = conn.read(&mut buf[len..]).expect("read a response");
        assert!(n > 0, "the sidecar closed the connection");
        len += n;
        let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
            assert!(len < buf.len(), "response headers too long");
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).expect("headers are text");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .expect("a content-length");
        let total = end + 4 + body;
        assert!(total <= buf.len(), "response too long");
        while len < total {
            let n = conn
                .read(&mut buf[len..total])
                .expect("read a response body");
            assert!(n > 0, "the sidecar closed the connection");
            len += n;
        }
        return status;
    }
}

// ---------------------------------------------------------------------------
// Handover and takeover

fn handovers(table: &mut Table) {
    let cluster = Cluster::new();
    let mut sidecars = cluster.start_three();
    sole_leader(&sidecars, Duration::from_secs(20));

    progress(&format!(
        "graceful handover by SIGTERM ({HANDOVERS} samples)"
    ));
    let mut took = Vec::with_capacity(HANDOVERS);
    for _ in 0..HANDOVERS {
        let leader = sole_leader(&sidecars, Duration::from_secs(20));
        let standbys = ports_except(&sidecars, leader);
        let sent = Instant::now();
        sidecars[leader].signal(libc::SIGTERM);
        took.push(until_one_leads(&standbys, sent, Duration::from_secs(10)));
        let status = sidecars[leader].wait_exit(Duration::from_secs(15));
        assert!(status.success(), "the old leader exited with {status}");
        let id = sidecars[leader].id.clone();
        sidecars[leader] = cluster.start(&id);
        std::thread::sleep(SETTLE);
    }
    handover_row(table, "graceful handover (SIGTERM) p50 / p99", &mut took);

    progress(&format!(
        "graceful handover by resign ({HANDOVERS} samples)"
    ));
    let path = format!("/leader/resign?holdoff={}ms", RESIGN_HOLDOFF.as_millis());
    let mut took = Vec::with_capacity(HANDOVERS);
    for _ in 0..HANDOVERS {
        let leader = sole_leader(&sidecars, Duration::from_secs(20));
        let standbys = ports_except(&sidecars, leader);
        let sent = Instant::now();
        let r = request(sidecars[leader].port, "POST", &path, &[], b"").expect("POST resign");
        assert_eq!(r.status, 200, "resign failed: {}", r.text());
        took.push(until_one_leads(&standbys, sent, Duration::from_secs(10)));
        std::thread::sleep((RESIGN_HOLDOFF + SETTLE).saturating_sub(sent.elapsed()));
    }
    handover_row(table, "graceful handover (resign) p50 / p99", &mut took);
}

fn handover_row(table: &mut Table, name: &str, took: &mut [Duration]) {
    took.sort();
    let (p50, p99) = (pct(took, 0.5), pct(took, 0.99));
    table.row(
        name,
        format!("{} / {} ms", ms1(p50), ms1(p99)),
        "p99 < 100 ms",
        took.len().to_string(),
        Some(p99 < Duration::from_millis(100)),
    );
}

fn crashes(table: &mut Table) {
    progress(&format!(
        "crash takeover by kill -9 ({CRASHES} samples, about a lease each)"
    ));
    let cluster = Cluster::new();
    let mut sidecars = cluster.start_three();
    let mut took = Vec::with_capacity(CRASHES);
    for _ in 0..CRASHES {
        let leader = sole_leader(&sidecars, Duration::from_secs(20));
        let standbys = ports_except(&sidecars, leader);
        let killed = Instant::now();
        sidecars[leader].kill9();
        took.push(until_one_leads(
            &standbys,
            killed,
            LEASE + Duration::from_secs(10),
        ));
        let id = sidecars[leader].id.clone();
        sidecars[leader] = cluster.start(&id);
        std::thread::sleep(SETTLE);
    }
    took.sort();
    let bound = LEASE + Duration::from_millis(100);
    table.row(
        "crash takeover (kill -9) min/median/max",
        format!(
            "{} / {} / {} s",
            secs(took[0]),
            secs(pct(&took, 0.5)),
            secs(took[took.len() - 1])
        ),
        &format!("<= lease {LEASE:?} + 100 ms"),
        took.len().to_string(),
        Some(took[took.len() - 1] <= bound),
    );
}

fn ports_except(sidecars: &[Sidecar], leader: usize) -> Vec<u16> {
    sidecars
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s.port)
        .collect()
}

/// Polls every millisecond, since the figures being measured are tens of
/// milliseconds and the harness's own 10 ms poll would blur them.
fn until_one_leads(ports: &[u16], since: Instant, timeout: Duration) -> Duration {
    loop {
        for &port in ports {
            if request(port, "GET", "/leader/self", &[], b"").is_ok_and(|r| r.status == 200) {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < timeout,
            "no standby took over within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// Start to serving

/// Kills the child it holds when dropped, so a failed sample leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the process itself rather than through `Sidecar::start`, whose
/// 10 ms poll is too coarse for a figure of a few milliseconds. The first
/// start uses an empty compile cache of its own: it fills the cache for the
/// measured warm starts and shows what a first start costs in time and memory.
fn start_to_serving(table: &mut Table) {
    progress(&format!(
        "start to serving: 1 cold compile cache, {STARTS} warm"
    ));
    let cluster = Cluster::new();
    let cache = cluster.path().join("compile-cache");
    let shared = shared_cache_dir().display().to_string();
    let mut took = Vec::with_capacity(STARTS);
    for i in 0..=STARTS {
        let id = format!("start{i}");
        let port = free_port();
        let yaml = cluster
            .file_config(&id, port, "")
            .replace(&shared, &cache.display().to_string());
        let cfg = cluster.write_config(&id, &yaml);
        let log = cluster.path().join(format!("{id}.log"));
        let started = Instant::now();
        let mut child = Running(spawn_sidecar(&cfg, &log));
        loop {
            if request(port, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
                break;
            }
            if let Some(status) = child.0.try_wait().expect("poll the sidecar") {
                panic!(
                    "{id} exited during start ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{id} did not serve within 60 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        let elapsed = started.elapsed();
        if i > 0 {
            took.push(elapsed);
            continue;
        }
        table.row(
            "start to serving, cold cache (compiles)",
            format!("{} ms", ms1(elapsed)),
            "-",
            "1".into(),
            None,
        );
        let pid = child.0.id();
        if let Some((rss, peak)) =
            proc_status_kib(pid, "VmRSS:").zip(proc_status_kib(pid, "VmHWM:"))
        {
            table.row(
                "sidecar RSS after a cold-cache start",
                format!("{} MiB (peak {})", mib(rss), mib(peak)),
                "< 30 MiB",
                "1".into(),
                Some(rss < 30 * 1024),
            );
        }
    }
    took.sort();
    let median = pct(&took, 0.5);
    table.row(
        "start to serving, warm cache (median)",
        format!("{} ms (max {})", ms1(median), ms1(took[took.len() - 1])),
        "< 200 ms",
        took.len().to_string(),
        Some(median < Duration::from_millis(200)),
    );
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

// ---------------------------------------------------------------------------
// Processes: CPU time, memory, placement (Linux /proc and affinity; elsewhere
// the figures that need them are left out).

/// User plus system CPU seconds the process has used so far.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Pins every thread of a running process; threads it starts later inherit
/// the placement from the thread that starts them.
fn pin_process(pid: u32, cpu: usize) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut all = true;
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().parse().unwrap_or(0);
        all &= tid != 0 && pin_thread(tid, cpu);
    }
    all
}

#[cfg(target_os = "linux")]
fn pin_thread(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data, and sched_setaffinity only reads it;
    // tid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_thread(_tid: libc::pid_t, _cpu: usize) -> bool {
    false
}

// ---------------------------------------------------------------------------
// The table and number formatting

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(
        &mut self,
        metric: &str,
        value: String,
        target: &str,
        samples: String,
        met: Option<bool>,
    ) {
        let verdict = match met {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        eprintln!("bench:   {metric}: {value} (target {target})");
        self.rows
            .push([metric.into(), value, target.into(), samples, verdict.into()]);
    }

    fn render(&self) -> String {
        let header = ["metric", "value", "target", "samples", "met"].map(String::from);
        let mut widths = [0; 5];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Nearest-rank percentile of sorted samples.
fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms1(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn ms3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
