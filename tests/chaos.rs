//! Jepsen-lite: the README's safety claims, checked against real processes
//! under a nemesis.
//!
//! Three sidecars on the file backend, each with an "app" beside it (like a
//! Flink JobManager) that appends to one key as fast as it can while its
//! sidecar says it leads, fenced by its term and guarded by compare-and-set.
//! Meanwhile a nemesis pauses (SIGSTOP), kills (SIGKILL), stops (SIGTERM) and
//! resigns sidecars, mostly the leader, and restarts the dead ones with the
//! same id, config and port. Afterwards the test checks, from what the apps saw
//! acknowledged and from the final value:
//!
//! 1. **fencing is atomic with the write**: an entry of term t never follows
//!    an entry of a newer term in the log, and no write or leadership claim of
//!    a term starts after a newer term was already seen leading or writing;
//! 2. **no acknowledged write is lost**: every acknowledged value is a prefix
//!    of the final one;
//! 3. (sampled) never two sidecars leading at once: checked causally as part
//!    of (1), and near-simultaneous 200s on `/leader/self` are reported.
//!
//! The fault schedule comes from a seeded PRNG. The seed is printed;
//! `CHAOS_SEED=<n>` replays the schedule (process timing still varies),
//! `CHAOS_SECS=<n>` changes how long the nemesis runs (default 25),
//! `CHAOS_KEEP=1` keeps the cluster directory (configs, logs, backend data).

mod support;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

/// The key every app appends to.
const KEY_PATH: &str = "/state/chaos/log";
/// How long an app waits for `GET /leader`. A paused sidecar answers nothing;
/// the app treats that as "unknown" and asks again.
const LEADER_TIMEOUT: Duration = Duration::from_millis(300);
/// How long an app waits for a state read or write: longer than the longest
/// pause (lease + 1.5 s), so that a write in flight when its sidecar was
/// SIGSTOPped gets its real answer after SIGCONT, when a successor has
/// usually taken over: the case fencing exists for. A write that still times
/// out is indeterminate (it may land later) and never counted as acknowledged.
const STATE_TIMEOUT: Duration = Duration::from_secs(6);
/// A write that took longer than this was held across a pause.
const HELD: Duration = Duration::from_secs(1);
/// Values up to this size stay inline in the backend (the default inline
/// limit is 16 KiB; larger values would go to a storage dir, a different path
/// from the one under test, or be refused with 413 without one).
const CONFIG_EXTRA: &str = "storage: {inline-limit: 512KiB}\n";
/// The apps stop appending before the value reaches the inline limit (a
/// 25 s run writes far less than this).
const VALUE_CAP: usize = 480 << 10;
/// Pause between two acknowledged writes: "as fast as possible", but leaving
/// some CPU to the sidecars on a 2-core CI machine.
const WRITE_GAP: Duration = Duration::from_millis(3);
/// The sampler's `/leader/self` timeout and interval.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(200);
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Two 200s from different sidecars whose requests all fit in this window
/// are reported as "near-simultaneous" (a warning: each answer happened at
/// some instant inside its request, so this proves nothing by itself).
const SIMULTANEOUS: Duration = Duration::from_millis(10);

