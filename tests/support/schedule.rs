//! Fault schedules: real sidecars on one backend, the overlap checker
//! watching them (`overlap`), apps writing through them (`workload`), and a
//! nemesis injecting faults drawn from a seeded PRNG; then the checks and a
//! summary. The test files give the backend ([`Backend`]): its configs, its
//! own faults (ZooKeeper members, connection cuts) and its takeover delay.
//!
//! Faults on sidecars, mostly on the leader: SIGSTOP then SIGCONT (timed to
//! catch a write in flight), a standby SIGSTOPped for longer than the lease
//! in the middle of its campaign (right after the leader's record changed,
//! where the backend can tell, or again just after a SIGCONT, when it is
//! observing the record afresh), SIGKILL and restart, SIGTERM and restart,
//! `POST /leader/resign`, and plugin faults (trap, spin, hang in a host call,
//! memory blow-up) injected through the fault-injecting build of the backend
//! (`plugins/fixtures/faults`) in a call the sidecar makes as leader or as
//! standby, sometimes after the backend did the work. Kinds are dealt from a
//! shuffled deck holding every kind (the backend's too), so even a short run
//! injects each of them; the first card is always a pause of the leader.
//!
//! Bounded in time and count: faults come every 1–2 s for `CHAOS_SECS`, each
//! lasts a few seconds at most, a sidecar fault leaves at least one sidecar
//! running, and `CHAOS_FAULTS` caps their number. Then every fault is healed
//! and the cluster must elect a leader and agree on the data.
//!
//! Environment: `CHAOS_SEED=<u64>` replays a schedule (the seed is printed;
//! process timing still varies), `CHAOS_SECS=<n>` (the test's short default
//! otherwise; a soak sets minutes), `CHAOS_SIDECARS=3|5`, `CHAOS_FAULTS=<n>`,
//! `CHAOS_KEEP=1` keeps the cluster directory (configs, logs, backend data),
//! `CHAOS_WRITERS=<n>` sets the concurrent register writers beside each app
//! (default [`DEFAULT_WRITERS`]).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::overlap::{self, Event, History, Kind};
use super::workload::{self, FinalState, Workload};
use super::{Cluster, Sidecar, SidecarYaml, free_port, request_within, wait_for};

/// The renew deadline in `support::TIMING`, which every schedule runs with.
pub const RENEW_DEADLINE: Duration = Duration::from_millis(1500);
/// Where plugin fault triggers go, inside the cluster's shared directory
/// (the plugin sees it at `/data/fault-injection`).
const TRIGGERS: &str = "fault-injection";

/// Concurrent fenced register writers beside each app unless
/// `CHAOS_WRITERS` says otherwise: every schedule has many writers of one
/// term in flight at once around each handover.
pub const DEFAULT_WRITERS: usize = 4;

pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    pub sidecars: usize,
    pub max_faults: usize,
    pub keep: bool,
    /// Register writers beside each app (see `workload`).
    pub writers: usize,
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a whole number"))
    })
}

impl Settings {
    /// From the environment (see the module documentation), with `secs` as
    /// the default duration.
    pub fn from_env(secs: u64) -> Settings {
        let seed = env_number("CHAOS_SEED").unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        let sidecars = env_number("CHAOS_SIDECARS").unwrap_or(3) as usize;
        assert!(
            sidecars == 3 || sidecars == 5,
            "CHAOS_SIDECARS must be 3 or 5, not {sidecars}"
        );
        Settings {
            seed,
            duration: Duration::from_secs(env_number("CHAOS_SECS").unwrap_or(secs)),
            sidecars,
            max_faults: env_number("CHAOS_FAULTS").map_or(usize::MAX, |n| n as usize),
            keep: std::env::var_os("CHAOS_KEEP").is_some(),
            writers: env_number("CHAOS_WRITERS").map_or(DEFAULT_WRITERS, |n| n as usize),
        }
    }
}

/// SplitMix64: small, deterministic, good enough to pick faults.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

