//! Test harness: real `ha-sidecar` processes on free loopback ports, each
//! with its own config, sharing one backend directory per cluster. Processes
//! are killed when their handle drops, so a failing test leaves nothing behind.
//!
//! Plugins are built by `scripts/test.sh` before the tests run; a missing
//! plugin fails the test with that instruction rather than skipping it.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cuts;
pub mod overlap;
pub mod parallel;
pub mod proxy;
pub mod roster;
pub mod schedule;
pub mod workload;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The binary under test; `HA_SIDECAR_BIN` points the tests at another
/// build (a soak keeps its own copy while the tree is rebuilt).
pub fn sidecar_bin() -> PathBuf {
    std::env::var_os("HA_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ha-sidecar")))
}

/// A built plugin, e.g. `plugin("ha_plugin_file")`.
pub fn plugin(name: &str) -> PathBuf {
    let p = repo_root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "plugin {} is not built: run ./scripts/test.sh, which builds the plugins before the tests",
        p.display()
    );
    p
}

/// Plugin settings for in-process runs (the conformance suite), with test
/// defaults and the shared compile cache.
pub fn plugin_config(name: &str, settings: &[(&str, &str)]) -> ha_sidecar::config::PluginConfig {
    ha_sidecar::config::PluginConfig {
        path: plugin(name),
        sha256: None,
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        memory_limit: 64 << 20,
        call_timeout: Duration::from_secs(5),
        cache_dir: Some(shared_cache_dir()),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(1),
        state_instances: 8,
    }
}