#[test]
fn fencing_and_acknowledged_writes_survive_pauses_kills_and_resigns() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("CHAOS_SEED is a u64"))
        .unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .map(|s| s.trim().parse().expect("CHAOS_SECS is a number of seconds"))
        .unwrap_or(25);
    println!("chaos: seed {seed} (replay with CHAOS_SEED={seed}), nemesis for {secs}s");
    let mut rng = Rng(seed);
    let t0 = Instant::now();

    let mut cluster = Cluster::new();
    let mut nodes: Vec<Node> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| {
            let port = free_port();
            let config = cluster.write_config(id, &cluster.file_config(id, port, CONFIG_EXTRA));
            let sidecar =
                Sidecar::start(id, port, &config, &cluster.path().join(format!("{id}.log")));
            Node {
                id: id.to_string(),
                port,
                config,
                generation: 0,
                sidecar: Some(sidecar),
                phase: Phase::Up,
            }
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    wait_for("a first leader", Duration::from_secs(20), || {
        leader_among(&nodes)
    });

    let shared = Arc::new(Observed::default());
    // Stops the apps and samplers however this test ends.
    let _stop_on_exit = StopOnDrop(shared.clone());
    let apps: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let shared = shared.clone();
            std::thread::spawn(move || app(i, port, &shared))
        })
        .collect();
    let samplers: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let shared = shared.clone();
            std::thread::spawn(move || sampler(i, port, &shared))
        })
        .collect();

    // The nemesis.
    let mut nemesis = Nemesis {
        rng: &mut rng,
        t0,
        cluster: &cluster,
        faults: BTreeMap::new(),
        problems: Vec::new(),
    };
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_fault = Instant::now() + nemesis.rng.millis(1000, 2000);
    let mut first = true;
    while Instant::now() < end {
        for node in nodes.iter_mut() {
            nemesis.tick(node);
        }
        if Instant::now() >= next_fault {
            nemesis.inject(&mut nodes, &shared, first);
            first = false;
            next_fault = Instant::now() + nemesis.rng.millis(1000, 2000);
        }
        sleep(Duration::from_millis(10));
    }
    // Heal: everyone resumed and running again.
    for node in nodes.iter_mut() {
        nemesis.heal(node);
    }
    let faults = std::mem::take(&mut nemesis.faults);
    let mut problems = std::mem::take(&mut nemesis.problems);
    println!("[{:>6.2?}] healed; stopping the apps", t0.elapsed());

    shared.stop.store(true, Relaxed);
    let stats: Vec<AppStats> = apps
        .into_iter()
        .map(|h| h.join().expect("app thread panicked"))
        .collect();
    let samples: Vec<(u64, u64)> = samplers
        .into_iter()
        .map(|h| h.join().expect("sampler thread panicked"))
        .collect();

    let leader = wait_for("a leader after healing", Duration::from_secs(30), || {
        leader_among(&nodes)
    });
    let final_value = read_final(&nodes, leader, &mut problems);
    println!(
        "[{:>6.2?}] {} leads; final value has {} bytes",
        t0.elapsed(),
        nodes[leader].id,
        final_value.len()
    );

    // ---- checks ----
    let events = std::mem::take(&mut *shared.events.lock().unwrap());
    let log = check_final_log(&final_value, &stats, &mut problems);
    check_acknowledged_writes(&final_value, &stats, &mut problems);
    check_causality(&events, &mut problems);
    let near = near_simultaneous_claims(&events);

    let acked: usize = stats.iter().map(|s| s.acked.len()).sum();
    let sum = |f: fn(&AppStats) -> u64| stats.iter().map(f).sum::<u64>();
    let terms_written: BTreeSet<u64> = log.iter().map(|e| e.term).collect();
    let claims = events.iter().filter(|e| e.kind == Kind::Claim).count();
    println!("---- chaos summary (seed {seed}) ----");
    println!("wall time        {:.1?}", t0.elapsed());
    println!("faults           {faults:?}");
    println!(
        "terms written    {} {:?}",
        terms_written.len(),
        terms_written
    );
    println!(
        "acked writes     {acked} (per app {:?})",
        stats.iter().map(|s| s.acked.len()).collect::<Vec<_>>()
    );
    println!("log entries      {}", log.len());
    println!("fenced (409)     {}", sum(|s| s.fenced));
    println!("lost CAS (412)   {}", sum(|s| s.lost_cas));
    println!("unavailable 503  {}", sum(|s| s.unavailable));
    println!("plugin_failed 503 {}", sum(|s| s.plugin_failed));
    println!("no answer        {} (indeterminate)", sum(|s| s.no_answer));
    println!(
        "held by a pause  {} acknowledged, {} fenced, {} lost CAS",
        sum(|s| s.held.0),
        sum(|s| s.held.1),
        sum(|s| s.held.2)
    );
    for n in stats.iter().flat_map(|s| &s.cas_notes) {
        println!("  412: {n}");
    }
    if stats.iter().any(|s| s.full) {
        println!("the value reached {VALUE_CAP} bytes: the apps stopped appending");
    }
    println!(
        "samples          {} /leader/self, {} unanswered; {claims} leadership claims seen",
        samples.iter().map(|s| s.0).sum::<u64>(),
        samples.iter().map(|s| s.1).sum::<u64>()
    );
    println!(
        "plugin instances discarded after a trap: {}",
        count_in_logs(&cluster, &nodes, "plugin instance discarded")
    );
    println!("near-simultaneous 200s (warning only): {}", near.len());
    for w in near.iter().take(10) {
        println!("  warning: {w}");
    }

    for (i, s) in stats.iter().enumerate() {
        for u in s.unexpected.iter().take(5) {
            problems.push(format!("{}: unexpected answer: {u}", app_id(i)));
        }
    }
    if terms_written.len() < 3 {
        problems.push(format!(
            "the run exercised too little: only terms {terms_written:?} wrote"
        ));
    }
    if acked <= 50 {
        problems.push(format!(
            "the run exercised too little: {acked} acknowledged writes"
        ));
    }
    if faults.get("pause").copied().unwrap_or(0) == 0 {
        problems.push("the run exercised too little: no SIGSTOP".into());
    }
    if !problems.is_empty() {
        for node in &nodes {
            print_log_excerpts(&cluster, node);
        }
    }
    if std::env::var_os("CHAOS_KEEP").is_some() {
        let dir = std::mem::replace(&mut cluster.dir, tempfile::tempdir().unwrap());
        println!("kept the cluster directory: {}", dir.keep().display());
    }
    if !problems.is_empty() {
        panic!(
            "seed {seed}: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------- the apps

/// What the apps and samplers saw, with the instants before sending and after
/// receiving each answer. The test and the sidecars share one monotonic clock.
#[derive(Default)]
struct Observed {
    stop: AtomicBool,
    events: Mutex<Vec<Event>>,
    /// Per node: its app has a write in flight (the nemesis times pauses by it).
    writing: [AtomicBool; 3],
}

struct StopOnDrop(Arc<Observed>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A sidecar answered that it leads with this term.
    Claim,
    /// A write fenced with this term was acknowledged.
    Ack,
}

#[derive(Clone, Debug)]
struct Event {
    term: u64,
    node: usize,
    kind: Kind,
    start: Instant,
    end: Instant,
}

/// An acknowledged write: its value is kept as length and hash only (the
/// values grow with every write; keeping them all would take hundreds of MB).
struct Ack {
    term: u64,
    version: u64,
    len: usize,
    hash: u64,
    entry: String,
}

#[derive(Default)]
struct AppStats {
    acked: Vec<Ack>,
    /// Every entry this app ever sent, acknowledged or not.
    attempted: HashSet<String>,
    fenced: u64,
    lost_cas: u64,
    unavailable: u64,
    /// 503 `plugin_failed`: the state instance trapped (e.g. it was found
    /// unusable after an earlier call was abandoned) and is being restarted.
    plugin_failed: u64,
    /// No answer in time, or the connection failed (a killed sidecar).
    no_answer: u64,
    /// Writes answered after being held across a pause: (acknowledged,
    /// fenced, lost compare-and-set).
    held: (u64, u64, u64),
    /// Details of the first lost compare-and-sets. Within one term an app's
    /// ETag is current, so these are writes of a superseded term: the host
    /// checks `If-Match` against the newest value before the backend checks
    /// the term, so they get 412 rather than 409 (either way nothing changes).
    cas_notes: Vec<String>,
    /// Whether the app stopped appending at `VALUE_CAP`.
    full: bool,
    /// Answers no correct sidecar gives to these requests.
    unexpected: Vec<String>,
}

fn app_id(node: usize) -> String {
    format!("app{}", node + 1)
}

/// One app beside sidecar `node`: while its sidecar leads with term T, read
/// the log and append `T:<app>:<seq>` entries, each a compare-and-set fenced
/// with T, until a write is refused or times out; then ask again who leads.
fn app(node: usize, port: u16, shared: &Observed) -> AppStats {
    let me = app_id(node);
    let mut stats = AppStats::default();
    let mut seq = 0u64;
    while !shared.stop.load(Relaxed) {
        let Some(term) = leading_term(node, port, shared) else {
            sleep(Duration::from_millis(20));
            continue;
        };
        let (mut value, mut etag) =
            match request_within(port, "GET", KEY_PATH, &[], b"", STATE_TIMEOUT) {
                Ok(r) if r.status == 200 => match r.header("etag") {
                    Some(e) => (r.body.clone(), Some(e.to_string())),
                    None => {
                        stats.unexpected.push("GET 200 without an ETag".into());
                        sleep(Duration::from_millis(20));
                        continue;
                    }
                },
                Ok(r) if r.status == 404 => (Vec::new(), None),
                other => {
                    match other {
                        Ok(r) if r.status == 503 => count_503(&mut stats, &r),
                        Ok(r) => stats.unexpected.push(format!(
                            "GET {KEY_PATH}: {} {}",
                            r.status,
                            r.text()
                        )),
                        Err(_) => stats.no_answer += 1,
                    }
                    sleep(Duration::from_millis(20));
                    continue;
                }
            };
        let fence = term.to_string();
        let mut acked_in_term = 0;
        while !shared.stop.load(Relaxed) {
            seq += 1;
            let entry = format!("{term}:{me}:{seq}\n");
            let mut body = value.clone();
            body.extend_from_slice(entry.as_bytes());
            if body.len() > VALUE_CAP {
                stats.full = true;
                sleep(Duration::from_millis(20));
                break;
            }
            let precondition = match &etag {
                Some(e) => ("if-match", e.as_str()),
                None => ("if-none-match", "*"),
            };
            stats.attempted.insert(entry.clone());
            shared.writing[node].store(true, Relaxed);
            let start = Instant::now();
            let answer = request_within(
                port,
                "PUT",
                KEY_PATH,
                &[("x-ha-term", &fence), precondition],
                &body,
                STATE_TIMEOUT,
            );
            let end = Instant::now();
            shared.writing[node].store(false, Relaxed);
            let held = end - start > HELD;
            match answer {
                Ok(r) if r.status == 200 => {
                    stats.held.0 += u64::from(held);
                    let Some(version) = r
                        .header("etag")
                        .and_then(|e| e.trim_matches('"').parse::<u64>().ok())
                    else {
                        stats
                            .unexpected
                            .push(format!("PUT 200 without a version ETag: {:?}", r.headers));
                        break;
                    };
                    stats.acked.push(Ack {
                        term,
                        version,
                        len: body.len(),
                        hash: hash(&body),
                        entry,
                    });
                    shared.events.lock().unwrap().push(Event {
                        term,
                        node,
                        kind: Kind::Ack,
                        start,
                        end,
                    });
                    value = body;
                    etag = Some(format!("\"{version}\""));
                    acked_in_term += 1;
                    sleep(WRITE_GAP);
                }
                Ok(r) if r.status == 409 => {
                    stats.fenced += 1;
                    stats.held.1 += u64::from(held);
                    break;
                }
                Ok(r) if r.status == 412 => {
                    stats.lost_cas += 1;
                    stats.held.2 += u64::from(held);
                    if stats.cas_notes.len() < 5 {
                        stats.cas_notes.push(format!(
                            "{me} term {term} seq {seq}: sent {precondition:?} after {} acked writes in this term, took {:?}; answer {}",
                            acked_in_term,
                            end - start,
                            r.text().trim()
                        ));
                    }
                    break;
                }
                Ok(r) if r.status == 503 => {
                    count_503(&mut stats, &r);
                    break;
                }
                Ok(r) => {
                    stats
                        .unexpected
                        .push(format!("PUT {KEY_PATH}: {} {}", r.status, r.text()));
                    break;
                }
                Err(_) => {
                    stats.no_answer += 1;
                    break;
                }
            }
        }
    }
    stats
}

fn count_503(stats: &mut AppStats, r: &Response) {
    if r.text().contains("plugin_failed") {
        stats.plugin_failed += 1;
    } else {
        stats.unavailable += 1;
    }
}

/// The term this sidecar leads with, per `GET /leader`; none when it does not
/// lead or does not answer in time. A "leading" answer is recorded as a claim.
fn leading_term(node: usize, port: u16, shared: &Observed) -> Option<u64> {
    let start = Instant::now();
    let r = request_within(port, "GET", "/leader", &[], b"", LEADER_TIMEOUT).ok()?;
    let end = Instant::now();
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    if v["leading"] != true {
        return None;
    }
    let term = v["term"].as_u64()?;
    shared.events.lock().unwrap().push(Event {
        term,
        node,
        kind: Kind::Claim,
        start,
        end,
    });
    Some(term)
}

/// Asks one sidecar `/leader/self` every few ms and records each 200 as a
/// claim. Returns (requests, requests without an answer).
fn sampler(node: usize, port: u16, shared: &Observed) -> (u64, u64) {
    let (mut asked, mut unanswered) = (0, 0);
    while !shared.stop.load(Relaxed) {
        asked += 1;
        let start = Instant::now();
        match request_within(port, "GET", "/leader/self", &[], b"", SAMPLE_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let end = Instant::now();
                if let Some(term) = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["term"].as_u64())
                {
                    shared.events.lock().unwrap().push(Event {
                        term,
                        node,
                        kind: Kind::Claim,
                        start,
                        end,
                    });
                }
            }
            Ok(_) => {}
            Err(_) => unanswered += 1,
        }
        sleep(SAMPLE_EVERY);
    }
    (asked, unanswered)
}

