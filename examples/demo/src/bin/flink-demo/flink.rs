//! The Flink side of the demo: a `lib/` with the HA services plugin, one
//! configuration directory per process, JobManagers and a TaskManager started
//! with Flink's own scripts, the CLI, and the REST questions the demo asks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use demo::process::{KillOnDrop, spawn};
use serde_json::Value;

use crate::Ha;

/// The factory that `high-availability.type` names.
pub const FACTORY: &str = "dev.hasidecar.flink.SidecarHaServicesFactory";
pub const CLUSTER_ID: &str = "flink-demo";

/// A Flink distribution with the plugin's jar added to a `lib/` of our own
/// (`FLINK_LIB_DIR`), so the installed distribution stays untouched.
#[derive(Clone)]
pub struct Flink {
    pub home: PathBuf,
    lib: PathBuf,
    run: PathBuf,
    java_opts: String,
    /// The `high-availability.*` lines every process's configuration gets.
    ha: String,
}

/// What one Flink process is: its name, its sidecar and its ports.
#[derive(Clone)]
pub struct Role {
    pub name: String,
    pub sidecar_port: u16,
    pub rest_port: u16,
    /// The JobManager's RPC port (in HA mode Flink takes it from
    /// `high-availability.jobmanager.port`); distinct per process on one machine.
    pub rpc_port: u16,
}

pub struct Process {
    pub log_dir: PathBuf,
    pub console: PathBuf,
    /// When this process was started, as its log stamps it (see [`utc`]):
    /// a restarted JobManager writes a new log beside its earlier ones, whose
    /// lines are not this process's.
    started: String,
    child: Option<KillOnDrop>,
}

impl Flink {
    pub fn prepare(home: &Path, plugin_jar: &Path, run: &Path, ha: &Ha) -> anyhow::Result<Flink> {
        // The caller checked that this is the release it runs (release.rs).
        let dist_lib = home.join("lib");
        let lib = run.join("lib");
        std::fs::create_dir_all(&lib)?;
        for entry in std::fs::read_dir(&dist_lib)? {
            let entry = entry?;
            std::os::unix::fs::symlink(entry.path(), lib.join(entry.file_name()))?;
        }
        std::os::unix::fs::symlink(plugin_jar, lib.join("ha-sidecar-flink.jar"))?;
        // Java 17 needs the distribution's --add-opens; take them from its config.
        let defaults = std::fs::read_to_string(home.join("conf/config.yaml"))?;
        let java_opts = defaults
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("all: --add"))
            .map(|rest| format!("--add{rest}"))
            .unwrap_or_default();
        Ok(Flink {
            home: home.to_path_buf(),
            lib,
            run: run.to_path_buf(),
            java_opts,
            ha: ha_lines(ha),
        })
    }

    /// The same distribution and storage, with processes started on `ha`.
    pub fn with_ha(&self, ha: &Ha) -> Flink {
        Flink {
            ha: ha_lines(ha),
            ..self.clone()
        }
    }

    fn conf_dir(&self, role: &Role) -> anyhow::Result<PathBuf> {
        let dir = self.run.join(&role.name).join("conf");
        std::fs::create_dir_all(&dir)?;
        for f in [
            "log4j-console.properties",
            "log4j-cli.properties",
            "log4j.properties",
        ] {
            std::fs::copy(self.home.join("conf").join(f), dir.join(f))?;
        }
        let url = |p: &Path| format!("file://{}", p.display());
        let config = format!(
            "# Written by the ha-sidecar Flink demo.\n\
             env.java.opts.all: \"{java_opts} -Duser.timezone=UTC\"\n\
             jobmanager.rpc.address: localhost\n\
             jobmanager.bind-host: localhost\n\
             jobmanager.memory.process.size: 1024m\n\
             taskmanager.host: localhost\n\
             taskmanager.bind-host: localhost\n\
             taskmanager.memory.process.size: 1280m\n\
             taskmanager.numberOfTaskSlots: 2\n\
             rest.address: localhost\n\
             rest.bind-address: localhost\n\
             rest.port: {rest}\n\
             jobmanager.rpc.port: {rpc}\n\
             high-availability.jobmanager.port: \"{rpc}\"\n\
             pekko.startup-timeout: 60 s\n\
             pekko.ask.timeout: 30 s\n\
             {ha_type}\
             high-availability.storageDir: {ha}\n\
             high-availability.cluster-id: {CLUSTER_ID}\n\
             high-availability.sidecar.url: http://127.0.0.1:{sidecar}\n\
             execution.checkpointing.dir: {ckpt}\n",
            java_opts = self.java_opts,
            rest = role.rest_port,
            rpc = role.rpc_port,
            sidecar = role.sidecar_port,
            ha_type = self.ha,
            ha = url(&self.run.join("ha")),
            ckpt = url(&self.run.join("checkpoints")),
        );
        std::fs::write(dir.join("config.yaml"), config)?;
        Ok(dir)
    }

    fn command(&self, script: &str, role: &Role) -> anyhow::Result<(Command, PathBuf)> {
        let conf = self.conf_dir(role)?;
        let log_dir = self.run.join(&role.name).join("log");
        std::fs::create_dir_all(&log_dir)?;
        let mut cmd = Command::new(self.home.join("bin").join(script));
        cmd.env("FLINK_CONF_DIR", conf)
            .env("FLINK_LIB_DIR", &self.lib)
            .env("FLINK_LOG_DIR", &log_dir)
            .stdin(Stdio::null());
        Ok((cmd, log_dir))
    }

    /// Starts a JobManager (`jobmanager.sh start-foreground`, which `exec`s
    /// the JVM: the child's pid is the JVM's).
    pub fn jobmanager(&self, role: &Role) -> anyhow::Result<Process> {
        self.start("jobmanager.sh", role)
    }

    pub fn taskmanager(&self, role: &Role) -> anyhow::Result<Process> {
        self.start("taskmanager.sh", role)
    }

    fn start(&self, script: &str, role: &Role) -> anyhow::Result<Process> {
        let (mut cmd, log_dir) = self.command(script, role)?;
        cmd.arg("start-foreground");
        let n = std::fs::read_dir(&log_dir)?.count();
        let console = log_dir.join(format!("console-{n}.log"));
        let started = utc(std::time::SystemTime::now());
        let child = spawn(cmd, &console)?;
        Ok(Process {
            log_dir,
            console,
            started,
            child: Some(child),
        })
    }

    /// Runs the CLI (`bin/flink <args>`) as `role` (its sidecar finds the
    /// REST endpoint's leader) and returns its output, or fails with it.
    pub fn cli(&self, role: &Role, args: &[&str]) -> anyhow::Result<String> {
        let (mut cmd, _) = self.command("flink", role)?;
        let out = cmd.args(args).output().context("cannot run bin/flink")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "bin/flink {} failed ({}):\n{text}",
                args.join(" "),
                out.status
            );
        }
        Ok(text)
    }
}