/// What differs between backends.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// The config of sidecar `id` (number `node`) serving on `port`. `data`
    /// is a directory of the cluster's for the plugin's filesystem grant:
    /// fault triggers are dropped into it.
    fn config(&self, node: usize, id: &str, port: u16, data: &Path) -> String;
    /// How long after a leader's last renewal began a successor can take
    /// over (the lease, the ZooKeeper session timeout): what the safety bound
    /// and the length of pauses derive from.
    fn takeover_after(&self) -> Duration;
    /// Waits until the leader has just renewed, seen in the backend itself
    /// (the file backend: its term record changed); false if the backend
    /// cannot tell, or nothing changed `within`. `data` as for `config`.
    fn await_renewal(&mut self, _data: &Path, _within: Duration) -> bool {
        false
    }
    /// The backend's own fault kinds, dealt with the sidecar faults.
    fn kinds(&self) -> &'static [&'static str] {
        &[]
    }
    /// Injects one of `kinds`, aimed at sidecar `target` if it aims at one;
    /// None if it cannot be injected now (it is tried again shortly).
    fn inject(&mut self, _kind: &str, _target: usize, _rng: &mut Rng) -> Option<String> {
        None
    }
    /// Ends the faults whose time is up; says what it did.
    fn tick(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Ends every fault.
    fn heal(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Whether a sidecar that refused to start (its log given) did so
    /// because of a fault of the backend's (say, ZooKeeper unreachable).
    fn refusal_expected(&self, _log: &str) -> bool {
        false
    }
}

/// The figures a run ends with (printed as its summary).
#[derive(Debug, Default)]
pub struct Summary {
    pub faults: BTreeMap<String, u32>,
    pub plugin_faults_fired: usize,
    pub leadership_changes: usize,
    pub overlaps: usize,
    pub lost: usize,
    pub deposed_accepted: usize,
    pub acknowledged: usize,
}

/// Sidecar faults, one card each per deck (pauses twice: the fault fencing
/// exists for).
const SIDECAR_KINDS: &[&str] = &[
    "pause",
    "pause",
    "standby pause",
    "standby pause",
    "kill",
    "terminate",
    "resign",
    "plugin trap",
    "plugin spin",
    "plugin hang",
    "plugin oom",
];

/// Calls a plugin fault can strike in, by the role of its sidecar.
const LEADER_CALLS: &[&str] = &["keep", "put", "put after", "get", "leader"];
const STANDBY_CALLS: &[&str] = &["campaign", "leader", "get"];

/// Every kind in a random order, dealt again when used up.
struct Deck {
    kinds: Vec<&'static str>,
    cards: Vec<&'static str>,
}

impl Deck {
    fn draw(&mut self, rng: &mut Rng) -> &'static str {
        if self.cards.is_empty() {
            self.cards = self.kinds.clone();
            for i in (1..self.cards.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.cards.swap(i, j);
            }
        }
        self.cards.pop().expect("a deck has cards")
    }
}

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
    /// SIGSTOPped; SIGCONT at `until`, then, with `again`, SIGSTOP again
    /// right away for that long.
    Paused {
        until: Instant,
        again: Option<Duration>,
    },
    /// SIGTERM sent; waiting for a clean exit, then down for `down_for`.
    Stopping {
        since: Instant,
        down_for: Duration,
    },
    /// Not running; started again at `restart_at`.
    Down {
        restart_at: Instant,
    },
    /// Started; up once it serves.
    Starting {
        since: Instant,
    },
}

impl Node {
    fn log_name(&self, generation: u32) -> String {
        if generation == 0 {
            format!("{}.log", self.id)
        } else {
            format!("{}.{generation}.log", self.id)
        }
    }
}

struct Nemesis<'a> {
    backend: &'a mut dyn Backend,
    rng: Rng,
    deck_rng: Rng,
    deck: Deck,
    t0: Instant,
    cluster: &'a Cluster,
    faults: BTreeMap<String, u32>,
    problems: Vec<String>,
    refused_starts: u32,
    paused_leaders: Vec<PausedLeader>,
}

/// A leader SIGSTOPped while it held `term`, and when it was let go on.
struct PausedLeader {
    node: usize,
    term: u64,
    resumed: Option<Instant>,
}

/// The config every schedule's sidecar starts from: the plugin `plugin` under
/// the limits a faulty plugin must hit quickly (32 MiB, restarts backing off
/// to 1 s) and the schedule's data directory (the filesystem capability, where
/// the workload's evidence goes).
pub fn chaos_yaml(id: &str, port: u16, plugin: &str, data: &Path) -> SidecarYaml {
    SidecarYaml::new(id, port, plugin)
        .plugin_key("memory-limit: 32MiB")
        .plugin_key("restart-backoff-max: 1s")
        .capability(&format!("filesystem: {{dir: '{}'}}", data.display()))
}

