//! Fenced state through the HTTP API on one leading sidecar: PUT (with the
//! leader's term, so every write goes through the backend's fencing) and
//! GET, for a small value kept in the backend and a large one that goes to
//! the storage dir with only a pointer in the backend. Latency with one
//! connection, throughput with 1, 4 and 16, next to the backend's own
//! equivalent operation without the sidecar in between: for a fenced write,
//! the same conditional write (ZooKeeper `multi(check, setData)`, etcd `txn`
//! with the plugin's compares, the file backend's durable write). Each row
//! says whether it meets the design's targets.

use std::time::{Duration, Instant};

use crate::backends::{Backend, FsStore, NativeStore};
use crate::group::{Group, SETTLE_TIMEOUT, progress};
use crate::loadgen::{self, LoadResult, LoadSpec};
use crate::report::{Report, Row, Samples, Section, human, ms, thousands};
use crate::support::wait_for;

const SMALL: usize = 128;
/// Well over the default inline limit (16 KiB): stored as a file.
const LARGE: usize = 256 << 10;
const WARMUP: Duration = Duration::from_millis(300);
/// How long each native operation is repeated.
const NATIVE_TIME: Duration = Duration::from_secs(1);

/// Connections the throughput is measured at: one, a few, and more than the
/// sidecar's default state instances.
const CONNECTIONS: [usize; 3] = [1, 4, 16];

pub fn run(report: &mut Report, backend: &dyn Backend, _connections: usize, duration: Duration) {
    let group = Group::new(backend);
    let sidecar = group.start("st1");
    wait_for("st1 to lead", SETTLE_TIMEOUT, || {
        sidecar.leads().then_some(())
    });
    let term = sidecar.term();
    let name = backend.name();
    let mut storage = FsStore::new(group.path().join("native-storage"));

    for (size, label) in [(SMALL, "128 B"), (LARGE, "256 KiB, via the storage dir")] {
        progress(&format!("{name}: state, {label} values"));
        let path = format!("/state/bench/{size}/c{{c}}");
        let load = |method: &str, conns: usize| {
            let mut spec = LoadSpec::get(sidecar.port, &path, conns, WARMUP, duration);
            spec.method = method.into();
            if method == "PUT" {
                spec.body_bytes = size;
                spec.headers = vec![format!("X-HA-Term: {term}")];
            }
            loadgen::run(&spec, || {})
        };
        // PUTs first: they create the keys the GETs read.
        let puts: Vec<LoadResult> = CONNECTIONS.iter().map(|&c| load("PUT", c)).collect();
        let gets: Vec<LoadResult> = CONNECTIONS.iter().map(|&c| load("GET", c)).collect();

        let value = vec![b'x'; size];
        // Small values live in the backend; a large one is a file in the
        // storage dir (plus a small pointer in the backend).
        let (put_native, get_native) = if size == SMALL {
            // Made just before use: a client left idle while the loads ran
            // could have lost its connection meanwhile.
            match backend.native(group.path()).as_deref_mut() {
                Some(store) => (
                    Some(native(store, &value, true)),
                    Some(native(store, &value, false)),
                ),
                None => (None, None),
            }
        } else {
            (
                Some(native(&mut storage, &value, true).in_storage_dir()),
                Some(native(&mut storage, &value, false).in_storage_dir()),
            )
        };
        let scales = size == SMALL && matches!(name, "zookeeper" | "etcd");
        row(
            report,
            name,
            &format!("fenced PUT /state, {label}"),
            &puts,
            put_native,
            scales,
        );
        row(
            report,
            name,
            &format!("GET /state, {label}"),
            &gets,
            get_native,
            scales,
        );
    }
}

/// The backend's own operation, timed.
struct Native {
    what: String,
    p50: Duration,
    p99: Duration,
}

impl Native {
    fn in_storage_dir(mut self) -> Self {
        self.what = format!("storage dir {}", self.what);
        self
    }
}