// ---------------------------------------------------------------- the nemesis

/// One sidecar slot: restarted with the same id, config and port.
struct Node {
    id: String,
    port: u16,
    config: PathBuf,
    generation: u32,
    sidecar: Option<Sidecar>,
    phase: Phase,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Up,
    /// SIGSTOPped; SIGCONT at `until`.
    Paused {
        until: Instant,
    },
    /// SIGTERM sent; waiting for a clean exit, then down for `down_for`.
    Stopping {
        since: Instant,
        down_for: Duration,
    },
    /// Dead; restarted at `restart_at`.
    Down {
        restart_at: Instant,
    },
}

struct Nemesis<'a> {
    rng: &'a mut Rng,
    t0: Instant,
    cluster: &'a Cluster,
    faults: BTreeMap<&'static str, u32>,
    problems: Vec<String>,
}

impl Nemesis<'_> {
    fn say(&self, what: String) {
        println!("[{:>6.2?}] {what}", self.t0.elapsed());
    }

    /// Picks a fault and a target: mostly the leader. The first fault is
    /// always a pause of the leader, the one that matters most: the paused
    /// leader's in-flight writes resume after a successor took over.
    fn inject(&mut self, nodes: &mut [Node], shared: &Observed, first: bool) {
        // Every fault draws the same numbers whatever the cluster's state, so
        // that a seed replays the same sequence of kinds and durations (which
        // node leads at each fault still depends on timing).
        let kind_roll = self.rng.below(10);
        let on_leader = first || self.rng.below(4) != 0;
        let pick = self.rng.next();
        let pause = LEASE + self.rng.millis(0, 1500);
        let down_for = self.rng.millis(300, 1500);
        let up: Vec<usize> = (0..nodes.len())
            .filter(|&i| matches!(nodes[i].phase, Phase::Up))
            .collect();
        if up.is_empty() {
            return;
        }
        let leader = up
            .iter()
            .copied()
            .find(|&i| leads_now(nodes[i].port).is_some());
        let mut kind = match kind_roll {
            _ if first => "pause",
            0..=3 => "pause",
            4..=5 => "kill",
            6..=7 => "terminate",
            _ => "resign",
        };
        let target = match leader {
            Some(l) if on_leader => l,
            _ => up[(pick % up.len() as u64) as usize],
        };
        if kind == "resign" && leader != Some(target) {
            kind = "pause"; // only a leader can resign
        }
        *self.faults.entry(kind).or_default() += 1;
        let role = if leader == Some(target) {
            "leader"
        } else {
            "standby"
        };
        let node = &mut nodes[target];
        let sidecar = node.sidecar.as_mut().expect("an up node runs");
        match kind {
            "pause" => {
                // Stop it in the middle of a write if its app is writing:
                // the write resumes only after a successor may have taken over.
                let waiting = Instant::now();
                while !shared.writing[target].load(Relaxed)
                    && waiting.elapsed() < Duration::from_millis(300)
                {
                    sleep(Duration::from_micros(200));
                }
                sidecar.signal(libc::SIGSTOP);
                let during = if shared.writing[target].load(Relaxed) {
                    ", a write in flight"
                } else {
                    ""
                };
                node.phase = Phase::Paused {
                    until: Instant::now() + pause,
                };
                self.say(format!(
                    "SIGSTOP {} ({role}{during}) for {pause:?}",
                    node.id
                ));
            }
            "kill" => {
                sidecar.kill9();
                node.phase = Phase::Down {
                    restart_at: Instant::now() + down_for,
                };
                self.say(format!(
                    "SIGKILL {} ({role}), restart in {down_for:?}",
                    node.id
                ));
            }
            "terminate" => {
                sidecar.signal(libc::SIGTERM);
                node.phase = Phase::Stopping {
                    since: Instant::now(),
                    down_for,
                };
                self.say(format!("SIGTERM {} ({role})", node.id));
            }
            _ => {
                let r = request_within(
                    node.port,
                    "POST",
                    "/leader/resign?holdoff=1s",
                    &[],
                    b"",
                    Duration::from_secs(5),
                );
                let answer = match r {
                    Ok(r) => format!("{} {}", r.status, r.text()),
                    Err(e) => format!("no answer: {e}"),
                };
                self.say(format!(
                    "POST /leader/resign?holdoff=1s to {} ({role}): {answer}",
                    node.id
                ));
            }
        }
    }

    /// Moves a node along: resumes it, notices its exit, restarts it.
    fn tick(&mut self, node: &mut Node) {
        let now = Instant::now();
        match node.phase {
            Phase::Up => {}
            Phase::Paused { until } if now >= until => {
                node.sidecar.as_ref().unwrap().signal(libc::SIGCONT);
                node.phase = Phase::Up;
                self.say(format!("SIGCONT {}", node.id));
            }
            Phase::Paused { .. } => {}
            Phase::Stopping { since, down_for } => {
                let sidecar = node.sidecar.as_mut().unwrap();
                if !sidecar.is_running() {
                    let status = sidecar.wait_exit(Duration::from_secs(1));
                    if !status.success() {
                        self.problems.push(format!(
                            "{} (generation {}) exited with {status} after SIGTERM",
                            node.id, node.generation
                        ));
                    }
                    self.say(format!(
                        "{} exited ({status}) after {:?}, restart in {down_for:?}",
                        node.id,
                        since.elapsed()
                    ));
                    node.sidecar = None;
                    node.phase = Phase::Down {
                        restart_at: Instant::now() + down_for,
                    };
                } else if since.elapsed() > Duration::from_secs(15) {
                    self.problems.push(format!(
                        "{} (generation {}) did not exit within 15s of SIGTERM",
                        node.id, node.generation
                    ));
                    sidecar.kill9();
                    node.sidecar = None;
                    node.phase = Phase::Down { restart_at: now };
                }
            }
            Phase::Down { restart_at } if now >= restart_at => self.restart(node),
            Phase::Down { .. } => {}
        }
    }

    /// Starts the node again: a new process, same id, config file and port.
    fn restart(&mut self, node: &mut Node) {
        // The port was free a moment ago; in the rare case a client socket
        // grabbed it as its ephemeral port, wait until it is free again.
        wait_for(
            &format!("port {} of {} to be free", node.port, node.id),
            Duration::from_secs(10),
            || TcpListener::bind(("127.0.0.1", node.port)).ok().map(drop),
        );
        node.generation += 1;
        let log = self
            .cluster
            .path()
            .join(format!("{}.{}.log", node.id, node.generation));
        node.sidecar = Some(Sidecar::start(&node.id, node.port, &node.config, &log));
        node.phase = Phase::Up;
        self.say(format!(
            "restarted {} (generation {})",
            node.id, node.generation
        ));
    }

    /// Ends every fault on the node: resumed, exited, restarted.
    fn heal(&mut self, node: &mut Node) {
        loop {
            match node.phase {
                Phase::Up => return,
                Phase::Paused { .. } => {
                    node.phase = Phase::Paused {
                        until: Instant::now(),
                    }
                }
                Phase::Down { .. } => {
                    node.phase = Phase::Down {
                        restart_at: Instant::now(),
                    }
                }
                Phase::Stopping { .. } => sleep(Duration::from_millis(10)),
            }
            self.tick(node);
        }
    }
}