impl Process {
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// kill -9 the JVM: a JobManager crash on a machine that lives on.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
        }
        Ok(())
    }

    /// SIGTERM: Flink shuts down in order and closes its HA services.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()?;
            if !status.success() {
                bail!("kill -TERM {} failed", c.id());
            }
            if !c.wait_exit(timeout) {
                c.kill()?;
            }
        }
        Ok(())
    }

    /// Every line the process printed so far (console and `.out` files).
    pub fn output(&self) -> String {
        let mut all = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.log_dir) {
            let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("console-") || name.ends_with(".out") {
                    all += &std::fs::read_to_string(&f).unwrap_or_default();
                }
            }
        }
        all
    }
}

impl Process {
    /// The checkpoint Flink first restored the job from at or after `since`
    /// (the log's UTC timestamps, see [`utc`]): `Restoring job <job> from
    /// Checkpoint <id>` in any of this process's logs.
    pub fn restored_since(&self, job: &str, since: &str) -> Option<u64> {
        let needle = format!("Restoring job {job} from Checkpoint ");
        self.log_lines_since(&needle, since)
            .into_iter()
            .filter_map(|(stamp, rest)| {
                Some((stamp, rest.split_whitespace().next()?.parse().ok()?))
            })
            .min()
            .map(|(_, id): (String, u64)| id)
    }

    /// The latest instant at or after `since` at which this JobManager's
    /// Dispatcher was granted leadership, as its log says: the moment Flink
    /// itself (not its HA services) starts to lead, on any kind of HA.
    pub fn granted_since(&self, since: &str) -> Option<String> {
        self.log_lines_since("DefaultDispatcherRunner was granted leadership", since)
            .into_iter()
            .map(|(stamp, _)| stamp)
            .max()
    }

