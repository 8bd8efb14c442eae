//! The data side of a fault schedule: an "app" beside each sidecar (like a
//! Flink JobManager) writes through its own sidecar's state API while that
//! sidecar says it leads, fenced by its term; a reader watches one key from
//! every sidecar. Afterwards [`Outcome::check`] shows that every acknowledged
//! write is readable and that no write of a deposed term landed.
//!
//! Each app, while its sidecar leads with term T, repeats two writes:
//!
//! - **the log**: appends `T:app<n>:<seq>\n` to the current log segment
//!   (`chaos/log/<nnnnn>`, a new one every [`SEGMENT_CAP`] bytes so that a
//!   long soak keeps values small), fenced by T and guarded by compare-and-set.
//!   Every acknowledged value must be a prefix of the segment's final value
//!   (nothing acknowledged is lost), and terms never go back in the log.
//! - **the register** (`chaos/register`): `T:app<n>:<seq>`, fenced by T and
//!   nothing else. The compare-and-set on the log would mask a fencing bug (a
//!   deposed writer's stale version is refused whatever its term); here only
//!   the fence stands between a deposed term and the value. A key's versions
//!   grow with every write in every backend here (a store-wide counter for
//!   the file backend, the node's mzxid for ZooKeeper), so ordering every
//!   (version, value) pair ever seen, from acknowledgements, from the reader
//!   and from the final read, shows the order in which values landed: a term
//!   that goes back is a deposed write that landed after a newer term wrote.
//!
//! Beside each app, `writers` more threads (`CHAOS_WRITERS`, see
//! `schedule`) write only the register, fenced by their sidecar's term, as
//! fast as they can and at the same time: a sidecar runs state calls in
//! parallel, and the register's order must still never let a deposed term's
//! write land after a newer term's first write. Their values are
//! `T:app<n>w<k>:<seq>`, their figures count with their app's.
//!
//! A write that times out, or is answered 503, is indeterminate: it may have
//! landed or not, so it is never counted as acknowledged (and may appear).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use super::overlap::{Event, History, Kind};
use super::{Response, request_within};

/// A log segment is closed once its value would exceed this.
pub const SEGMENT_CAP: usize = 48 << 10;
/// Config for the sidecars: log segments stay inline in the backend (the
/// default inline limit is 16 KiB; the storage dir is a different path).
pub const CONFIG_EXTRA: &str = "storage: {inline-limit: 64KiB}\n";
const LOG_PREFIX: &str = "chaos/log/";
const REGISTER: &str = "/state/chaos/register";
/// How long an app waits for `GET /leader`. A paused sidecar answers
/// nothing; the app treats that as "unknown" and asks again.
const LEADER_TIMEOUT: Duration = Duration::from_millis(300);
/// How long an app waits for a state read or write: longer than the longest
/// pause, so that a write in flight when its sidecar was SIGSTOPped gets its
/// real answer after SIGCONT, when a successor has usually taken over: the
/// case fencing exists for.
const STATE_TIMEOUT: Duration = Duration::from_secs(8);
/// A write that took longer than this was held across a pause or a cut.
const HELD: Duration = Duration::from_secs(1);
/// Pause between two rounds of writes: "as fast as possible", but leaving
/// some CPU to the sidecars on a 2-core machine.
const WRITE_GAP: Duration = Duration::from_millis(3);
/// How often the reader reads the register.
const READ_EVERY: Duration = Duration::from_millis(50);

pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// An acknowledged log append: its value is kept as length and hash only.
#[derive(Clone, Debug)]
pub struct Append {
    pub segment: String,
    pub term: u64,
    pub version: u64,
    pub len: usize,
    pub hash: u64,
    pub entry: String,
}

/// A value of the register at a version, as someone saw it.
#[derive(Clone, Debug)]
pub struct Sighting {
    pub version: u64,
    pub value: String,
    pub source: &'static str,
}