/// The node whose sidecar answers `/leader/self` with 200, if any.
fn leader_among(nodes: &[Node]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| matches!(n.phase, Phase::Up) && leads_now(n.port).is_some())
}

fn leads_now(port: u16) -> Option<()> {
    let r = request_within(port, "GET", "/leader/self", &[], b"", SAMPLE_TIMEOUT).ok()?;
    (r.status == 200).then_some(())
}

/// The final value, read through the leader and through every other sidecar
/// (any sidecar can read): they must agree.
fn read_final(nodes: &[Node], leader: usize, problems: &mut Vec<String>) -> Vec<u8> {
    // 503 means "retry" (e.g. a plugin instance restarting after a trap).
    let read = |n: &Node| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match request(n.port, "GET", KEY_PATH, &[], b"") {
                Ok(r) if r.status == 200 => return Ok(r.body),
                Ok(r) if r.status == 503 && Instant::now() < deadline => {
                    sleep(Duration::from_millis(100))
                }
                Ok(r) => return Err(format!("{}: {} {}", n.id, r.status, r.text())),
                Err(e) => return Err(format!("{}: {e}", n.id)),
            }
        }
    };
    let value = match read(&nodes[leader]) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("cannot read the final value from the leader {e}"));
            return Vec::new();
        }
    };
    for n in nodes {
        match read(n) {
            Ok(v) if v == value => {}
            Ok(v) => problems.push(format!(
                "{} reads {} bytes, the leader {} reads {} bytes",
                n.id,
                v.len(),
                nodes[leader].id,
                value.len()
            )),
            Err(e) => problems.push(format!("cannot read the final value: {e}")),
        }
    }
    value
}