pub fn run(backend: &mut dyn Backend, settings: &Settings) -> Summary {
    let seed = settings.seed;
    println!(
        "fault schedule on the {} backend: seed {seed} (replay with CHAOS_SEED={seed}), {} sidecars, {} register writers beside each app, faults for {:?}",
        backend.name(),
        settings.sidecars,
        settings.writers,
        settings.duration
    );
    let t0 = Instant::now();
    let mut cluster = Cluster::new();
    let data = cluster.path().join("data");
    std::fs::create_dir_all(data.join(TRIGGERS)).expect("create the trigger directory");
    let mut nodes: Vec<Node> = (0..settings.sidecars)
        .map(|i| {
            let id = format!("s{}", i + 1);
            let port = free_port();
            let config = cluster.write_config(&id, &backend.config(i, &id, port, &data));
            let sidecar = Sidecar::start(
                &id,
                port,
                &config,
                &cluster.path().join(format!("{id}.log")),
            );
            Node {
                id,
                port,
                config,
                generation: 0,
                sidecar: Some(sidecar),
                phase: Phase::Up,
            }
        })
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    wait_for("a first leader", Duration::from_secs(30), || {
        leader_among(&nodes)
    });

    let history = Arc::new(History::default());
    let watchers = overlap::watch(&history, &ports);
    let workload = workload::start(&history, &ports, settings.writers);

    let mut kinds: Vec<&'static str> = SIDECAR_KINDS.to_vec();
    kinds.extend_from_slice(backend.kinds());
    let mut nemesis = Nemesis {
        backend,
        rng: Rng(seed),
        deck_rng: Rng(seed ^ 0x5EED_DECC),
        deck: Deck {
            kinds,
            cards: vec!["pause"],
        },
        t0,
        cluster: &cluster,
        faults: BTreeMap::new(),
        problems: Vec::new(),
        refused_starts: 0,
        paused_leaders: Vec::new(),
    };
    let end = Instant::now() + settings.duration;
    let mut next_fault = Instant::now() + nemesis.deck_rng.millis(1000, 2000);
    let mut pending: Option<&'static str> = None;
    let mut injected = 0;
    while Instant::now() < end && injected < settings.max_faults {
        nemesis.tick_all(&mut nodes);
        if Instant::now() >= next_fault {
            let kind = pending
                .take()
                .unwrap_or_else(|| nemesis.deck.draw(&mut nemesis.deck_rng));
            if nemesis.inject(kind, &mut nodes, &workload) {
                injected += 1;
                next_fault = Instant::now() + nemesis.deck_rng.millis(1000, 2000);
            } else {
                pending = Some(kind);
                next_fault = Instant::now() + Duration::from_millis(200);
            }
        }
        sleep(Duration::from_millis(10));
    }
    nemesis.heal(&mut nodes, &data);
    nemesis.say(format!("healed after {injected} faults; stopping the apps"));
    let outcome = workload.stop();

    let leader = wait_for("a leader after healing", Duration::from_secs(60), || {
        leader_among(&nodes)
    });
    let mut problems = std::mem::take(&mut nemesis.problems);
    let end_state = read_agreed(&nodes, leader, &mut problems);
    let (polls, unanswered) = watchers.stop();
    nemesis.say(format!(
        "{} leads; {} log segments",
        nodes[leader].id,
        end_state.as_ref().map_or(0, |s| s.segments.len())
    ));

    // ---- checks ----
    let bound = overlap::safety_bound(RENEW_DEADLINE, nemesis.backend.takeover_after());
    let events = history.snapshot();
    let verdict = overlap::check(&events, bound);
    problems.extend(verdict.problems());
    let figures = match &end_state {
        Some(s) => outcome.check(s, &mut problems),
        None => workload::Figures::default(),
    };
    let fired = count_in_logs(&cluster, &nodes, "fault injection:");
    let (deposed_while_paused, stale) = paused_leaders(&nemesis.paused_leaders, &events);
    problems.extend(stale.iter().take(10).cloned());
    let summary = Summary {
        faults: nemesis.faults.clone(),
        plugin_faults_fired: fired,
        leadership_changes: verdict.changes(),
        overlaps: verdict.overlaps.len(),
        lost: figures.lost,
        deposed_accepted: verdict.deposed_acks.len() + figures.deposed_landed,
        acknowledged: outcome.acknowledged(),
    };
    let stats = &outcome.stats;
    let sum = |f: fn(&workload::AppStats) -> u64| stats.iter().map(f).sum::<u64>();
    let total: u32 = summary.faults.values().sum();
    let by_kind: Vec<String> = summary
        .faults
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "---- fault schedule summary: {} backend, seed {seed}, {} sidecars, {:.0?} ----",
        nemesis.backend.name(),
        settings.sidecars,
        t0.elapsed()
    );
    println!("faults injected          {total}: {}", by_kind.join(", "));
    let armed: u32 = summary
        .faults
        .iter()
        .filter(|(k, _)| k.starts_with("plugin "))
        .map(|(_, n)| n)
        .sum();
    println!("plugin faults fired      {fired} of {armed} armed (a trigger waits for its call)");
    println!(
        "leadership changes       {} ({} terms claimed, {} claim intervals)",
        summary.leadership_changes,
        verdict.terms.len(),
        verdict.intervals.len()
    );
    println!(
        "overlaps                 {} (bound {bound:?}); claims of a superseded term {}; terms held twice {}",
        summary.overlaps,
        verdict.late_claims.len(),
        verdict.shared_terms.len()
    );
    println!(
        "acknowledged writes      {} ({} log appends, {} register writes); lost {}",
        summary.acknowledged, figures.appends, figures.register_writes, summary.lost
    );
    println!(
        "paused leaders           {} deposed while stopped, {} of them claimed or wrote for the old term after SIGCONT",
        deposed_while_paused,
        stale.len()
    );
    println!(
        "deposed writes accepted  {} (acknowledged after a newer term was seen {}, landed after a newer term's write {})",
        summary.deposed_accepted,
        verdict.deposed_acks.len(),
        figures.deposed_landed
    );
    println!(
        "refused writes           fenced 409: {}, lost compare-and-set 412: {}, unavailable 503: {}, plugin_failed 503: {}, no answer: {}",
        sum(|s| s.fenced),
        sum(|s| s.lost_cas),
        sum(|s| s.unavailable),
        sum(|s| s.plugin_failed),
        sum(|s| s.no_answer)
    );
    println!(
        "held across a fault      {} acknowledged, {} fenced",
        sum(|s| s.held.0),
        sum(|s| s.held.1)
    );
    println!(
        "observed                 {polls} leadership polls ({unanswered} unanswered), {} register reads, {} log entries, {} refused starts",
        outcome.sightings.len(),
        figures.entries,
        nemesis.refused_starts
    );

    for (i, s) in stats.iter().enumerate() {
        for u in s.unexpected.iter().take(5) {
            problems.push(format!("app{}: unexpected answer: {u}", i + 1));
        }
    }
    if summary.leadership_changes < 2 {
        problems.push(format!(
            "the run exercised too little: {} leadership changes",
            summary.leadership_changes
        ));
    }
    if figures.appends < 20 {
        problems.push(format!(
            "the run exercised too little: {} acknowledged appends",
            figures.appends
        ));
    }
    if !problems.is_empty() {
        for node in &nodes {
            print_log_excerpts(&cluster, node);
        }
    }
    if settings.keep {
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
    summary
}

