//! Test harness: a real etcd server on loopback ports of its own, with a
//! temporary data directory.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/etcd.rs"]
//! mod etcd;
//! ```
//!
//! The server is the Debian package `etcd-server` (3.4); `scripts/test.sh`
//! installs it. If it is missing the tests fail and say so, they never skip.
//! The process dies with the test process (`PR_SET_PDEATHSIG`) and is killed
//! and reaped when its handle drops. Its output goes to `etcd.log`, which
//! failure messages quote.

#![allow(dead_code)] // each test binary uses a different part of the harness

mod services {
    include!("services.rs");
}

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use services::{free_ports, spawn_with_parent_death_signal};

const NOT_INSTALLED: &str =
    "etcd is not installed: run ./scripts/test.sh, which installs the Debian package etcd-server";
/// etcd serves in well under a second; this is generous for a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` (`--listen-metrics-urls`), also when clients need TLS.
    metrics_port: u16,
    tls: Option<ServerTls>,
    /// The extra flags it was started with, to restart it the same way.
    flags: Vec<String>,
}

/// The server side of TLS: its certificate and key, and the CA whose
/// client certificates it requires (`--client-cert-auth`).
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// A user of etcd's authentication, with a role on one key prefix.
pub struct AuthUser<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub prefix: &'a str,
}

impl Etcd {
    /// Starts a single-member etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        Self::start_with(None, &[])
    }

    /// Starts etcd serving clients over TLS only, requiring a client
    /// certificate signed by `tls.client_ca`.
    pub fn start_tls(tls: ServerTls) -> Etcd {
        Self::start_with(Some(tls), &[])
    }

    /// Starts etcd with authentication enabled: a root user (password
    /// `root-password`) and `user` with read-write on its prefix alone. Simple
    /// tokens live `token_ttl_s` seconds, so tests see them expire.
    pub fn start_auth(user: &AuthUser<'_>, token_ttl_s: u32) -> Etcd {
        let ttl = token_ttl_s.to_string();
        let etcd = Self::start_with(None, &["--auth-token", "simple", "--auth-token-ttl", &ttl]);
        let prefix = user.prefix.as_bytes();
        use serde_json::json;
        let steps = [
            (
                "/v3/auth/user/add",
                json!({"name": "root", "password": "root-password"}),
            ),
            ("/v3/auth/role/add", json!({"name": "root"})),
            (
                "/v3/auth/user/grant",
                json!({"user": "root", "role": "root"}),
            ),
            ("/v3/auth/role/add", json!({"name": "ha"})),
            (
                "/v3/auth/role/grant",
                json!({"name": "ha", "perm": {
                    "key": b64(prefix),
                    "range_end": b64(&prefix_end(prefix)),
                    "permType": "READWRITE",
                }}),
            ),
            (
                "/v3/auth/user/add",
                json!({"name": user.name, "password": user.password}),
            ),
            (
                "/v3/auth/user/grant",
                json!({"user": user.name, "role": "ha"}),
            ),
            ("/v3/auth/enable", json!({})),
        ];
        for (path, body) in steps {
            http_post(etcd.client_port, path, &body.to_string()).unwrap_or_else(|| {
                panic!(
                    "etcd {path} failed while enabling auth:\n{}",
                    etcd.log_tail()
                )
            });
        }
        etcd
    }

    fn start_with(tls: Option<ServerTls>, flags: &[&str]) -> Etcd {
        let binary = find_etcd();
        let dir = tempfile::Builder::new()
            .prefix("ha-sidecar-etcd-")
            .tempdir()
            .expect("a temporary directory");
        let ports = free_ports(3);
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: ports[0],
            peer_port: ports[1],
            metrics_port: ports[2],
            tls,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        etcd.spawn(&binary);
        etcd
    }

    /// Kills the member and starts it again on the same data and ports (with
    /// simple tokens, every token handed out before is void after this).
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(&find_etcd());
    }

    fn spawn(&mut self, binary: &PathBuf) {
        let flags = self.flags.clone();
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd.log");
        let mut cmd = Command::new(binary);
        cmd.args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--listen-metrics-urls", &metrics])
            .args(&flags);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.client_ca)
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = spawn_with_parent_death_signal(cmd)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.child = Some(child);
        let started = Instant::now();
        while !self.healthy() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "etcd exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "etcd did not become healthy within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URL, as sidecar configs list it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /health` answers `{"health":"true"}` once the member serves.
    pub fn healthy(&self) -> bool {
        http_get(self.metrics_port, "/health").is_some_and(|body| body.contains("\"true\""))
    }

    /// A raw read through the JSON gateway, bypassing any sidecar: the keys
    /// under `prefix`, to check what the plugin wrote.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let body = format!(
            "{{\"key\":\"{}\",\"range_end\":\"{}\",\"keys_only\":true}}",
            b64(prefix.as_bytes()),
            b64(&prefix_end(prefix.as_bytes()))
        );
        let text = http_post(self.client_port, "/v3/kv/range", &body)
            .unwrap_or_else(|| panic!("etcd range failed:\n{}", self.log_tail()));
        let v: serde_json::Value = serde_json::from_str(&text).expect("etcd answers JSON");
        v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| String::from_utf8(unb64(kv["key"].as_str().unwrap())).unwrap())
            .collect()
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// A plain client of the JSON gateway, for what the tests and the
    /// benchmark do to etcd directly.
    pub fn client(&self) -> EtcdClient {
        EtcdClient {
            port: self.client_port,
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// `/v3/kv/put` and `/v3/kv/range`, one connection per request.
pub struct EtcdClient {
    port: u16,
}

impl EtcdClient {
    pub fn put(&self, key: &str, value: &[u8]) {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            b64(key.as_bytes()),
            b64(value)
        );
        http_post(self.port, "/v3/kv/put", &body)
            .unwrap_or_else(|| panic!("etcd put {key} failed"));
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let body = format!("{{\"key\":\"{}\"}}", b64(key.as_bytes()));
        let text = http_post(self.port, "/v3/kv/range", &body)
            .unwrap_or_else(|| panic!("etcd range {key} failed"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("etcd answers JSON");
        let kv = v["kvs"].as_array()?.first()?.clone();
        Some(unb64(kv["value"].as_str().unwrap_or("")))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find_etcd() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{NOT_INSTALLED}"))
}

fn http_exchange(port: u16, request: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn http_get(port: u16, path: &str) -> Option<String> {
    http_exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

fn http_post(port: u16, path: &str, body: &str) -> Option<String> {
    http_exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

pub fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        out.push_str(&"=".repeat(3 - chunk.len()));
    }
    out
}

pub fn unb64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, &d| n << 6 | u32::from(d)) << (6 * (4 - chunk.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