/// One compile cache for the whole test run: each plugin compiles once.
pub fn shared_cache_dir() -> PathBuf {
    repo_root().join("target/test-compile-cache")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// Test timing: short enough for quick tests, long enough for a loaded 2-core machine.
pub const LEASE: Duration = Duration::from_secs(2);
pub const TIMING: &str =
    "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms, resign-holdoff: 3s}\n";

/// The `zookeeper` capability grant every ZooKeeper test uses: `quorum`, a
/// session of `session` and quick, bounded connection retries.
pub fn zookeeper_grant(quorum: &str, session: Duration) -> String {
    format!(
        "zookeeper: {{quorum: '{quorum}', client: {{session-timeout: {}ms, connection-timeout: 2s, retry-wait: 200ms, max-retry-wait: 1s, max-retry-attempts: 3}}}}",
        session.as_millis()
    )
}

/// A test sidecar's config: the member (`http://<id>.example:8081`), the
/// loopback listener, a plugin built in this repository with its settings,
/// the granted capabilities and the test `TIMING`. One builder, so that every
/// backend's tests spell the shared parts the same way.
pub struct SidecarYaml {
    id: String,
    port: u16,
    plugin: String,
    plugin_lines: String,
    settings: String,
    capabilities: Vec<String>,
    http: String,
}

impl SidecarYaml {
    /// `plugin` is the crate's artifact name, e.g. `ha_plugin_zookeeper`.
    pub fn new(id: &str, port: u16, plugin: &str) -> Self {
        Self {
            id: id.into(),
            port,
            plugin: plugin.into(),
            plugin_lines: String::new(),
            settings: String::new(),
            capabilities: Vec::new(),
            http: String::new(),
        }
    }

    /// More keys of the `http` flow map, e.g. `token-file: '/x'`.
    pub fn http(mut self, flow: &str) -> Self {
        self.http = format!(", {flow}");
        self
    }

    /// The inside of the plugin's `settings` flow map, e.g. `cluster-id: test`.
    pub fn settings(mut self, flow: &str) -> Self {
        self.settings = flow.into();
        self
    }

    /// One more key of the `plugin` section, e.g. `memory-limit: 32MiB`.
    pub fn plugin_key(mut self, line: &str) -> Self {
        self.plugin_lines.push_str(&format!("  {line}\n"));
        self
    }

    /// One capability grant, as YAML under `capabilities:` (its own lines
    /// indented by two spaces after the first), e.g. `filesystem: {dir: x}`.
    pub fn capability(mut self, yaml: &str) -> Self {
        self.capabilities.push(yaml.into());
        self
    }

    pub fn build(&self) -> String {
        let id = &self.id;
        let mut y = format!(
            "member: {{id: {id}, address: 'http://{id}.example:8081'}}\nhttp: {{listen: '127.0.0.1:{}'{}}}\nplugin:\n  path: '{}'\n  cache-dir: '{}'\n{}",
            self.port,
            self.http,
            plugin(&self.plugin).display(),
            shared_cache_dir().display(),
            self.plugin_lines,
        );
        if !self.settings.is_empty() {
            y.push_str(&format!("  settings: {{{}}}\n", self.settings));
        }
        if !self.capabilities.is_empty() {
            y.push_str("capabilities:\n");
            for c in &self.capabilities {
                y.push_str(&format!("  {c}\n"));
            }
        }
        y + TIMING
    }
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `request_within` with a timeout long enough for any long poll the tests make.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    request_within(port, method, path, headers, body, Duration::from_secs(120))
}

/// A minimal HTTP/1.1 client (one request per connection), so that the
/// harness sees every status and header exactly as sent. The whole exchange
/// (connect, send, receive) must finish within `timeout`: a SIGSTOPped
/// sidecar accepts connections (the kernel does) but never answers.
pub fn request_within(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))
    };
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.set_write_timeout(Some(left()?))?;
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(left()?))?;
        match s.read(&mut buf)? {
            0 => break,
            n => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A directory for one test's sidecars: configs, logs and (by default) the
/// shared backend directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config for the file backend, shared directory `data/`.
    pub fn file_config(&self, id: &str, port: u16, extra: &str) -> String {
        let dir = self.path().join("data");
        SidecarYaml::new(id, port, "ha_plugin_file")
            .settings("cluster-id: test, poll-interval-ms: 20")
            .capability(&format!("filesystem: {{dir: '{}'}}", dir.display()))
            .build()
            + extra
    }

    pub fn write_config(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).expect("write config");
        p
    }

    /// Starts a sidecar on the file backend and waits until it serves.
    pub fn start(&self, id: &str) -> Sidecar {
        self.start_with(id, |port| self.file_config(id, port, ""))
    }

    /// Starts sidecar `id` on a free port with the config `yaml(port)` (written
    /// to `<id>.yaml`, logging to `<id>.log`) and waits until it serves.
    pub fn start_with(&self, id: &str, yaml: impl FnOnce(u16) -> String) -> Sidecar {
        let port = free_port();
        let cfg = self.write_config(id, &yaml(port));
        Sidecar::start(id, port, &cfg, &self.path().join(format!("{id}.log")))
    }

    pub fn start_three(&self) -> Vec<Sidecar> {
        ["s1", "s2", "s3"].iter().map(|id| self.start(id)).collect()
    }
}

pub struct Sidecar {
    pub id: String,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Sidecar {
    pub fn start(id: &str, port: u16, config: &Path, log: &Path) -> Self {
        Self::start_env(id, port, config, log, &[])
    }

    /// Like `start`, with extra environment (e.g. `HA_SIDECAR_FAILPOINT`).
    pub fn start_env(id: &str, port: u16, config: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_command(id, port, log, Self::command(config, log, env))
    }

    /// Starts `cmd` (from `command`, adjusted by the test: limits, a wrapper)
    /// and waits until it serves.
    pub fn start_command(id: &str, port: u16, log: &Path, mut cmd: Command) -> Self {
        let child = cmd.spawn().expect("spawn ha-sidecar");
        let mut s = Sidecar {
            id: id.into(),
            port,
            log: log.into(),
            child: Some(child),
        };
        wait_for(
            &format!("{id} to serve HTTP"),
            Duration::from_secs(30),
            || {
                if let Some(status) = s.exited() {
                    panic!("{id} exited during start ({status}):\n{}", s.log_text());
                }
                s.get("/healthz").ok().map(|_| ())
            },
        );
        s
    }

    /// Starts the process without waiting for it to serve (a fault
    /// schedule cannot block on a start that may be refused).
    pub fn spawn(id: &str, port: u16, config: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        let child = Self::command(config, log, env)
            .spawn()
            .expect("spawn ha-sidecar");
        Sidecar {
            id: id.into(),
            port,
            log: log.into(),
            child: Some(child),
        }
    }

    /// The command that runs a sidecar with `config`, logging to `log`.
    pub fn command(config: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        let mut cmd = Command::new(sidecar_bin());
        cmd.args(["run", &config.to_string_lossy()])
            .envs(env.iter().copied())
            .env("HA_SIDECAR_LOG", "info,ha_sidecar=debug")
            .stdout(Stdio::null())
            .stderr(out);
        cmd
    }

    /// The exit status, once the process has exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        request(self.port, "GET", path, &[], b"")
    }