impl Nemesis<'_> {
    fn say(&self, what: String) {
        println!("[{:>6.2?}] {what}", self.t0.elapsed());
    }

    fn count(&mut self, kind: &str) {
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }

    /// Injects `kind`; false if it cannot be injected now.
    fn inject(&mut self, kind: &'static str, nodes: &mut [Node], workload: &Workload) -> bool {
        let up: Vec<usize> = (0..nodes.len())
            .filter(|&i| matches!(nodes[i].phase, Phase::Up))
            .collect();
        let (leader, leader_term) = up
            .iter()
            .find_map(|&i| leading_term(nodes[i].port).map(|t| (Some(i), Some(t))))
            .unwrap_or((None, None));
        // Mostly the leader: that is where faults matter. The first fault,
        // a pause, always: its write in flight resumes after a successor
        // took over, the case fencing exists for.
        let on_leader = (self.rng.below(4) != 0 || kind == "resign" || self.faults.is_empty())
            && kind != "standby pause";
        if self.faults.is_empty() && leader.is_none() {
            return false;
        }
        let standbys: Vec<usize> = up.iter().copied().filter(|&i| Some(i) != leader).collect();
        let target = match leader {
            Some(l) if on_leader => l,
            _ if kind == "resign" => return false,
            _ if kind == "standby pause" && (leader.is_none() || standbys.is_empty()) => {
                return false;
            }
            _ if kind == "standby pause" => *self.rng.pick(&standbys),
            _ if up.is_empty() => return false,
            _ => *self.rng.pick(&up),
        };
        if self.backend.kinds().contains(&kind) {
            return match self.backend.inject(kind, target, &mut self.rng) {
                Some(what) => {
                    self.count(kind);
                    self.say(what);
                    true
                }
                None => false,
            };
        }
        // A sidecar fault leaves at least one sidecar running.
        if up.len() < 2 {
            return false;
        }
        let role = if leader == Some(target) {
            "leader"
        } else {
            "standby"
        };
        let node = &mut nodes[target];
        let sidecar = node.sidecar.as_mut().expect("an up node runs");
        match kind {
            "standby pause" => {
                // Aimed at the campaign: a standby stopped between reading the
                // leader's record and judging it must not count its own pause
                // as the leader's silence (issue 12). Half the time right after
                // the leader's record changed (0-25 ms on, across one poll of
                // the standby's), else stopped twice, the second time just
                // after its SIGCONT, when it looks at the record afresh.
                let pause = self.backend.takeover_after() + self.rng.millis(200, 1500);
                let data = self.cluster.path().join("data");
                let at_renewal = self.rng.below(2) == 0
                    && self.backend.await_renewal(&data, Duration::from_secs(2));
                let (when, again) = if at_renewal {
                    let gap = self.rng.millis(0, 25);
                    sleep(gap);
                    (format!("{gap:?} after the leader's record changed"), None)
                } else {
                    let again = self.backend.takeover_after() + self.rng.millis(200, 1500);
                    (
                        format!("then again for {again:?} just after its SIGCONT"),
                        Some(again),
                    )
                };
                sidecar.signal(libc::SIGSTOP);
                node.phase = Phase::Paused {
                    until: Instant::now() + pause,
                    again,
                };
                self.say(format!(
                    "SIGSTOP {} (standby, {when}) for {pause:?}",
                    node.id
                ));
            }
            "pause" => {
                // Stop it in the middle of a write if its app is writing:
                // the write resumes only after a successor may have taken over.
                let waiting = Instant::now();
                while !workload.writing(target) && waiting.elapsed() < Duration::from_millis(300) {
                    sleep(Duration::from_micros(200));
                }
                sidecar.signal(libc::SIGSTOP);
                if let (Some(term), true) = (leader_term, role == "leader") {
                    self.paused_leaders.push(PausedLeader {
                        node: target,
                        term,
                        resumed: None,
                    });
                }
                let during = if workload.writing(target) {
                    ", a write in flight"
                } else {
                    ""
                };
                // Mostly long enough for a successor to take over (what fencing
                // is for), sometimes too short for that (the leader must keep
                // leading, or step down cleanly).
                let long = self.backend.takeover_after() + self.rng.millis(500, 2000);
                let short = self.rng.millis(200, RENEW_DEADLINE.as_millis() as u64);
                let pause = if self.rng.below(3) == 0 && !self.faults.is_empty() {
                    short
                } else {
                    long
                };
                node.phase = Phase::Paused {
                    until: Instant::now() + pause,
                    again: None,
                };
                self.say(format!(
                    "SIGSTOP {} ({role}{during}) for {pause:?}",
                    node.id
                ));
            }
            "kill" => {
                sidecar.kill9();
                let down_for = self.rng.millis(300, 1500);
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
                    down_for: self.rng.millis(300, 1500),
                };
                self.say(format!("SIGTERM {} ({role})", node.id));
            }
            "resign" => {
                let r = request_within(
                    node.port,
                    "POST",
                    "/leader/resign?holdoff=1s",
                    &[],
                    b"",
                    Duration::from_secs(5),
                );
                let answer = match r {
                    Ok(r) => format!("{} {}", r.status, r.text().trim()),
                    Err(e) => format!("no answer: {e}"),
                };
                self.say(format!(
                    "POST /leader/resign?holdoff=1s to {} ({role}): {answer}",
                    node.id
                ));
            }
            plugin => {
                let fault = plugin.strip_prefix("plugin ").expect("a plugin fault");
                let calls = if role == "leader" {
                    LEADER_CALLS
                } else {
                    STANDBY_CALLS
                };
                let call = *self.rng.pick(calls);
                let data = self.cluster.path().join("data").join(TRIGGERS);
                let tmp = data.join(format!(".{}.tmp", node.id));
                std::fs::write(&tmp, format!("{fault} {call}\n")).expect("write a trigger");
                std::fs::rename(&tmp, data.join(&node.id)).expect("arm a trigger");
                self.say(format!(
                    "plugin fault armed: {fault} in {} ({role}) at its next {call}",
                    node.id
                ));
            }
        }
        self.count(kind);
        true
    }

    fn tick_all(&mut self, nodes: &mut [Node]) {
        for (index, node) in nodes.iter_mut().enumerate() {
            self.tick(index, node);
        }
        for what in self.backend.tick() {
            self.say(what);
        }
    }

    /// Moves node `index` along: resumes it, notices its exit, restarts it.
    fn tick(&mut self, index: usize, node: &mut Node) {
        let now = Instant::now();
        match node.phase {
            Phase::Up => {}
            Phase::Paused { until, again } if now >= until => {
                node.sidecar.as_ref().unwrap().signal(libc::SIGCONT);
                if let Some(pause) = again {
                    // Stop it again as it looks at the record afresh: within
                    // its first poll after resuming.
                    let gap = self.rng.millis(0, 25);
                    sleep(gap);
                    node.sidecar.as_ref().unwrap().signal(libc::SIGSTOP);
                    node.phase = Phase::Paused {
                        until: Instant::now() + pause,
                        again: None,
                    };
                    self.say(format!(
                        "SIGCONT {}, SIGSTOP again {gap:?} later for {pause:?}",
                        node.id
                    ));
                    return;
                }
                for p in self.paused_leaders.iter_mut() {
                    if p.node == index && p.resumed.is_none() {
                        p.resumed = Some(Instant::now());
                    }
                }
                node.phase = Phase::Up;
                self.say(format!("SIGCONT {}", node.id));
            }
            Phase::Paused { .. } => {}
            Phase::Stopping { since, down_for } => {
                let sidecar = node.sidecar.as_mut().unwrap();
                if let Some(status) = sidecar.exited() {
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
                } else if since.elapsed() > Duration::from_secs(20) {
                    self.problems.push(format!(
                        "{} (generation {}) did not exit within 20s of SIGTERM",
                        node.id, node.generation
                    ));
                    sidecar.kill9();
                    node.sidecar = None;
                    node.phase = Phase::Down { restart_at: now };
                }
            }
            Phase::Down { restart_at } if now >= restart_at => self.restart(node),
            Phase::Down { .. } => {}
            Phase::Starting { since } => {
                let sidecar = node.sidecar.as_mut().unwrap();
                if let Some(status) = sidecar.exited() {
                    let log = sidecar.log_text();
                    if self.backend.refusal_expected(&log) {
                        self.refused_starts += 1;
                        self.say(format!("{} refused to start ({status}), as expected during this fault; retrying", node.id));
                    } else {
                        self.problems.push(format!(
                            "{} (generation {}) exited during start ({status}); log {}",
                            node.id,
                            node.generation,
                            node.log_name(node.generation)
                        ));
                    }
                    node.sidecar = None;
                    node.phase = Phase::Down {
                        restart_at: now + Duration::from_secs(1),
                    };
                } else if request_within(
                    node.port,
                    "GET",
                    "/healthz",
                    &[],
                    b"",
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    node.phase = Phase::Up;
                    self.say(format!(
                        "{} (generation {}) serves",
                        node.id, node.generation
                    ));
                } else if since.elapsed() > Duration::from_secs(60) {
                    self.problems
                        .push(format!("{} did not serve within 60s of its start", node.id));
                    sidecar.kill9();
                    node.sidecar = None;
                    node.phase = Phase::Down { restart_at: now };
                }
            }
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
        let log = self.cluster.path().join(node.log_name(node.generation));
        node.sidecar = Some(Sidecar::spawn(&node.id, node.port, &node.config, &log, &[]));
        node.phase = Phase::Starting {
            since: Instant::now(),
        };
        self.say(format!(
            "restarting {} (generation {})",
            node.id, node.generation
        ));
    }

    /// Ends every fault: the backend's, then the sidecars' (resumed, exited,
    /// restarted, serving), and disarms plugin triggers not taken yet.
    fn heal(&mut self, nodes: &mut [Node], data: &Path) {
        for what in self.backend.heal() {
            self.say(what);
        }
        if let Ok(dir) = std::fs::read_dir(data.join(TRIGGERS)) {
            for entry in dir.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut all_up = true;
            for (index, node) in nodes.iter_mut().enumerate() {
                match node.phase {
                    Phase::Up => continue,
                    Phase::Paused { .. } => {
                        node.phase = Phase::Paused {
                            until: Instant::now(),
                            again: None,
                        }
                    }
                    Phase::Down { .. } => {
                        node.phase = Phase::Down {
                            restart_at: Instant::now(),
                        }
                    }
                    Phase::Stopping { .. } | Phase::Starting { .. } => {}
                }
                all_up = false;
                self.tick(index, node);
            }
            if all_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecars did not all serve within 120s of healing"
            );
            sleep(Duration::from_millis(20));
        }
    }
}

