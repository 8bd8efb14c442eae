//! Test harness: a real Prometheus server (Debian's `prometheus` package) on
//! a free loopback port, scraping the given sidecars in job `ha-sidecar`
//! with a `cluster` label, and evaluating a rule file, both every 250 ms.
//! Its data directory is temporary; it dies with the test process and is
//! killed when its handle drops. Its log is `prometheus.log`, which failure
//! messages quote.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/prometheus.rs"]
//! mod prometheus;
//! ```
//!
//! `scripts/test.sh` installs the package; if the binary is missing the
//! tests fail and say so, they never skip.

#![allow(dead_code)]

mod services {
    include!("services.rs");
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use services::{free_ports, spawn_with_parent_death_signal};

const BIN: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
const NOT_INSTALLED: &str = "Prometheus is not installed (no /usr/bin/prometheus): run ./scripts/test.sh, which installs the Debian package prometheus";

pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (sidecar HTTP ports) as HA
    /// cluster `cluster`, with the rules of `rules`, and waits until it is
    /// ready.
    pub fn start(targets: &[u16], cluster: &str, rules: &Path) -> Prometheus {
        assert!(Path::new(BIN).is_file(), "{NOT_INSTALLED}");
        let dir = tempfile::Builder::new()
            .prefix("ha-sidecar-prometheus-")
            .tempdir()
            .expect("a temporary directory");
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 250ms\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: ha-sidecar\n    static_configs:\n      - targets: [{}]\n        labels:\n          cluster: {cluster}\n",
            rules.display(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yaml");
        std::fs::write(&config_path, config).expect("write prometheus.yaml");
        let port = free_ports(1)[0];
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .expect("create prometheus.log");
        let mut cmd = Command::new(BIN);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = spawn_with_parent_death_signal(cmd)
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        let mut p = Prometheus { child, dir, port };
        let started = Instant::now();
        loop {
            if let Ok(r) = super::support::request(p.port, "GET", "/-/ready", &[], b"")
                && r.status == 200
            {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.log_tail());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus was not ready within 30 s:\n{}",
                p.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let r = super::support::request(self.port, "GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}\n{}", self.log_tail()));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        let body = if r
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&r.body)
        } else {
            r.body.clone()
        };
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// An instant query's result (`data.result`); panics if Prometheus
    /// refuses the expression, naming it.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let r = self.get(&format!("/api/v1/query?query={}", encode(expr)));
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts now pending or firing.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The state of alert `name` (`pending`, `firing`), none if neither.
    pub fn alert_state(&self, name: &str) -> Option<String> {
        self.alerts()
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }
}

/// A chunked body's content (the harness's HTTP client shows bodies as sent).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .expect("a chunk size line");
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    out
}

/// Percent-encoding for a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