// ---------------------------------------------------------------- the checks

/// One line of the log: `<term>:<app>:<seq>`.
struct Entry {
    term: u64,
}

/// Claim (1) on the final value: entries never go back to an older term, each
/// was really sent by its app, none appears twice, and each term was written
/// by one app only (one sidecar holds a term).
fn check_final_log(value: &[u8], stats: &[AppStats], problems: &mut Vec<String>) -> Vec<Entry> {
    let text = match std::str::from_utf8(value) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("the final value is not UTF-8: {e}"));
            return Vec::new();
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        problems.push("the final value does not end with a whole entry".into());
    }
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut writer_of_term: HashMap<u64, String> = HashMap::new();
    let mut max_term = 0;
    for (i, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split(':').collect();
        let (Some(term), Some(node)) = (
            parts.first().and_then(|t| t.parse::<u64>().ok()),
            parts
                .get(1)
                .and_then(|a| a.strip_prefix("app"))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| (1..=stats.len()).contains(&n)),
        ) else {
            problems.push(format!("entry {i} is malformed: {line:?}"));
            continue;
        };
        if parts.len() != 3 {
            problems.push(format!("entry {i} is malformed: {line:?}"));
            continue;
        }
        if term < max_term {
            problems.push(format!(
                "fencing: entry {i} {line:?} of term {term} follows an entry of term {max_term}"
            ));
        }
        max_term = max_term.max(term);
        if !stats[node - 1].attempted.contains(&format!("{line}\n")) {
            problems.push(format!("entry {i} {line:?} was never sent by its app"));
        }
        if !seen.insert(line) {
            problems.push(format!("entry {i} {line:?} appears twice"));
        }
        let app = parts[1].to_string();
        match writer_of_term.get(&term) {
            Some(other) if *other != app => problems.push(format!(
                "term {term} was written by both {other} and {app} (entry {i})"
            )),
            Some(_) => {}
            None => {
                writer_of_term.insert(term, app);
            }
        }
        entries.push(Entry { term });
    }
    entries
}

