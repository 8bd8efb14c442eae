//! Test harness: a real PostgreSQL server (Debian's `postgresql` package,
//! version 15) on a free loopback port, its cluster made by `initdb` in a
//! temporary directory with one password role and `scram-sha-256` for every
//! connection.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/postgres.rs"]
//! mod postgres;
//! ```
//!
//! `scripts/test.sh` installs the package; if the binaries are missing the
//! tests fail and say so, they never skip. PostgreSQL refuses to run as
//! root, so as root the server runs as the package's `postgres` user. The
//! server dies with the test process (`PR_SET_PDEATHSIG`) and is shut down
//! (fast shutdown, then SIGKILL) when its handle drops. Its log is
//! `postgres.log`, which failure messages quote.

#![allow(dead_code)] // each test binary uses a different part of the harness

mod services {
    include!("services.rs");
}

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use services::{free_ports, spawn_with_parent_death_signal};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const NOT_INSTALLED: &str = "PostgreSQL 15 is not installed (no /usr/lib/postgresql/15/bin/initdb): run ./scripts/test.sh, which installs the Debian package postgresql";
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The role the sidecars log in as, and its password.
pub const USER: &str = "ha";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Postgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// Who the server runs as (`postgres` when the tests run as root).
    owner: Option<(u32, u32)>,
    /// TLS only (`start_tls`): `ssl = on`, and `hostssl` the only TCP entry.
    tls: bool,
}

impl Postgres {
    /// Makes a cluster with `initdb` and starts a server on it, waiting
    /// until it accepts logins.
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// The same, accepting TCP connections only over TLS: a certificate
    /// for 127.0.0.1 signed by a CA the harness makes (`ca_pem`), and a
    /// `pg_hba.conf` whose only TCP entry is `hostssl`, so a plain
    /// connection is refused ("no encryption").
    pub fn start_tls() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = Path::new(BIN);
        assert!(bin.join("initdb").is_file(), "{NOT_INSTALLED}");
        assert!(bin.join("postgres").is_file(), "{NOT_INSTALLED}");
        let dir = tempfile::Builder::new()
            .prefix("ha-sidecar-postgres-")
            .tempdir()
            .expect("a temporary directory");
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then(postgres_user);
        let pg = Postgres {
            child: None,
            dir,
            port: free_ports(1)[0],
            owner,
            tls,
        };
        pg.chown(pg.dir.path());
        let pwfile = pg.dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        pg.chown(&pwfile);
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            pg.make_certificates();
            std::fs::write(
                pg.data().join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("write pg_hba.conf");
        }
        let mut pg = pg;
        pg.spawn();
        pg
    }

    /// The CA's certificate (PEM) that signed the server's, for `start_tls`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA and a server certificate for 127.0.0.1 (P-256, two days), with
    /// the server's key readable by the server's user alone, as PostgreSQL
    /// requires.
    fn make_certificates(&self) {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl (Debian's openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=ha-sidecar test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod server.key");
        self.chown(&key);
        self.chown(&dir.join("server.pem"));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn chown(&self, p: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(Path::new(BIN).join(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        // HOME too: libpq looks for client certificates under
        // ~/.postgresql, which the server's user may not read when HOME is
        // root's.
        cmd.env_remove("PGDATA")
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("create postgres.log");
        self.chown(&self.log_path());
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .args(if self.tls {
                vec![
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!(
                        "ssl_cert_file={}",
                        self.dir.path().join("server.pem").display()
                    ),
                    "-c".to_string(),
                    format!(
                        "ssl_key_file={}",
                        self.dir.path().join("server.key").display()
                    ),
                ]
            } else {
                Vec::new()
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = spawn_with_parent_death_signal(cmd)
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        while let Err(why) = self.psql("SELECT 1") {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "postgres exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "postgres did not accept logins within {START_TIMEOUT:?} (psql: {why}):\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, as `capabilities.tcp.endpoints` lists it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `sql` with psql over TCP as the password role, bypassing any
    /// sidecar; the unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The keys of `cluster` in `table`, sorted (the counter row left out).
    pub fn keys(&self, table: &str, cluster: &str) -> Vec<String> {
        let out = self
            .psql(&format!(
                "SELECT key FROM {table} WHERE cluster = '{cluster}' AND key <> '' ORDER BY key"
            ))
            .unwrap_or_else(|e| panic!("reading {table}: {e}\n{}", self.log_tail()));
        out.lines().map(str::to_string).collect()
    }
}

impl Postgres {
    /// SIGSTOP to the server and every backend: connections stay open and
    /// nothing answers. (Each backend is a session of its own, so a
    /// process group signal would not reach them: they are found by parent.)
    pub fn pause(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("postgres is running").id();
        for p in std::iter::once(pid).chain(children(pid)) {
            // SAFETY: plain kill(2) on our own child and its children.
            unsafe { libc::kill(p as libc::pid_t, sig) };
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused server would not shut down.
            self.signal_all(libc::SIGCONT);
        }
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown, the backends go with it.
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The processes whose parent is `pid` (from `/proc/<pid>/stat`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so
                // split after its closing parenthesis.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The package's `postgres` user and group.
fn postgres_user() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, and there is no `postgres` user to run PostgreSQL as: {NOT_INSTALLED}"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}