/// The node whose sidecar answers `/leader/self` with 200, if any.
fn leader_among(nodes: &[Node]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| matches!(n.phase, Phase::Up) && leads_now(n.port))
}

fn leads_now(port: u16) -> bool {
    leading_term(port).is_some()
}

/// The term this sidecar says it leads with right now, if it does.
fn leading_term(port: u16) -> Option<u64> {
    let r = request_within(
        port,
        "GET",
        "/leader/self",
        &[],
        b"",
        Duration::from_millis(200),
    )
    .ok()?;
    (r.status == 200).then(|| r.json()["term"].as_u64())?
}

/// Leaders paused until a newer term was proven current (a claim or an
/// acknowledged write answered before their SIGCONT), and which of those
/// claimed or acknowledged a write for their old term in a request sent
/// after the SIGCONT: a paused leader must not act as leader when it resumes.
fn paused_leaders(paused: &[PausedLeader], events: &[Event]) -> (usize, Vec<String>) {
    let mut deposed = 0;
    let mut stale = Vec::new();
    for p in paused {
        let Some(resumed) = p.resumed else { continue };
        let newer = events
            .iter()
            .any(|e| e.kind != Kind::NotLeading && e.term > p.term && e.end < resumed);
        if !newer {
            continue;
        }
        deposed += 1;
        if let Some(e) = events.iter().find(|e| {
            e.node == p.node && e.kind != Kind::NotLeading && e.term == p.term && e.start > resumed
        }) {
            stale.push(format!(
                "s{} {} term {} {:?} after its SIGCONT, though a newer term led while it was stopped",
                p.node + 1,
                e.action(),
                p.term,
                e.start - resumed
            ));
        }
    }
    (deposed, stale)
}