/// Claim (2): every acknowledged value is a prefix of the final one (each
/// write appends, so the final value holds every acknowledged entry in
/// order), and no version was acknowledged for two different values.
fn check_acknowledged_writes(value: &[u8], stats: &[AppStats], problems: &mut Vec<String>) {
    let mut by_version: HashMap<u64, (usize, u64)> = HashMap::new();
    let mut lost = Vec::new();
    for ack in stats.iter().flat_map(|s| &s.acked) {
        if ack.len > value.len() || hash(&value[..ack.len]) != ack.hash {
            lost.push(format!(
                "{} (term {}, version {})",
                ack.entry.trim_end(),
                ack.term,
                ack.version
            ));
        }
        if let Some(&other) = by_version.get(&ack.version)
            && other != (ack.len, ack.hash)
        {
            problems.push(format!(
                "version {} was acknowledged for two different values",
                ack.version
            ));
        }
        by_version.insert(ack.version, (ack.len, ack.hash));
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged write(s) lost (not a prefix of the final value), e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
}

/// Claims (1) and (3) causally, without timing assumptions: once a newer
/// term has been seen leading or writing (its answer received), no sidecar
/// may answer that it leads with an older term, and no write of an older
/// term may be acknowledged, in a request sent afterwards. And a term is held
/// by one sidecar only (a restarted one campaigns for a new term).
///
/// Why this holds for a correct sidecar: a sidecar reports leadership of
/// term t only until its last successful renewal + renew-deadline, while a
/// successor may create t+1 only after watching t's record unchanged for a
/// full lease (> renew-deadline) or after t was released (which follows the
/// step-down); and a successor writes only after sealing t's state.
fn check_causality(events: &[Event], problems: &mut Vec<String>) {
    let mut holder: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        match holder.get(&e.term) {
            Some(&other) if other != e.node => problems.push(format!(
                "two leaders: s{} and s{} both acted for term {}",
                other + 1,
                e.node + 1,
                e.term
            )),
            Some(_) => {}
            None => {
                holder.insert(e.term, e.node);
            }
        }
    }
    // For each term, the earliest instant an answer proved it current.
    let mut first_end: BTreeMap<u64, Instant> = BTreeMap::new();
    for e in events {
        let slot = first_end.entry(e.term).or_insert(e.end);
        *slot = (*slot).min(e.end);
    }
    // For each term, the earliest proof that some newer term was current.
    let mut newer_seen: BTreeMap<u64, (Instant, u64)> = BTreeMap::new();
    let mut best: Option<(Instant, u64)> = None;
    for (&term, &end) in first_end.iter().rev() {
        if let Some(b) = best {
            newer_seen.insert(term, b);
        }
        if best.is_none_or(|(b, _)| end < b) {
            best = Some((end, term));
        }
    }
    let mut violations: Vec<&Event> = events
        .iter()
        .filter(|e| newer_seen.get(&e.term).is_some_and(|(at, _)| *at < e.start))
        .collect();
    violations.sort_by_key(|e| e.start);
    for e in violations.iter().take(10) {
        let (at, newer) = newer_seen[&e.term];
        problems.push(format!(
            "{}: s{} answered {:?} for term {} to a request sent {:?} after term {newer} was seen current",
            if e.kind == Kind::Ack {
                "fencing"
            } else {
                "two leaders"
            },
            e.node + 1,
            e.kind,
            e.term,
            e.start - at
        ));
    }
    if violations.len() > 10 {
        problems.push(format!(
            "... {} causality violations in all",
            violations.len()
        ));
    }
}

