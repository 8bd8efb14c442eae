//! The sidecars of the Flink demo: one candidate beside each JobManager
//! (`election.candidacy: client`: it campaigns only while its JobManager
//! holds a candidacy), one observer beside the TaskManager (and the CLI),
//! all on one backend; and a sampler that records who claims to lead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use demo::process::{KillOnDrop, spawn};
use serde::Deserialize;

/// Where the backend is.
#[derive(Clone)]
pub enum Backend {
    /// The embedded file backend: a directory on this machine.
    File,
    /// A ZooKeeper quorum (host:port,...).
    ZooKeeper(String),
}

pub struct Paths {
    pub sidecar: PathBuf,
    pub plugins: PathBuf,
}

pub struct Sidecar {
    pub name: String,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<KillOnDrop>,
    restarts: usize,
}

/// Short, safe timings: a machine loss is noticed within about 2 s.
const FILE_TIMING: &str = "{lease: 2s, renew-deadline: 1500ms, retry-period: 400ms}";
const ZK_TIMING: &str = "{lease: 3s, renew-deadline: 1500ms, retry-period: 400ms}";

pub fn config(
    name: &str,
    port: u16,
    candidacy: &str,
    backend: &Backend,
    paths: &Paths,
    run: &Path,
) -> String {
    let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    let common = format!(
        "# Written by the ha-sidecar Flink demo.\n\
         member: {{id: {name}}}\n\
         http: {{listen: \"127.0.0.1:{port}\"}}\n\
         election: {{candidacy: {candidacy}}}\n"
    );
    match backend {
        Backend::File => format!(
            "{common}plugin: {{path: {plugin}, cache-dir: {cache}, settings: {{cluster-id: flink-demo}}}}\n\
             capabilities: {{filesystem: {{dir: {data}}}}}\n\
             timing: {FILE_TIMING}\n",
            plugin = q(&paths.plugins.join("ha_plugin_file.wasm")),
            cache = q(&run.join("cache")),
            data = q(&run.join("sidecar-data")),
        ),
        Backend::ZooKeeper(quorum) => format!(
            "{common}plugin: {{path: {plugin}, cache-dir: {cache}, settings: {{root: /flink, cluster-id: flink-demo}}}}\n\
             capabilities: {{zookeeper: {{quorum: \"{quorum}\", client: {{session-timeout: 4s, connection-timeout: 2s, retry-wait: 200ms, max-retry-wait: 1s}}}}}}\n\
             timing: {ZK_TIMING}\n",
            plugin = q(&paths.plugins.join("ha_plugin_zookeeper.wasm")),
            cache = q(&run.join("cache")),
        ),
    }
}

impl Sidecar {
    pub fn start(
        name: &str,
        port: u16,
        candidacy: &str,
        backend: &Backend,
        paths: &Paths,
        run: &Path,
    ) -> anyhow::Result<Sidecar> {
        let dir = run.join(name);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("sidecar.yaml");
        std::fs::write(
            &config_path,
            config(name, port, candidacy, backend, paths, run),
        )?;
        let mut s = Sidecar {
            name: name.into(),
            port,
            config: config_path,
            log: dir.join("sidecar"),
            child: None,
            restarts: 0,
        };
        s.launch(&paths.sidecar)?;
        Ok(s)
    }

    fn launch(&mut self, binary: &Path) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary);
        cmd.arg("run").arg(&self.config).stdin(Stdio::null());
        let log = self.log.with_extension(format!("{}.log", self.restarts));
        self.restarts += 1;
        self.child = Some(
            spawn(cmd, &log).with_context(|| format!("cannot start the sidecar {}", self.name))?,
        );
        Ok(())
    }

    pub fn restart(&mut self, binary: &Path) -> anyhow::Result<()> {
        self.kill()?;
        self.launch(binary)
    }

    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct LeaderView {
    term: Option<u64>,
    leading: bool,
}

/// One answer of a sidecar to `GET /leader`: when it was asked and answered.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sidecar: usize,
    pub sent: Instant,
    pub received: Instant,
    pub leading: bool,
    pub term: Option<u64>,
}

/// Polls every candidate sidecar's `GET /leader` in turn, every 20 ms, from
/// its own thread, until dropped.
pub struct Sampler {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(ports: Vec<u16>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_millis(300))
                    .build();
                while !stop.load(Relaxed) {
                    for (i, port) in ports.iter().enumerate() {
                        let sent = Instant::now();
                        let view: Option<LeaderView> = agent
                            .get(&format!("http://127.0.0.1:{port}/leader"))
                            .call()
                            .ok()
                            .and_then(|r| r.into_json().ok());
                        if let Some(v) = view {
                            samples.lock().unwrap().push(Sample {
                                sidecar: i,
                                sent,
                                received: Instant::now(),
                                leading: v.leading,
                                term: v.term,
                            });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// Claims the answers prove to be a split brain: two sidecars claiming the
/// same term, or a claim of an older term by a request sent after another
/// sidecar's claim of a newer term was answered.
pub fn overlaps(samples: &[Sample]) -> Vec<String> {
    let claims: Vec<&Sample> = samples.iter().filter(|s| s.leading).collect();
    let mut found = Vec::new();
    for a in &claims {
        for b in &claims {
            if a.sidecar == b.sidecar {
                continue;
            }
            let same_term = a.term == b.term && a.sidecar < b.sidecar;
            let stale = a.term < b.term && a.sent > b.received;
            if same_term || stale {
                found.push(format!(
                    "sidecar {} claimed term {:?} while sidecar {} claimed term {:?}",
                    a.sidecar + 1,
                    a.term,
                    b.sidecar + 1,
                    b.term
                ));
            }
        }
        if found.len() > 10 {
            break;
        }
    }
    found
}