    /// `(timestamp, text after needle)` of every line of this process's
    /// Flink logs (not its console) that holds `needle`, stamped at or
    /// after `since` and after the process started.
    fn log_lines_since(&self, needle: &str, since: &str) -> Vec<(String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.log_dir) else {
            return Vec::new();
        };
        let since = since.max(self.started.as_str());
        let mut found = Vec::new();
        for f in dir.flatten().map(|e| e.path()).filter(|f| {
            f.extension().is_some_and(|e| e == "log")
                && !f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("console-"))
        }) {
            for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
                if let (Some(stamp), Some(rest)) = (line.get(..23), line.split(needle).nth(1))
                    && stamp >= since
                {
                    found.push((stamp.to_string(), rest.to_string()));
                }
            }
        }
        found
    }
}

/// The time from one log timestamp (see [`utc`]) to a later one, if both
/// parse; across midnight too.
pub fn elapsed(from: &str, to: &str) -> Option<Duration> {
    let ms_of_day = |stamp: &str| -> Option<i64> {
        let t = stamp.get(11..23)?;
        let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
        Some(((num(0..2)? * 60 + num(3..5)?) * 60 + num(6..8)?) * 1000 + num(9..12)?)
    };
    let mut d = ms_of_day(to)? - ms_of_day(from)?;
    if stamp_date(to) != stamp_date(from) {
        d += 86_400_000;
    }
    u64::try_from(d).ok().map(Duration::from_millis)
}

fn stamp_date(stamp: &str) -> &str {
    stamp.get(..10).unwrap_or("")
}

/// The `high-availability.*` lines of `ha`. Flink's own ZooKeeper HA keeps
/// Flink's default root, `/flink`, where the sidecar's ZooKeeper plugin
/// keeps the same cluster-id too: a cluster can move between them.
fn ha_lines(ha: &Ha) -> String {
    match ha {
        Ha::Sidecar(_) => format!("high-availability.type: {FACTORY}\n"),
        Ha::FlinkZooKeeper {
            quorum,
            session_timeout,
        } => format!(
            "high-availability.type: zookeeper\n\
             high-availability.zookeeper.quorum: \"{quorum}\"\n\
             high-availability.zookeeper.path.root: /flink\n\
             high-availability.zookeeper.client.session-timeout: {} ms\n",
            session_timeout.as_millis()
        ),
    }
}

/// Now in the format of Flink's log lines (`2026-12-02 05:47:35,600`), in
/// UTC: the demo starts every JVM with `-Duser.timezone=UTC`.
pub fn utc(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{ms:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A REST client for the JobManagers: short timeouts, a dead one fails fast.
pub struct Rest {
    agent: ureq::Agent,
}

impl Rest {
    pub fn new() -> Rest {
        Rest {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(1500))
                .redirects(0)
                .build(),
        }
    }

    fn get(&self, port: u16, path: &str) -> Option<Value> {
        self.agent
            .get(&format!("http://127.0.0.1:{port}{path}"))
            .call()
            .ok()?
            .into_json()
            .ok()
    }

    /// The job's state as this JobManager reports it (only the leader knows it).
    pub fn job_state(&self, port: u16, job: &str) -> Option<String> {
        self.get(port, &format!("/jobs/{job}"))?
            .get("state")?
            .as_str()
            .map(str::to_string)
    }

    pub fn completed_checkpoints(&self, port: u16, job: &str) -> Option<u64> {
        self.get(port, &format!("/jobs/{job}/checkpoints"))?
            .pointer("/counts/completed")?
            .as_u64()
    }

    /// The id of the latest completed checkpoint this JobManager knows of.
    pub fn latest_checkpoint(&self, port: u16, job: &str) -> Option<u64> {
        self.get(port, &format!("/jobs/{job}/checkpoints"))?
            .pointer("/latest/completed/id")?
            .as_u64()
    }

    /// The JobManager's REST endpoint answers (`/config`).
    pub fn config(&self, port: u16) -> bool {
        self.get(port, "/config").is_some()
    }

    pub fn taskmanagers(&self, port: u16) -> Option<usize> {
        Some(
            self.get(port, "/taskmanagers")?
                .get("taskmanagers")?
                .as_array()?
                .len(),
        )
    }
}

/// Polls `f` every 50 ms until it returns some value or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