/// 200s on `/leader/self` (or `leading` on `/leader`) from two sidecars with
/// requests that all fit in a few ms: not proof of two leaders (each answer
/// happened somewhere inside its request), but worth a look.
fn near_simultaneous_claims(events: &[Event]) -> Vec<String> {
    let mut claims: Vec<&Event> = events.iter().filter(|e| e.kind == Kind::Claim).collect();
    claims.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    for (i, a) in claims.iter().enumerate() {
        for b in &claims[i + 1..] {
            if b.start > a.start + SIMULTANEOUS {
                break;
            }
            if a.node != b.node && a.end.max(b.end) <= a.start + SIMULTANEOUS {
                out.push(format!(
                    "s{} term {} and s{} term {} within {:?}",
                    a.node + 1,
                    a.term,
                    b.node + 1,
                    b.term,
                    a.end.max(b.end) - a.start
                ));
            }
        }
    }
    out
}

/// The log files of every process the node ran, oldest first.
fn log_files(cluster: &Cluster, node: &Node) -> Vec<(String, String)> {
    (0..=node.generation)
        .map(|generation| {
            let name = if generation == 0 {
                format!("{}.log", node.id)
            } else {
                format!("{}.{generation}.log", node.id)
            };
            let text = std::fs::read_to_string(cluster.path().join(&name)).unwrap_or_default();
            (name, text)
        })
        .collect()
}

