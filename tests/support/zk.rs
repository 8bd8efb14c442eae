//! Test harness: real ZooKeeper servers, standalone or as an ensemble, on
//! loopback ports of their own, each with a temporary data directory.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/zk.rs"]
//! mod zk;
//! ```
//!
//! The servers come from the Debian package `zookeeper` (3.8), run straight
//! from its jars under `/usr/share/java` without systemd. `scripts/test.sh`
//! installs the package; if it is missing the tests fail and say so, they
//! never skip.
//!
//! Every JVM is killed and reaped when its handle drops, and dies with the
//! test process even if that crashes (`PR_SET_PDEATHSIG`). Output goes to a
//! `server.log` next to each server's config; failure messages name it and
//! quote its tail, and the temporary directory is kept when a test panics.
//!
//! Timing: `tickTime=200`, so sessions are granted between
//! [`MIN_SESSION_TIMEOUT`] and [`MAX_SESSION_TIMEOUT`] and crashed clients'
//! sessions end quickly. A JVM takes 0.25–4 s to serve; waits are bounded
//! by [`START_TIMEOUT`], generous for a loaded 2-core machine.

#![allow(dead_code)] // each test binary uses a different part of the harness

mod services {
    include!("services.rs");
}
use services::{free_ports, spawn_with_parent_death_signal};

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// ZooKeeper's clock tick: the unit of session timeouts and of the quorum's
/// own failure detection.
pub const TICK: Duration = Duration::from_millis(200);
/// The shortest session the servers grant (2 ticks): a client asking for
/// less gets this.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(400);
/// The longest session the servers grant (20 ticks): a client asking for
/// more gets this.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// How long starting servers, electing a leader or rejoining may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Debian package puts its jars (and their dependencies).
const JAVA_DIR: &str = "/usr/share/java";
const NOT_INSTALLED: &str = "ZooKeeper is not installed: run ./scripts/test.sh, which installs the Debian package zookeeper";

/// What a server says it is (the `Mode:` line of `srvr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Leader,
    Follower,
    Observer,
}

/// One standalone server (`ZooKeeperServerMain`). [`ZooKeeper::ensemble`]
/// starts several that form a quorum instead.
pub struct ZooKeeper {
    server: Server,
    dir: Option<tempfile::TempDir>,
    secure_port: Option<u16>,
}

/// What a secured standalone server adds to a plain one: authentication
/// providers and their enforcement, TLS, and the JVM settings they need
/// (a JAAS file, a krb5.conf). The plain client port stays open for the
/// harness's four-letter health checks.
#[derive(Default)]
pub struct Security {
    /// More zoo.cfg lines.
    pub config: String,
    /// More JVM options, such as `-Djava.security.auth.login.config=...`.
    pub jvm: Vec<String>,
    /// Also serve clients over TLS on a port of its own (`secureClientPort`,
    /// Netty); `config` then carries the `ssl.*` keys.
    pub secure_port: bool,
}

impl ZooKeeper {
    /// Starts a standalone server and waits until it serves.
    pub fn standalone() -> ZooKeeper {
        Self::standalone_secured(|_| Security::default())
    }

    /// Starts a standalone server with the security `make` returns, given
    /// the server's directory (where it may put its JAAS file, keys and
    /// certificates), and waits until it serves.
    pub fn standalone_secured(make: impl FnOnce(&Path) -> Security) -> ZooKeeper {
        let dir = tempdir();
        let ports = free_ports(2);
        let server_dir = dir.path().join("zk");
        fs::create_dir_all(&server_dir).expect("create the ZooKeeper dir");
        let security = make(&server_dir);
        let mut config = common_config(ports[0], MAX_SESSION_TIMEOUT);
        let secure_port = security.secure_port.then_some(ports[1]);
        if let Some(p) = secure_port {
            config.push_str(&format!(
                "secureClientPort={p}\nsecureClientPortAddress=127.0.0.1\n\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
            ));
        }
        config.push_str(&security.config);
        let mut server = Server::new(
            "zookeeper",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            server_dir,
            ports[0],
            &config,
        );
        server.jvm = security.jvm;
        let mut zk = ZooKeeper {
            server,
            dir: Some(dir),
            secure_port,
        };
        zk.start();
        zk
    }

