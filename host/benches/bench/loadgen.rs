//! The load generator: this same benchmark binary re-executed as
//! `bench loadgen ...`, so that its CPU time, threads and allocations are
//! its own process's and never counted as the sidecar's or the bench's. It
//! holds N keep-alive HTTP/1.1 connections (a hyper client each), sends one
//! request at a time on each, and after a warm-up measures for a fixed time.
//!
//! Protocol with the parent, on stdout: the line `measuring` when the
//! measured window opens, then one JSON line with the [`LoadResult`].

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::procfs;

/// What load to send; parsed from the command line in the child, turned
/// back into arguments by the parent ([`LoadSpec::to_args`]).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadSpec {
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// `{c}` becomes the connection's index, so each can use its own key.
    #[arg(long)]
    pub path: String,
    /// Request body: this many bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Extra request header, `name: value`; may be repeated.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub connections: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// CPUs to run on (empty: wherever the kernel likes); also sets how many
    /// threads the client uses.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The status every answer must have; any other counts as an error.
    #[arg(long, default_value_t = 200)]
    pub expect: u16,
}

impl LoadSpec {
    /// A GET of `path` with no body, headers or pinning.
    pub fn get(
        port: u16,
        path: &str,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> Self {
        LoadSpec {
            port,
            method: "GET".into(),
            path: path.into(),
            body_bytes: 0,
            headers: Vec::new(),
            connections,
            warmup,
            duration,
            cpus: Vec::new(),
            expect: 200,
        }
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "loadgen".to_string(),
            format!("--port={}", self.port),
            format!("--method={}", self.method),
            format!("--path={}", self.path),
            format!("--body-bytes={}", self.body_bytes),
            format!("--connections={}", self.connections),
            format!("--warmup={}ms", self.warmup.as_millis()),
            format!("--duration={}ms", self.duration.as_millis()),
            format!("--expect={}", self.expect),
        ];
        args.extend(self.headers.iter().map(|h| format!("--header={h}")));
        if !self.cpus.is_empty() {
            let cpus: Vec<String> = self.cpus.iter().map(|c| c.to_string()).collect();
            args.push(format!("--cpus={}", cpus.join(",")));
        }
        args
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoadResult {
    /// Answers with the expected status inside the measured window.
    pub requests: u64,
    pub seconds: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// Answers with another status, or failed exchanges, over the whole run.
    pub errors: u64,
    pub first_error: Option<String>,
    /// The load generator's own CPU time during the measured window.
    pub cpu_seconds: f64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn p50(&self) -> Duration {
        Duration::from_nanos(self.p50_ns)
    }

    pub fn p99(&self) -> Duration {
        Duration::from_nanos(self.p99_ns)
    }

    /// For the table's notes: nothing when every answer was as expected.
    pub fn error_note(&self) -> String {
        match &self.first_error {
            Some(e) if self.errors > 0 => format!("; {} errors, first: {e}", self.errors),
            _ => String::new(),
        }
    }
}

/// Runs the load in a child process; `on_measuring` is called when the
/// measured window opens (to read the sidecar's CPU time, say), and the
/// result comes back when it closes.
pub fn run(spec: &LoadSpec, mut on_measuring: impl FnMut()) -> LoadResult {
    let exe = std::env::current_exe().expect("find the benchmark's own executable");
    let mut child = Command::new(exe)
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the load generator");
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut result = None;
    for line in out.lines() {
        let line = line.expect("read the load generator's output");
        if line == "measuring" {
            on_measuring();
        } else if line.starts_with('{') {
            result = Some(serde_json::from_str(&line).expect("the load generator's result"));
        }
    }
    let status = child.wait().expect("wait for the load generator");
    assert!(status.success(), "the load generator failed ({status})");
    result.expect("the load generator printed no result")
}

const ERROR_CHARS: usize = 160;
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The child's side: `bench loadgen ...`.
pub fn child_main(spec: LoadSpec) -> anyhow::Result<()> {
    if !spec.cpus.is_empty() && !procfs::pin_thread(0, &spec.cpus) {
        anyhow::bail!("cannot pin the load generator to CPUs {:?}", spec.cpus);
    }
    let threads = if spec.cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        spec.cpus.len()
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let result = rt.block_on(drive(spec))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Keeps the first error, on one line and short enough for a table cell.
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| {
            let line = e.split_whitespace().collect::<Vec<_>>().join(" ");
            match line.char_indices().nth(ERROR_CHARS) {
                Some((cut, _)) => format!("{}...", &line[..cut]),
                None => line,
            }
        });
    }
}

async fn drive(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let spec = Arc::new(spec);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let body = Bytes::from(vec![b'x'; spec.body_bytes]);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..spec.connections {
        tasks.spawn(connection(c, spec.clone(), body.clone(), phase.clone()));
    }
    tokio::time::sleep(spec.warmup).await;
    let cpu_before = procfs::own_cpu_seconds();
    let started = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "measuring")?;
        out.flush()?;
    }
    tokio::time::sleep(spec.duration).await;
    phase.store(STOP, Ordering::SeqCst);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = procfs::own_cpu_seconds() - cpu_before;

    let mut all = Tally {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    while let Some(t) = tasks.join_next().await {
        let t = t?;
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
        if let Some(e) = t.first_error {
            all.first_error.get_or_insert(e);
        }
    }
    all.latencies.sort_unstable();
    let pct = |p: f64| {
        if all.latencies.is_empty() {
            return 0;
        }
        let rank = (p * all.latencies.len() as f64).ceil() as usize;
        all.latencies[rank.clamp(1, all.latencies.len()) - 1]
    };
    Ok(LoadResult {
        requests: all.latencies.len() as u64,
        seconds,
        p50_ns: pct(0.5),
        p99_ns: pct(0.99),
        p999_ns: pct(0.999),
        max_ns: all.latencies.last().copied().unwrap_or(0),
        errors: all.errors,
        first_error: all.first_error,
        cpu_seconds,
    })
}

/// One keep-alive connection, one request at a time, until the run stops.
/// Only exchanges that began and ended inside the measured window count
/// toward latency and throughput.
async fn connection(c: usize, spec: Arc<LoadSpec>, body: Bytes, phase: Arc<AtomicU8>) -> Tally {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        errors: 0,
        first_error: None,
    };
    let path = spec.path.replace("{c}", &c.to_string());
    let headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let stream = match tokio::net::TcpStream::connect(("127.0.0.1", spec.port)).await {
        Ok(s) => s,
        Err(e) => {
            tally.error(format!("connect: {e}"));
            return tally;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => {
            tally.error(format!("handshake: {e}"));
            return tally;
        }
    };
    let driver = tokio::spawn(conn);
    loop {
        let at_start = phase.load(Ordering::Relaxed);
        if at_start == STOP {
            break;
        }
        let mut req = Request::builder()
            .method(spec.method.as_str())
            .uri(&path)
            .header(hyper::header::HOST, "127.0.0.1");
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body.clone()))
            .expect("a well-formed request");
        let t = Instant::now();
        let answer = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, bytes))
        }
        .await;
        let took = t.elapsed();
        match answer {
            Ok((status, _)) if status == spec.expect => {
                if at_start == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
                    tally.latencies.push(took.as_nanos() as u64);
                }
            }
            Ok((status, bytes)) => {
                tally.error(format!("{status} {}", String::from_utf8_lossy(&bytes)));
            }
            Err(e) => {
                // The connection is gone; a new one would hide the failure.
                tally.error(format!("{e}"));
                break;
            }
        }
    }
    driver.abort();
    tally
}