/// The design's targets for a state operation: p50 within 1.5x the
/// backend's own operation plus 100 us, and (ZooKeeper, etcd) 16
/// connections at least 4x the throughput of one.
fn targets(p50: Duration, native: Option<&Native>, scale: Option<f64>) -> (String, bool) {
    let mut target = Vec::new();
    let mut met = true;
    if let Some(n) = native {
        let bound = n.p50.mul_f64(1.5) + Duration::from_micros(100);
        let ok = p50 <= bound;
        met &= ok;
        target.push(format!(
            "p50 <= 1.5 x {} + 100 us = {} ({:.1}x native: {})",
            human(n.p50),
            human(bound),
            p50.as_secs_f64() / n.p50.as_secs_f64().max(1e-9),
            if ok { "met" } else { "no" }
        ));
    }
    if let Some(x) = scale {
        let ok = x >= 4.0;
        met &= ok;
        target.push(format!(
            "16 conns >= 4x 1 conn ({x:.1}x: {})",
            if ok { "met" } else { "no" }
        ));
    }
    (target.join("; "), met)
}

fn row(
    report: &mut Report,
    backend: &str,
    what: &str,
    loads: &[LoadResult],
    native: Option<Native>,
    scales: bool,
) {
    let one = &loads[0];
    let errors: String = loads.iter().map(LoadResult::error_note).collect();
    let failed: u64 = loads.iter().map(|l| l.errors).sum();
    let rates: Vec<String> = loads.iter().map(|l| thousands(l.rate())).collect();
    let scale = one.rate().max(1e-9);
    let x16 = loads[loads.len() - 1].rate() / scale;
    let (target, met) = targets(one.p50(), native.as_ref(), scales.then_some(x16));
    let compare = match &native {
        Some(n) => format!("{}: p50 {}, p99 {}", n.what, human(n.p50), human(n.p99)),
        None => "not measured".into(),
    };
    let mut r = Row::new(
        Section::State,
        format!(
            "{what}: p50 / p99 (1 conn); throughput ({} conns)",
            CONNECTIONS.map(|c| c.to_string()).join(" / ")
        ),
        backend,
    )
    .value(format!(
        "{} / {}; {} req/s{}",
        human(one.p50()),
        human(one.p99()),
        rates.join(" / "),
        match failed {
            0 => String::new(),
            n => format!(" ({n} requests failed)"),
        }
    ))
    .samples(
        loads
            .iter()
            .map(|l| l.requests.to_string())
            .collect::<Vec<_>>()
            .join(" + "),
    )
    .compare(format!("{compare}{errors}"))
    .figure("p50_ms", ms(one.p50()))
    .figure("p99_ms", ms(one.p99()))
    .figure("one_conn_requests_per_s", one.rate())
    .figure("errors", failed as f64);
    for (c, l) in CONNECTIONS.iter().zip(loads) {
        r = r
            .figure(&format!("requests_per_s_{c}_conns"), l.rate())
            .figure(&format!("p99_ms_{c}_conns"), ms(l.p99()));
    }
    if let Some(n) = &native {
        r = r.figure("native_p50_ms", ms(n.p50));
    }
    if !target.is_empty() {
        r = r.target(target, met);
    }
    report.add(r);
}

fn native(store: &mut dyn NativeStore, value: &[u8], put: bool) -> Native {
    let s = time_native(store, value, put);
    Native {
        what: store.describe(put).to_string(),
        p50: s.pct(0.5),
        p99: s.pct(0.99),
    }
}

/// Repeats one native put (or get) of `value` for [`NATIVE_TIME`].
fn time_native(store: &mut dyn NativeStore, value: &[u8], put: bool) -> Samples {
    let key = format!("v{}", value.len());
    store.put(&key, value);
    let mut took = Vec::new();
    let started = Instant::now();
    while started.elapsed() < NATIVE_TIME || took.len() < 10 {
        let t = Instant::now();
        if put {
            store.put(&key, value);
        } else {
            assert_eq!(
                store.get(&key).len(),
                value.len(),
                "a native read lost bytes"
            );
        }
        took.push(t.elapsed());
    }
    Samples::new(took)
}