    pub fn leader(&self) -> serde_json::Value {
        self.get("/leader").expect("GET /leader").json()
    }

    pub fn leads(&self) -> bool {
        self.get("/leader/self")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    /// The term token this sidecar holds (panics if it does not lead).
    pub fn term(&self) -> u64 {
        let v = self.leader();
        assert_eq!(v["leading"], true, "{} does not lead: {v}", self.id);
        v["term"].as_u64().expect("term is a number")
    }

    pub fn put(&self, key: &str, value: &[u8], headers: &[(&str, &str)]) -> Response {
        request(self.port, "PUT", &format!("/state/{key}"), headers, value).expect("PUT")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for(&format!("{} to exit", self.id), timeout, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The single sidecar that leads, once exactly one does.
pub fn sole_leader(sidecars: &[Sidecar], timeout: Duration) -> usize {
    wait_for("exactly one leader", timeout, || {
        let leading: Vec<usize> = sidecars
            .iter()
            .enumerate()
            .filter(|(_, s)| s.leads())
            .map(|(i, _)| i)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    })
}

/// Runs `ha-sidecar` with `args` to completion: (exit code, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(sidecar_bin())
        .args(args)
        .env("HA_SIDECAR_LOG", "info")
        .output()
        .expect("run ha-sidecar");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// Runs the conformance suite against the plugin, capabilities, settings and
/// timing of the config at `path`, as `ha-sidecar plugin check` does, and
/// fails with the table if any check fails.
pub async fn assert_conformance(path: &Path) {
    use ha_sidecar::conformance::{self, Subject};
    let config = ha_sidecar::config::Config::load(path).expect("a valid config");
    let outcomes = conformance::run(&Subject::for_config(&config), None).await;
    let table = conformance::render(&outcomes);
    println!("{table}");
    assert_eq!(outcomes.len(), conformance::checks().len(), "{table}");
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name)
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}\n{table}");
}

/// The sidecar config at `config` with its plugin swapped for the same
/// backend built for contract 0.1 (`plugins/fixtures/contract-0-1`), written
/// beside it as `<name>-0-1.yaml`.
pub fn with_contract_0_1_build(config: &Path) -> PathBuf {
    let yaml = std::fs::read_to_string(config).expect("read config");
    let (current, previous) = ["file", "zookeeper", "kubernetes", "postgres"]
        .iter()
        .map(|b| {
            (
                plugin(&format!("ha_plugin_{b}")),
                plugin(&format!("fixture_contract_0_1_{b}")),
            )
        })
        .find(|(current, _)| yaml.contains(&*current.to_string_lossy()))
        .expect("a config for one of the backends built for contract 0.1");
    let swapped = yaml.replace(&*current.to_string_lossy(), &previous.to_string_lossy());
    let path = config.with_file_name(format!(
        "{}-0-1.yaml",
        config.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, swapped).expect("write config");
    path
}

/// After `new_leader` took over from the holder of `old_term`, which wrote
/// `v1` to `jobs/j1/graph`: a write fenced by the old term is refused (409)
/// through every sidecar and changes nothing, and the new term writes.
pub fn assert_deposed_write_rejected(sidecars: &[Sidecar], new_leader: &Sidecar, old_term: &str) {
    for s in sidecars {
        let r = s.put("jobs/j1/graph", b"stale", &[("x-ha-term", old_term)]);
        assert_eq!(r.status, 409, "{}: {}", s.id, r.text());
    }
    assert_eq!(
        new_leader.get("/state/jobs/j1/graph").unwrap().body,
        b"v1",
        "the refused write changed the value"
    );
    let new = new_leader.term().to_string();
    let r = new_leader.put("jobs/j1/graph", b"v2", &[("x-ha-term", &new)]);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The leader writes fenced, is frozen (SIGSTOP) until another sidecar leads
/// (within `within`), and runs on: it must no longer claim leadership, and
/// its term's write must be refused everywhere with the value unchanged.
pub fn assert_paused_leader_is_deposed(sidecars: &[Sidecar], within: Duration) {
    let a = sole_leader(sidecars, Duration::from_secs(20));
    let old = sidecars[a].term().to_string();
    assert_eq!(
        sidecars[a]
            .put("jobs/j1/graph", b"v1", &[("x-ha-term", &old)])
            .status,
        200
    );
    sidecars[a].signal(libc::SIGSTOP);
    let others: Vec<&Sidecar> = sidecars
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != a)
        .map(|(_, s)| s)
        .collect();
    let b = wait_for("a new leader while the old one is paused", within, || {
        others.iter().position(|s| s.leads())
    });
    sidecars[a].signal(libc::SIGCONT);
    assert!(
        !sidecars[a].leads(),
        "the resumed leader still claims leadership"
    );
    assert_deposed_write_rejected(sidecars, others[b], &old);
}

/// The single leader, once every sidecar also reports its term.
pub fn agreed_leader(sidecars: &[Sidecar]) -> usize {
    let leader = sole_leader(sidecars, Duration::from_secs(20));
    let term = sidecars[leader].term();
    for s in sidecars {
        wait_for(
            "everyone to agree on the leader",
            Duration::from_secs(10),
            || (s.leader()["term"].as_u64() == Some(term)).then_some(()),
        );
    }
    leader
}

/// How long the two kinds of takeover took among `sidecars`.
pub struct Takeovers {
    /// From SIGTERM of the leader to a standby leading.
    pub graceful: Duration,
    /// From kill -9 of the next leader to the last sidecar leading.
    pub crash: Duration,
}

/// SIGTERMs the leader, then kill -9s its successor, and times both
/// takeovers; `crash_wait` bounds the wait for the second. Each new leader
/// must hold a greater token, and the SIGTERMed one must exit cleanly.
pub fn sigterm_then_kill9(mut sidecars: Vec<Sidecar>, crash_wait: Duration) -> Takeovers {
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let first = sidecars[leader].term();
    let sent = Instant::now();
    sidecars[leader].signal(libc::SIGTERM);
    let mut old = sidecars.remove(leader);
    let next = sole_leader(&sidecars, Duration::from_secs(10));
    let graceful = sent.elapsed();
    assert!(old.wait_exit(Duration::from_secs(15)).success());
    let second = sidecars[next].term();
    assert!(second > first, "token {second} after {first}");
    let killed = Instant::now();
    sidecars.remove(next).kill9();
    let last = sole_leader(&sidecars, crash_wait);
    let crash = killed.elapsed();
    let third = sidecars[last].term();
    assert!(third > second, "token {third} after {second}");
    Takeovers { graceful, crash }
}

/// Secrets never in logs (issue 16, §5): fails if any line of any `*.log`
/// under `dir` (every sidecar's log of a test, at debug level) holds one of
/// `secrets` (a token, a password, a line of a private key). Fails too if
/// there are no log lines at all, so that it cannot pass by reading nothing.
pub fn assert_no_secret_in_logs(dir: &Path, secrets: &[String]) {
    assert!(
        !secrets.is_empty() && secrets.iter().all(|s| s.len() >= 8),
        "no secret to look for"
    );
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).expect("read the test dir") {
        let path = entry.expect("a dir entry").path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            lines += 1;
            for s in secrets {
                assert!(
                    !line.contains(s.as_str()),
                    "{} line {} holds a secret",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(lines > 0, "no log lines under {} to check", dir.display());
}