fn count_in_logs(cluster: &Cluster, nodes: &[Node], needle: &str) -> usize {
    nodes
        .iter()
        .flat_map(|n| log_files(cluster, n))
        .map(|(_, text)| text.matches(needle).count())
        .sum()
}

fn print_log_excerpts(cluster: &Cluster, node: &Node) {
    for (name, text) in log_files(cluster, node) {
        println!("---- {name} (leadership lines) ----");
        for line in text.lines().filter(|l| {
            [
                "became leader",
                "stepped down",
                "released",
                "backing off",
                "WARN",
                "ERROR",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            println!("{line}");
        }
    }
}

// ---------------------------------------------------------------- helpers

/// SplitMix64: small, deterministic, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The checkers themselves, on made-up histories: each flags what it should
/// and passes a correct history (a chaos run that never fails proves little
/// if its checks cannot fail).
#[test]
fn the_checks_flag_violations_and_pass_a_correct_history() {
    let t = Instant::now();
    let ms = |n: u64| t + Duration::from_millis(n);
    let ev = |term, node, kind, start, end| Event {
        term,
        node,
        kind,
        start: ms(start),
        end: ms(end),
    };
    let mut app1 = AppStats::default();
    let mut app2 = AppStats::default();
    for e in ["1:app1:1\n", "1:app1:2\n", "3:app1:9\n"] {
        app1.attempted.insert(e.into());
    }
    app2.attempted.insert("2:app2:3\n".into());
    let stats = |acked: &[(&[u8], u64)]| {
        let mut s = AppStats {
            attempted: app1.attempted.clone(),
            ..AppStats::default()
        };
        for (i, (value, term)) in acked.iter().enumerate() {
            s.acked.push(Ack {
                term: *term,
                version: i as u64 + 1,
                len: value.len(),
                hash: hash(value),
                entry: String::new(),
            });
        }
        s
    };
    let check_log = |value: &[u8], stats: &[AppStats]| {
        let mut problems = Vec::new();
        check_final_log(value, stats, &mut problems);
        problems
    };

    // A correct history passes every check.
    let good = b"1:app1:1\n1:app1:2\n2:app2:3\n".as_slice();
    let two = [stats(&[(&good[..9], 1), (&good[..18], 1)]), app2];
    assert_eq!(check_log(good, &two), Vec::<String>::new());
    let mut problems = Vec::new();
    check_acknowledged_writes(good, &two, &mut problems);
    check_causality(
        &[
            ev(1, 0, Kind::Claim, 0, 5),
            ev(1, 0, Kind::Ack, 4, 8),
            // Overlapping requests prove nothing: both may have been answered in order.
            ev(2, 1, Kind::Claim, 7, 12),
            ev(1, 0, Kind::Ack, 6, 13),
        ],
        &mut problems,
    );
    assert_eq!(problems, Vec::<String>::new());

    // (1) an entry of an older term after a newer one; an entry nobody sent;
    // a term written by two apps.
    let p = check_log(b"1:app1:1\n2:app2:3\n1:app1:2\n", &two);
    assert!(p.iter().any(|p| p.starts_with("fencing: entry 2")), "{p:?}");
    let p = check_log(b"1:app1:1\n1:app1:7\n", &two);
    assert!(p.iter().any(|p| p.contains("never sent")), "{p:?}");
    let p = check_log(b"1:app1:1\n1:app2:3\n", &two);
    assert!(p.iter().any(|p| p.contains("written by both")), "{p:?}");

    // (2) an acknowledged value that is not a prefix of the final one.
    let mut problems = Vec::new();
    let lost = [stats(&[(b"1:app1:1\n1:app1:2\n", 1)])];
    check_acknowledged_writes(b"1:app1:1\n2:app2:3\n", &lost, &mut problems);
    assert!(problems.iter().any(|p| p.contains("lost")), "{problems:?}");

    // (1)/(3) causally: an older term claimed or written in a request sent
    // after a newer term was seen; one term held by two sidecars.
    for late in [Kind::Claim, Kind::Ack] {
        let mut problems = Vec::new();
        check_causality(
            &[ev(2, 1, Kind::Claim, 0, 5), ev(1, 0, late, 6, 7)],
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{late:?}: {problems:?}");
    }
    let mut problems = Vec::new();
    check_causality(
        &[ev(3, 0, Kind::Claim, 0, 1), ev(3, 2, Kind::Claim, 0, 1)],
        &mut problems,
    );
    assert!(
        problems.iter().any(|p| p.contains("two leaders")),
        "{problems:?}"
    );
}