#[derive(Default, Debug)]
pub struct AppStats {
    pub appends: Vec<Append>,
    pub register_acks: Vec<Sighting>,
    /// Every log entry this app ever sent, acknowledged or not.
    pub attempted: HashSet<String>,
    pub fenced: u64,
    pub lost_cas: u64,
    pub unavailable: u64,
    /// 503 `plugin_failed`: the state instance trapped or overran and is
    /// being restarted.
    pub plugin_failed: u64,
    /// No answer in time, or the connection failed (a killed sidecar).
    pub no_answer: u64,
    /// Writes answered after being held across a pause or a cut:
    /// (acknowledged, fenced).
    pub held: (u64, u64),
    /// Answers no correct sidecar gives to these requests.
    pub unexpected: Vec<String>,
}

impl AppStats {
    /// Adds a register writer's figures to its app's.
    fn absorb(&mut self, w: AppStats) {
        self.appends.extend(w.appends);
        self.register_acks.extend(w.register_acks);
        self.attempted.extend(w.attempted);
        self.fenced += w.fenced;
        self.lost_cas += w.lost_cas;
        self.unavailable += w.unavailable;
        self.plugin_failed += w.plugin_failed;
        self.no_answer += w.no_answer;
        self.held.0 += w.held.0;
        self.held.1 += w.held.1;
        self.unexpected.extend(w.unexpected);
    }
}

/// The running apps and reader.
pub struct Workload {
    stop: Arc<AtomicBool>,
    writing: Arc<Vec<AtomicBool>>,
    /// Per sidecar: its app and its register writers.
    apps: Vec<(JoinHandle<AppStats>, Vec<JoinHandle<AppStats>>)>,
    reader: JoinHandle<Vec<Sighting>>,
}

pub struct Outcome {
    pub stats: Vec<AppStats>,
    pub sightings: Vec<Sighting>,
}

/// Starts an app and `writers` register writers beside each sidecar port,
/// and a reader of the register.
pub fn start(history: &Arc<History>, ports: &[u16], writers: usize) -> Workload {
    let stop = Arc::new(AtomicBool::new(false));
    let writing: Arc<Vec<AtomicBool>> =
        Arc::new(ports.iter().map(|_| AtomicBool::new(false)).collect());
    let apps = ports
        .iter()
        .enumerate()
        .map(|(node, &port)| {
            let spawn = |writer| {
                let app = App {
                    node,
                    writer,
                    port,
                    history: history.clone(),
                    stop: stop.clone(),
                    writing: writing.clone(),
                    stats: AppStats::default(),
                    seq: 0,
                };
                std::thread::spawn(move || app.run())
            };
            (spawn(None), (1..=writers).map(|k| spawn(Some(k))).collect())
        })
        .collect();
    let reader = {
        let (ports, stop) = (ports.to_vec(), stop.clone());
        std::thread::spawn(move || reader(&ports, &stop))
    };
    Workload {
        stop,
        writing,
        apps,
        reader,
    }
}

impl Workload {
    /// Whether sidecar `node`'s app has a write in flight (a pause is most
    /// telling in the middle of one).
    pub fn writing(&self, node: usize) -> bool {
        self.writing[node].load(Relaxed)
    }

    pub fn stop(self) -> Outcome {
        self.stop.store(true, Relaxed);
        Outcome {
            stats: self
                .apps
                .into_iter()
                .map(|(app, writers)| {
                    let mut stats = app.join().expect("an app thread panicked");
                    for w in writers {
                        stats.absorb(w.join().expect("a register writer thread panicked"));
                    }
                    stats
                })
                .collect(),
            sightings: self.reader.join().expect("the reader thread panicked"),
        }
    }
}

struct App {
    node: usize,
    /// Some(k): the app's k-th register writer, which writes nothing else.
    writer: Option<usize>,
    port: u16,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    writing: Arc<Vec<AtomicBool>>,
    stats: AppStats,
    seq: u64,
}

/// A write or read was refused or unanswered (already counted): the app
/// stops writing for its term and asks again who leads.
struct AskAgain;

