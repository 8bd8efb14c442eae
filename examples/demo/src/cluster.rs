//! The demo's processes: where the binaries are, the sidecar configs, and the
//! three sidecar + job manager pairs.
//!
//! Every child is wrapped in [`KillOnDrop`], so whatever way the orchestrator
//! leaves (success, error, panic), no sidecar or job manager is left running;
//! on Linux every child also gets SIGKILL from the kernel if the orchestrator
//! itself is killed (see [`die_with_parent`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use demo::process::{KillOnDrop, free_ports, spawn};

/// How to build what the demo runs, for error messages.
const HOW_TO_BUILD: &str = "run ./scripts/demo.sh, which builds them";

/// Lease timing of the demo: short, so a crash takeover takes about two seconds.
const TIMING: &str = "{lease: 2s, renew-deadline: 1500ms, retry-period: 500ms}";
/// Values above this go to a file in the storage dir, with only a pointer in
/// the backend: the job graph (about 4 KiB) does, checkpoints (a count) do not.
const INLINE_LIMIT: &str = "1KiB";
/// How many of the job's newest checkpoints the sidecars keep.
const RETAINED_CHECKPOINTS: u32 = 3;

/// Where everything the demo needs lives, found from the repository root.
pub struct Paths {
    pub sidecar: PathBuf,
    pub jobmanager: PathBuf,
    pub plugin: PathBuf,
    /// `demo-run/`: configs, shared data, compile cache and logs of this run.
    pub run_dir: PathBuf,
    /// `demo-run/storage/`: the sidecars' shared storage dir for large values.
    pub storage_dir: PathBuf,
    /// The directory the demo was started from, to print paths relative to it.
    pub cwd: PathBuf,
}

impl Paths {
    /// Finds the repository root (the first directory upwards holding both
    /// `plugins/` and `Cargo.toml`) and checks that every binary exists.
    pub fn locate() -> anyhow::Result<Paths> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let root = cwd
            .ancestors()
            .find(|d| d.join("plugins").is_dir() && d.join("Cargo.toml").is_file())
            .with_context(|| format!("{} is not inside the ha-sidecar repository (no parent holds plugins/ and Cargo.toml); run the demo from the repository root", cwd.display()))?
            .to_path_buf();
        let paths = Paths {
            sidecar: root.join("target/release/ha-sidecar"),
            jobmanager: root.join("target/release/demo-jobmanager"),
            plugin: root.join("plugins/target/wasm32-wasip2/release/ha_plugin_file.wasm"),
            run_dir: root.join("demo-run"),
            storage_dir: root.join("demo-run/storage"),
            cwd,
        };
        for file in [&paths.sidecar, &paths.jobmanager, &paths.plugin] {
            if !file.is_file() {
                bail!("{} is missing: {HOW_TO_BUILD}", file.display());
            }
        }
        Ok(paths)
    }

    /// `path` as the person running the demo would type it.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.cwd)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// One member of the demo cluster: a sidecar and the job manager beside it.
pub struct Node {
    /// The member id, also the job manager's name (`jm-1`).
    pub name: String,
    /// The sidecar's HTTP port on 127.0.0.1.
    pub port: u16,
    /// False once the demo killed or stopped this node's sidecar.
    pub alive: bool,
    pub jobmanager_log: PathBuf,
    // Field order matters: the job manager is dropped (killed) before its sidecar.
    jobmanager: KillOnDrop,
    sidecar: KillOnDrop,
}