    /// The TLS connect string, `127.0.0.1:<secureClientPort>`.
    pub fn secure_quorum(&self) -> String {
        let port = self.secure_port.expect("a server started with secure_port");
        format!("127.0.0.1:{port}")
    }

    /// The server's directory: its zoo.cfg, log and what `Security` put there.
    pub fn dir(&self) -> &Path {
        &self.server.dir
    }

    /// Starts an ensemble of `n` members and waits until all serve and one
    /// of them leads.
    pub fn ensemble(n: usize) -> Ensemble {
        Ensemble::start_new(n, MAX_SESSION_TIMEOUT)
    }

    /// An ensemble that grants sessions up to `max_session` instead of
    /// [`MAX_SESSION_TIMEOUT`]: for clients whose own timing is under test,
    /// like Flink's ZooKeeper HA with its default 60 s session (a server
    /// grants at most its `maxSessionTimeout`, so a lower one would shorten
    /// the session Flink asked for).
    pub fn ensemble_granting(n: usize, max_session: Duration) -> Ensemble {
        Ensemble::start_new(n, max_session)
    }

    /// The connect string for clients: `127.0.0.1:<port>`.
    pub fn quorum(&self) -> String {
        format!("127.0.0.1:{}", self.server.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.server.client_port
    }

    /// `Some(Mode::Standalone)` while it serves; `None` when stopped, paused
    /// or not answering.
    pub fn mode(&self) -> Option<Mode> {
        self.server.mode()
    }

    /// Sends a four-letter command (`ruok`, `srvr`, `conf`, `mntr`, ...).
    pub fn four_letter(&self, cmd: &str) -> io::Result<String> {
        four_letter(self.server.client_port, cmd, Duration::from_secs(2))
    }

    /// Kills the server (SIGKILL), as a crash would. Clients lose their
    /// connection; sessions survive a restart within their timeout.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// (Re)starts the server with the same data and port, and waits until it
    /// serves.
    pub fn start(&mut self) {
        self.server.spawn();
        self.server
            .wait_for_mode("the standalone server to serve", |m| m == Mode::Standalone);
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, like a long GC pause or a hung machine.
    pub fn pause(&mut self) {
        self.server.pause();
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&mut self) {
        self.server.resume();
    }

    pub fn log_path(&self) -> PathBuf {
        self.server.log()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.server.kill();
        keep_dir_if_panicking(&mut self.dir);
    }
}

/// Members of one ZooKeeper ensemble (`QuorumPeerMain`), indexed from 0
/// (member `i` has `myid` `i + 1`).
pub struct Ensemble {
    servers: Vec<Server>,
    dir: Option<tempfile::TempDir>,
}

impl Ensemble {
    fn start_new(n: usize, max_session: Duration) -> Ensemble {
        // A single QuorumPeerMain runs as a standalone server and never leads.
        assert!(
            n >= 2,
            "an ensemble needs 2 members or more; use ZooKeeper::standalone()"
        );
        let dir = tempdir();
        // client, peer (followers connect to the leader), election: per member.
        let ports = free_ports(3 * n);
        let members: String = (0..n)
            .map(|i| {
                let (peer, election) = (ports[3 * i + 1], ports[3 * i + 2]);
                format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
            })
            .collect();
        let servers = (0..n)
            .map(|i| {
                let client = ports[3 * i];
                let config = format!(
                    "{}{members}\
                     # Followers must connect and sync within initLimit ticks (5 s) and\n\
                     # answer the leader within syncLimit ticks (2 s): generous, so that a\n\
                     # loaded machine causes no spurious elections (which cut clients off).\n\
                     initLimit=25\n\
                     syncLimit=10\n",
                    common_config(client, max_session)
                );
                let server = Server::new(
                    &format!("member {i}"),
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    dir.path().join(format!("zk{i}")),
                    client,
                    &config,
                );
                fs::write(server.dir.join("data/myid"), format!("{}\n", i + 1))
                    .expect("write myid");
                server
            })
            .collect();
        let mut ensemble = Ensemble {
            servers,
            dir: Some(dir),
        };
        // All at once: JVM start-up dominates, and members wait for each other.
        for s in &mut ensemble.servers {
            s.spawn();
        }
        ensemble.leader();
        ensemble
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The connect string for clients: `127.0.0.1:<p1>,127.0.0.1:<p2>,...`,
    /// every member, stopped ones included (as a client's configuration
    /// would list them).
    pub fn quorum(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.servers[i].client_port
    }

    /// What member `i` says it is; `None` when stopped, paused, or not
    /// serving (e.g. while an election runs).
    pub fn mode(&self, i: usize) -> Option<Mode> {
        self.servers[i].mode()
    }

    /// Waits until the members that run (neither stopped nor paused) agree:
    /// exactly one leads and all others follow. Returns the leader's index.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let live: Vec<usize> = (0..self.len())
                .filter(|&i| self.servers[i].is_live())
                .collect();
            for &i in &live {
                self.servers[i].assert_alive();
            }
            let modes: Vec<Option<Mode>> = live.iter().map(|&i| self.mode(i)).collect();
            let leaders: Vec<usize> = live
                .iter()
                .zip(&modes)
                .filter(|(_, m)| **m == Some(Mode::Leader))
                .map(|(&i, _)| i)
                .collect();
            let all_serve = modes
                .iter()
                .all(|m| matches!(m, Some(Mode::Leader | Mode::Follower)));
            if leaders.len() == 1 && all_serve {
                return leaders[0];
            }
            if Instant::now() >= deadline {
                let report: String = live
                    .iter()
                    .zip(&modes)
                    .map(|(&i, m)| {
                        let s = &self.servers[i];
                        format!(
                            "--- member {i} (client port {}), mode {m:?}, log {}:\n{}\n",
                            s.client_port,
                            s.log().display(),
                            s.log_tail(15)
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {START_TIMEOUT:?} waiting for the running members {live:?} \
                     to have exactly one leader and only followers besides\n{report}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn stop(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Restarts member `i` with its data directory and ports. When that makes
    /// a majority of members run, waits until it serves (as leader or
    /// follower); without a majority it cannot serve yet, so this returns
    /// right after starting the JVM.
    pub fn start(&mut self, i: usize) {
        self.servers[i].spawn();
        let live = self.servers.iter().filter(|s| s.is_live()).count();
        if live > self.len() / 2 {
            self.servers[i].wait_for_mode("it to rejoin as leader or follower", |m| {
                matches!(m, Mode::Leader | Mode::Follower)
            });
        }
    }

    /// Restarts member `i` without waiting for it to serve: a fault schedule
    /// cannot block on a JVM's start (see [`Ensemble::mode`] to follow it).
    pub fn launch(&mut self, i: usize) {
        self.servers[i].spawn();
    }

    /// Whether member `i`'s JVM runs (paused or not).
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }

    /// Freezes member `i` (SIGSTOP): its connections stay open but it
    /// answers nothing, like a long GC pause. A paused leader loses its role
    /// once followers miss it for `syncLimit` (2 s).
    pub fn pause(&mut self, i: usize) {
        self.servers[i].pause();
    }

    /// Lets member `i` go on (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.servers[i].resume();
    }

    /// Sends a four-letter command (`ruok`, `srvr`, `conf`, `mntr`, ...) to
    /// member `i`.
    pub fn four_letter(&self, i: usize, cmd: &str) -> io::Result<String> {
        four_letter(self.servers[i].client_port, cmd, Duration::from_secs(2))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.servers[i].log()
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        keep_dir_if_panicking(&mut self.dir);
    }
}

/// Sends a four-letter command to the server on `port` and returns its
/// answer (`ruok` → `imok`). The whole exchange is bounded by `timeout`: a
/// paused server accepts connections (the kernel does) but never answers,
/// and one still starting up may answer without ever closing the connection.
pub fn four_letter(port: u16, cmd: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    s.set_write_timeout(Some(left()?))?;
    s.write_all(cmd.as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?))?;
        match s.read(&mut buf)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Settings shared by standalone servers and ensemble members.
fn common_config(client_port: u16, max_session: Duration) -> String {
    format!(
        "tickTime={tick}\n\
         minSessionTimeout={min}\n\
         maxSessionTimeout={max}\n\
         dataDir=data\n\
         clientPort={client_port}\n\
         clientPortAddress=127.0.0.1\n\
         # Health checks and tests use four-letter commands; no HTTP admin server.\n\
         4lw.commands.whitelist=*\n\
         admin.enableServer=false\n\
         # Every test client connects from 127.0.0.1: no per-address limit.\n\
         maxClientCnxns=0\n\
         # Test data need not survive a power cut (a killed JVM loses nothing):\n\
         # no fsync per write, small preallocated transaction logs.\n\
         forceSync=no\n\
         preAllocSize=4096\n",
        tick = TICK.as_millis(),
        min = MIN_SESSION_TIMEOUT.as_millis(),
        max = max_session.as_millis(),
    )
}

/// One JVM: its config, data and log live in `dir`, which is also its
/// working directory (so `dataDir=data` in the config is relative to it).
struct Server {
    name: String,
    main_class: &'static str,
    dir: PathBuf,
    client_port: u16,
    /// More JVM options (see `Security::jvm`).
    jvm: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl Server {
    fn new(
        name: &str,
        main_class: &'static str,
        dir: PathBuf,
        client_port: u16,
        config: &str,
    ) -> Self {
        fs::create_dir_all(dir.join("data")).expect("create the ZooKeeper data dir");
        fs::write(dir.join("zoo.cfg"), config).expect("write zoo.cfg");
        Server {
            name: name.into(),
            main_class,
            dir,
            client_port,
            jvm: Vec::new(),
            child: None,
            paused: false,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Starts the JVM (it must not be running).
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let classpath = classpath();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the ZooKeeper log");
        writeln!(log, "==== test harness: starting {} ====", self.main_class)
            .expect("write the ZooKeeper log");
        let mut cmd = Command::new("java");
        cmd.args([
            // A test server holds little data: bound the heap (the default is a
            // quarter of the machine's memory) and keep GC threads and the
            // JVM perf-data files (hsperfdata) out of the way.
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
        ])
        .args(&self.jvm)
        .args(["-cp", classpath, self.main_class, "./zoo.cfg"])
        .current_dir(&self.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
        let child = spawn_with_parent_death_signal(cmd).unwrap_or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                panic!("{NOT_INSTALLED} (`java` was not found on PATH)");
            }
            panic!(
                "could not start {} (java {}): {e}",
                self.name, self.main_class
            )
        });
        self.child = Some(child);
        self.paused = false;
    }

    /// Kills (SIGKILL) and reaps the JVM if it runs; a paused JVM dies too.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, sig: i32) {
        let pid = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
            .id();
        // SAFETY: sending a signal to our own, not yet reaped, child process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed for {}", self.name);
    }

    /// Running and not paused: can take part in a quorum and answer.
    fn is_live(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    fn mode(&self) -> Option<Mode> {
        if !self.is_live() {
            return None;
        }
        let srvr = four_letter(self.client_port, "srvr", Duration::from_secs(2)).ok()?;
        let mode = srvr.lines().find_map(|l| l.strip_prefix("Mode: "))?;
        match mode.trim() {
            "standalone" => Some(Mode::Standalone),
            "leader" => Some(Mode::Leader),
            "follower" => Some(Mode::Follower),
            "observer" => Some(Mode::Observer),
            _ => None,
        }
    }

    /// Panics (with the log's tail) if the JVM exited by itself.
    fn assert_alive(&self) {
        // `Child::try_wait` would need `&mut self`; waitid(WNOWAIT) only looks.
        let Some(child) = &self.child else { return };
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with WNOHANG|WNOWAIT leaves it
        // unreaped, so `Child::wait` still works later.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read after a successful waitid.
        if rc == 0 && unsafe { info.si_pid() } != 0 {
            panic!(
                "ZooKeeper {} exited by itself; log {}:\n{}",
                self.name,
                self.log().display(),
                self.log_tail(40)
            );
        }
    }

    /// Polls `srvr` until the server reports a mode `want` accepts.
    fn wait_for_mode(&self, what: &str, want: impl Fn(Mode) -> bool) -> Mode {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_alive();
            if let Some(m) = self.mode().filter(|&m| want(m)) {
                return m;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {START_TIMEOUT:?} waiting for ZooKeeper {} (client port {}) \
                     {what}; last mode {:?}; log {}:\n{}",
                    self.name,
                    self.client_port,
                    self.mode(),
                    self.log().display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The classpath: the server jar (its manifest names its dependencies) and,
/// if present, slf4j-simple so that the server logs at all. Jars are found by
/// listing the package's directory, not by version.
fn classpath() -> &'static str {
    static CLASSPATH: OnceLock<String> = OnceLock::new();
    CLASSPATH.get_or_init(|| {
        let names: Vec<String> = fs::read_dir(JAVA_DIR)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let find = |base: &str| -> Option<PathBuf> {
            // `base.jar` (the package's unversioned link) or `base-<version>.jar`.
            let mut found: Vec<&String> = names
                .iter()
                .filter(|n| {
                    n.strip_suffix(".jar").is_some_and(|stem| {
                        stem == base
                            || stem
                                .strip_prefix(base)
                                .and_then(|v| v.strip_prefix('-'))
                                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                    })
                })
                .collect();
            found.sort_by_key(|n| (n.len(), n.to_string()));
            found.first().map(|n| Path::new(JAVA_DIR).join(n))
        };
        let server = find("zookeeper")
            .unwrap_or_else(|| panic!("{NOT_INSTALLED} (no zookeeper.jar in {JAVA_DIR})"));
        let mut cp = server.display().to_string();
        if let Some(log) = find("slf4j-simple") {
            cp = format!("{cp}:{}", log.display());
        }
        // The Netty server (secure client ports) needs Netty's codec and
        // resolver, which the package's manifest does not list.
        for netty in [
            "netty-codec",
            "netty-resolver",
            "netty-transport-native-unix-common",
        ] {
            if let Some(jar) = find(netty) {
                cp = format!("{cp}:{}", jar.display());
            }
        }
        cp
    })
}

/// A temporary directory for one test's servers, made only once ZooKeeper
/// is known to be installed (a missing package should not leave any behind).
fn tempdir() -> tempfile::TempDir {
    classpath();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("java").is_file()));
    assert!(on_path, "{NOT_INSTALLED} (`java` was not found on PATH)");
    tempfile::Builder::new()
        .prefix("zk-test-")
        .tempdir()
        .expect("create a temp dir")
}

/// A failing test's server logs are worth keeping: the failure message
/// names them.
fn keep_dir_if_panicking(dir: &mut Option<tempfile::TempDir>) {
    if std::thread::panicking()
        && let Some(mut d) = dir.take()
    {
        d.disable_cleanup(true);
        eprintln!("kept the ZooKeeper logs in {}", d.path().display());
    }
}