impl App {
    fn name(&self) -> String {
        match self.writer {
            None => format!("app{}", self.node + 1),
            Some(k) => format!("app{}w{k}", self.node + 1),
        }
    }

    fn run(mut self) -> AppStats {
        while !self.stop.load(Relaxed) {
            let Some(term) = self.leading_term() else {
                sleep(Duration::from_millis(20));
                continue;
            };
            let _ = match self.writer {
                None => self.lead(term),
                Some(_) => self.write_register(term),
            };
            sleep(Duration::from_millis(5));
        }
        self.stats
    }

    /// The term this sidecar leads with, per `GET /leader`; none when it
    /// does not lead or does not answer in time.
    fn leading_term(&self) -> Option<u64> {
        let start = Instant::now();
        let r = request_within(self.port, "GET", "/leader", &[], b"", LEADER_TIMEOUT).ok()?;
        self.history
            .record_answer(self.node, start, Instant::now(), &r)
    }

    /// Writes for `term` until a write is refused or unanswered.
    fn lead(&mut self, term: u64) -> Result<(), AskAgain> {
        let mut segment = self.current_segment()?;
        let (mut value, mut etag) = self.read_segment(&segment)?;
        let fence = term.to_string();
        while !self.stop.load(Relaxed) {
            self.seq += 1;
            let entry = format!("{term}:{}:{}\n", self.name(), self.seq);
            if value.len() + entry.len() > SEGMENT_CAP {
                segment = segment_key(segment_number(&segment).unwrap_or(0) + 1);
                value.clear();
                etag = None;
            }
            let mut body = value.clone();
            body.extend_from_slice(entry.as_bytes());
            let precondition = match &etag {
                Some(e) => ("if-match", e.as_str()),
                None => ("if-none-match", "*"),
            };
            self.stats.attempted.insert(entry.clone());
            let path = format!("/state/{segment}");
            let (r, start, end) = self.write(&path, &[("x-ha-term", &fence), precondition], &body);
            let version = self.acknowledged(r, term, start, end)?;
            self.stats.appends.push(Append {
                segment: segment.clone(),
                term,
                version,
                len: body.len(),
                hash: hash(&body),
                entry: entry.trim_end().to_string(),
            });
            value = body;
            etag = Some(format!("\"{version}\""));

            let register = entry.trim_end().to_string();
            let (r, start, end) =
                self.write(REGISTER, &[("x-ha-term", &fence)], register.as_bytes());
            let version = self.acknowledged(r, term, start, end)?;
            self.stats.register_acks.push(Sighting {
                version,
                value: register,
                source: "acknowledged write",
            });
            sleep(WRITE_GAP);
        }
        Ok(())
    }

    /// A register writer's loop: fenced register writes for `term`, back to
    /// back, until one is refused or unanswered.
    fn write_register(&mut self, term: u64) -> Result<(), AskAgain> {
        let fence = term.to_string();
        while !self.stop.load(Relaxed) {
            self.seq += 1;
            let value = format!("{term}:{}:{}", self.name(), self.seq);
            let (r, start, end) = self.write(REGISTER, &[("x-ha-term", &fence)], value.as_bytes());
            let version = self.acknowledged(r, term, start, end)?;
            self.stats.register_acks.push(Sighting {
                version,
                value,
                source: "acknowledged write",
            });
            sleep(WRITE_GAP);
        }
        Ok(())
    }