/// The final data, read through the leader; every other sidecar must read
/// the same (any sidecar can read; a ZooKeeper follower may lag a moment).
fn read_agreed(nodes: &[Node], leader: usize, problems: &mut Vec<String>) -> Option<FinalState> {
    let end = match workload::read_final(nodes[leader].port) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!(
                "cannot read the final state through the leader {}: {e}",
                nodes[leader].id
            ));
            return None;
        }
    };
    let same = |other: &FinalState| {
        other.segments == end.segments
            && other.register.as_ref().map(|r| (r.version, &r.value))
                == end.register.as_ref().map(|r| (r.version, &r.value))
    };
    for n in nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match workload::read_final(n.port) {
                Ok(s) if same(&s) => break,
                Ok(_) if Instant::now() < deadline => sleep(Duration::from_millis(200)),
                Ok(s) => {
                    problems.push(format!(
                        "{} reads {} log segments and register {:?}; the leader {} reads {} and {:?}",
                        n.id,
                        s.segments.len(),
                        s.register.map(|r| r.version),
                        nodes[leader].id,
                        end.segments.len(),
                        end.register.as_ref().map(|r| r.version)
                    ));
                    break;
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", n.id));
                    break;
                }
            }
        }
    }
    Some(end)
}

/// The log files of every process the node ran, oldest first.
fn log_files(cluster: &Cluster, node: &Node) -> Vec<(String, String)> {
    (0..=node.generation)
        .map(|generation| {
            let name = node.log_name(generation);
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
                "fault injection",
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