impl Node {
    /// Crash the pair, as a machine failure would: SIGKILL, no goodbye.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.jobmanager.kill()?;
        self.sidecar.kill()?;
        self.alive = false;
        Ok(())
    }

    /// SIGTERM the sidecar, as an orderly shutdown would: it releases its term
    /// and exits. std has no way to send a signal other than SIGKILL, so this
    /// runs `kill -TERM <pid>`.
    pub fn terminate_sidecar(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.sidecar.id().to_string())
            .status()
            .context("cannot run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed ({status})", self.sidecar.id());
        }
        self.alive = false;
        Ok(())
    }

    /// Waits at most `timeout` for the sidecar to exit after SIGTERM.
    pub fn sidecar_exited(&mut self, timeout: Duration) -> bool {
        self.sidecar.wait_exit(timeout)
    }

    /// Tells the job manager to pause (`pause`) or to resume (`resume`).
    pub fn tell_jobmanager(&mut self, command: &str) -> anyhow::Result<()> {
        self.jobmanager
            .tell(command)
            .with_context(|| format!("cannot tell {}'s job manager to {command}", self.name))
    }

    pub fn jobmanager_log(&self) -> String {
        std::fs::read_to_string(&self.jobmanager_log).unwrap_or_default()
    }
}

/// Starts `count` sidecars (`jm-1`..) on the file backend, each with its job
/// manager, in a fresh `demo-run/`.
pub fn start(paths: &Paths, count: usize) -> anyhow::Result<Vec<Node>> {
    let run = &paths.run_dir;
    if run.exists() {
        std::fs::remove_dir_all(run)
            .with_context(|| format!("cannot remove the previous {}", run.display()))?;
    }
    let (data, cache, storage) = (run.join("data"), run.join("cache"), &paths.storage_dir);
    for dir in [&data, &cache, storage] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let ports = free_ports(count)?;
    let mut nodes = Vec::with_capacity(count);
    for (i, port) in ports.into_iter().enumerate() {
        let name = format!("jm-{}", i + 1);
        let config = run.join(format!("{name}.yaml"));
        let yaml = sidecar_config(&name, i, port, paths, &data, &cache, storage)?;
        std::fs::write(&config, yaml)
            .with_context(|| format!("cannot write {}", config.display()))?;

        let mut cmd = Command::new(&paths.sidecar);
        cmd.arg("run").arg(&config).stdin(Stdio::null());
        let sidecar = spawn(cmd, &run.join(format!("{name}-sidecar.log")))?;

        let jobmanager_log = run.join(format!("{name}-jobmanager.log"));
        let mut cmd = Command::new(&paths.jobmanager);
        // Commands (pause, resume) go through this pipe, and the job manager
        // exits when it closes, that is, when the orchestrator is gone.
        cmd.args([
            "--sidecar",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            &name,
        ])
        .stdin(Stdio::piped());
        let jobmanager = spawn(cmd, &jobmanager_log)?;

        nodes.push(Node {
            name,
            port,
            alive: true,
            jobmanager_log,
            jobmanager,
            sidecar,
        });
    }
    Ok(nodes)
}

fn sidecar_config(
    name: &str,
    index: usize,
    port: u16,
    paths: &Paths,
    data: &Path,
    cache: &Path,
    storage: &Path,
) -> anyhow::Result<String> {
    // Quoted as JSON strings, which YAML reads as-is, so any path is safe.
    let quote = |p: &Path| {
        p.to_str()
            .map(|s| serde_json::Value::from(s).to_string())
            .with_context(|| format!("{} is not valid UTF-8", p.display()))
    };
    Ok(format!(
        "# Written by the ha-sidecar demo.\n\
         member: {{id: {name}, address: \"http://127.0.0.1:{address_port}\"}}\n\
         http: {{listen: \"127.0.0.1:{port}\"}}\n\
         plugin:\n  path: {plugin}\n  cache-dir: {cache}\n  settings: {{cluster-id: demo}}\n\
         capabilities: {{filesystem: {{dir: {data}}}}}\n\
         timing: {TIMING}\n\
         storage: {{dir: {storage}, inline-limit: {INLINE_LIMIT}}}\n\
         jobs: {{retained-checkpoints: {RETAINED_CHECKPOINTS}}}\n",
        address_port = 8081 + index,
        plugin = quote(&paths.plugin)?,
        cache = quote(cache)?,
        data = quote(data)?,
        storage = quote(storage)?,
    ))
}