    fn write(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (std::io::Result<Response>, Instant, Instant) {
        self.writing[self.node].store(true, Relaxed);
        let start = Instant::now();
        let r = request_within(self.port, "PUT", path, headers, body, STATE_TIMEOUT);
        let end = Instant::now();
        self.writing[self.node].store(false, Relaxed);
        (r, start, end)
    }

    /// The version of an acknowledged write (recorded as proof that its term
    /// was current), or why the app must ask again who leads.
    fn acknowledged(
        &mut self,
        r: std::io::Result<Response>,
        term: u64,
        start: Instant,
        end: Instant,
    ) -> Result<u64, AskAgain> {
        let held = end - start > HELD;
        match r {
            Ok(r) if r.status == 200 => {
                let Some(version) = r
                    .header("etag")
                    .and_then(|e| e.trim_matches('"').parse::<u64>().ok())
                else {
                    self.stats
                        .unexpected
                        .push(format!("PUT 200 without a version ETag: {:?}", r.headers));
                    return Err(AskAgain);
                };
                self.stats.held.0 += u64::from(held);
                self.history.record(Event {
                    node: self.node,
                    kind: Kind::Ack,
                    term,
                    start,
                    end,
                });
                Ok(version)
            }
            Ok(r) => {
                match r.status {
                    409 => {
                        self.stats.fenced += 1;
                        self.stats.held.1 += u64::from(held);
                    }
                    412 => self.stats.lost_cas += 1,
                    503 => self.count_503(&r),
                    _ => self
                        .stats
                        .unexpected
                        .push(format!("PUT: {} {}", r.status, r.text())),
                }
                Err(AskAgain)
            }
            Err(_) => {
                self.stats.no_answer += 1;
                Err(AskAgain)
            }
        }
    }

    fn count_503(&mut self, r: &Response) {
        if r.text().contains("plugin_failed") {
            self.stats.plugin_failed += 1;
        } else {
            self.stats.unavailable += 1;
        }
    }

    /// The newest log segment (the first if there is none yet).
    fn current_segment(&mut self) -> Result<String, AskAgain> {
        let path = format!("/state?prefix={LOG_PREFIX}");
        match request_within(self.port, "GET", &path, &[], b"", STATE_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let newest = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().and_then(segment_number))
                    .max()
                    .unwrap_or(0);
                Ok(segment_key(newest))
            }
            other => self.refused("GET /state?prefix", other),
        }
    }

    fn read_segment(&mut self, segment: &str) -> Result<(Vec<u8>, Option<String>), AskAgain> {
        let path = format!("/state/{segment}");
        match request_within(self.port, "GET", &path, &[], b"", STATE_TIMEOUT) {
            Ok(r) if r.status == 200 => match r.header("etag") {
                Some(e) => Ok((r.body.clone(), Some(e.to_string()))),
                None => {
                    self.stats.unexpected.push("GET 200 without an ETag".into());
                    Err(AskAgain)
                }
            },
            Ok(r) if r.status == 404 => Ok((Vec::new(), None)),
            other => self.refused(&path, other),
        }
    }

    fn refused<T>(&mut self, what: &str, r: std::io::Result<Response>) -> Result<T, AskAgain> {
        match r {
            Ok(r) if r.status == 503 => self.count_503(&r),
            Ok(r) => self
                .stats
                .unexpected
                .push(format!("{what}: {} {}", r.status, r.text())),
            Err(_) => self.stats.no_answer += 1,
        }
        Err(AskAgain)
    }
}

fn segment_key(n: u64) -> String {
    format!("{LOG_PREFIX}{n:05}")
}

fn segment_number(key: &str) -> Option<u64> {
    key.strip_prefix(LOG_PREFIX)?.parse().ok()
}

/// Reads the register from each sidecar in turn.
fn reader(ports: &[u16], stop: &AtomicBool) -> Vec<Sighting> {
    let mut seen = Vec::new();
    let mut i = 0;
    while !stop.load(Relaxed) {
        let port = ports[i % ports.len()];
        i += 1;
        if let Ok(r) = request_within(port, "GET", REGISTER, &[], b"", LEADER_TIMEOUT)
            && r.status == 200
            && let Some(version) = r
                .header("etag")
                .and_then(|e| e.trim_matches('"').parse::<u64>().ok())
        {
            seen.push(Sighting {
                version,
                value: r.text(),
                source: "reader",
            });
        }
        sleep(READ_EVERY);
    }
    seen
}

/// What the cluster holds at the end, read through one sidecar.
pub struct FinalState {
    pub segments: BTreeMap<String, Vec<u8>>,
    pub register: Option<Sighting>,
}

/// Reads every log segment and the register through the sidecar on `port`;
/// 503 means "retry" (e.g. a plugin instance restarting).
pub fn read_final(port: u16) -> Result<FinalState, String> {
    let get = |path: &str| -> Result<Option<Response>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match request_within(port, "GET", path, &[], b"", STATE_TIMEOUT) {
                Ok(r) if r.status == 200 => return Ok(Some(r)),
                Ok(r) if r.status == 404 => return Ok(None),
                Ok(r) if r.status == 503 && Instant::now() < deadline => {
                    sleep(Duration::from_millis(100))
                }
                Ok(r) => return Err(format!("GET {path}: {} {}", r.status, r.text())),
                Err(e) => return Err(format!("GET {path}: {e}")),
            }
        }
    };
    let list = get(&format!("/state?prefix={LOG_PREFIX}"))?
        .ok_or("the key list is missing")?
        .json();
    let mut segments = BTreeMap::new();
    for key in list["keys"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default().to_string();
        match get(&format!("/state/{key}"))? {
            Some(r) => segments.insert(key, r.body),
            None => return Err(format!("{key} is listed but cannot be read")),
        };
    }
    let register = get(REGISTER)?.map(|r| Sighting {
        version: r
            .header("etag")
            .and_then(|e| e.trim_matches('"').parse().ok())
            .unwrap_or(0),
        value: r.text(),
        source: "final read",
    });
    Ok(FinalState { segments, register })
}

/// The data figures of a run.
#[derive(Default, Debug)]
pub struct Figures {
    pub appends: usize,
    pub register_writes: usize,
    pub entries: usize,
    pub lost: usize,
    pub deposed_landed: usize,
}

/// One line of the log: `<term>:app<n>:<seq>`.
fn parse_entry(line: &str, apps: usize) -> Option<(u64, usize)> {
    let parts: Vec<&str> = line.split(':').collect();
    if parts.len() != 3 || parts[2].parse::<u64>().is_err() {
        return None;
    }
    let term = parts[0].parse().ok()?;
    let app = parts[1].strip_prefix("app")?.parse::<usize>().ok()?;
    (1..=apps).contains(&app).then_some((term, app))
}

impl Outcome {
    pub fn acknowledged(&self) -> usize {
        self.stats
            .iter()
            .map(|s| s.appends.len() + s.register_acks.len())
            .sum()
    }

    /// Checks the final state against what was acknowledged and seen; adds
    /// what is wrong to `problems`.
    pub fn check(&self, end: &FinalState, problems: &mut Vec<String>) -> Figures {
        let mut figures = Figures {
            appends: self.stats.iter().map(|s| s.appends.len()).sum(),
            register_writes: self.stats.iter().map(|s| s.register_acks.len()).sum(),
            ..Figures::default()
        };
        figures.lost = self.check_appends(end, problems);
        let (entries, out_of_order) = self.check_log(end, problems);
        figures.entries = entries;
        figures.deposed_landed = out_of_order + self.check_register(end, problems);
        figures
    }

    /// Every acknowledged append is a prefix of its segment's final value;
    /// no version was acknowledged for two values. Returns how many were lost.
    fn check_appends(&self, end: &FinalState, problems: &mut Vec<String>) -> usize {
        let mut by_version: HashMap<(&str, u64), (usize, u64)> = HashMap::new();
        let mut lost = Vec::new();
        for a in self.stats.iter().flat_map(|s| &s.appends) {
            let kept = end
                .segments
                .get(&a.segment)
                .is_some_and(|v| a.len <= v.len() && hash(&v[..a.len]) == a.hash);
            if !kept {
                lost.push(format!(
                    "{} (segment {}, version {})",
                    a.entry, a.segment, a.version
                ));
            }
            let key = (a.segment.as_str(), a.version);
            if let Some(&other) = by_version.get(&key)
                && other != (a.len, a.hash)
            {
                problems.push(format!(
                    "{} version {} was acknowledged for two different values",
                    a.segment, a.version
                ));
            }
            by_version.insert(key, (a.len, a.hash));
        }
        if !lost.is_empty() {
            problems.push(format!(
                "{} acknowledged write(s) lost (not a prefix of the final value), e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
        lost.len()
    }

    /// The log, segment after segment: whole entries, each really sent by
    /// its app, none twice, terms never going back, each term written by one
    /// app. Returns (entries, entries of a term older than one before them).
    fn check_log(&self, end: &FinalState, problems: &mut Vec<String>) -> (usize, usize) {
        let apps = self.stats.len();
        let mut seen = HashSet::new();
        let mut writer_of_term: HashMap<u64, usize> = HashMap::new();
        let (mut entries, mut out_of_order, mut max_term) = (0, 0, 0);
        for (segment, value) in &end.segments {
            let Ok(text) = std::str::from_utf8(value) else {
                problems.push(format!("{segment} is not UTF-8"));
                continue;
            };
            if !text.is_empty() && !text.ends_with('\n') {
                problems.push(format!("{segment} does not end with a whole entry"));
            }
            for line in text.lines() {
                entries += 1;
                let Some((term, app)) = parse_entry(line, apps) else {
                    problems.push(format!("{segment}: malformed entry {line:?}"));
                    continue;
                };
                if term < max_term {
                    out_of_order += 1;
                    problems.push(format!(
                        "deposed write landed: {segment} entry {line:?} of term {term} follows an entry of term {max_term}"
                    ));
                }
                max_term = max_term.max(term);
                if !self.stats[app - 1].attempted.contains(&format!("{line}\n")) {
                    problems.push(format!(
                        "{segment}: entry {line:?} was never sent by its app"
                    ));
                }
                if !seen.insert(line.to_string()) {
                    problems.push(format!("{segment}: entry {line:?} appears twice"));
                }
                if let Some(&other) = writer_of_term.get(&term)
                    && other != app
                {
                    problems.push(format!(
                        "term {term} was written by both app{other} and app{app}"
                    ));
                }
                writer_of_term.insert(term, app);
            }
        }
        (entries, out_of_order)
    }

    /// Every value the register was seen to hold, ordered by version: one
    /// value per version, and terms that never go back. Returns how many
    /// values landed after a value of a newer term.
    fn check_register(&self, end: &FinalState, problems: &mut Vec<String>) -> usize {
        let mut by_version: BTreeMap<u64, &Sighting> = BTreeMap::new();
        let all = self
            .stats
            .iter()
            .flat_map(|s| &s.register_acks)
            .chain(&self.sightings)
            .chain(&end.register);
        for s in all {
            match by_version.get(&s.version) {
                Some(other) if other.value != s.value => problems.push(format!(
                    "register version {} holds {:?} ({}) and {:?} ({})",
                    s.version, other.value, other.source, s.value, s.source
                )),
                Some(_) => {}
                None => {
                    by_version.insert(s.version, s);
                }
            }
        }
        let term_of = |s: &Sighting| {
            s.value
                .split(':')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
        };
        let mut newest: Option<(u64, &Sighting)> = None;
        let mut landed_late = 0;
        for s in by_version.values() {
            let Some(term) = term_of(s) else {
                problems.push(format!("register value {:?} is malformed", s.value));
                continue;
            };
            match newest {
                Some((t, before)) if term < t => {
                    landed_late += 1;
                    if landed_late <= 10 {
                        problems.push(format!(
                            "deposed write landed: register version {} holds {:?} ({}), after version {} held {:?} of term {t}",
                            s.version, s.value, s.source, before.version, before.value
                        ));
                    }
                }
                _ => newest = Some((term, s)),
            }
        }
        landed_late
    }
}
