//! Fenced state through the HTTP API on one leading sidecar: PUT (with the
//! leader's term, so every write goes through the backend's fencing) and
//! GET, for a small value kept in the backend and a large one that goes to
//! the storage dir with only a pointer in the backend. Latency with one
//! connection, throughput with several, next to the backend's own write and
//! read of the same value without the sidecar in between.

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

pub fn run(report: &mut Report, backend: &dyn Backend, connections: usize, duration: Duration) {
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
        let put_one = load("PUT", 1);
        let put_many = load("PUT", connections);
        let get_one = load("GET", 1);
        let get_many = load("GET", connections);

        let value = vec![b'x'; size];
        // Small values live in the backend; a large one is a file in the
        // storage dir (plus a small pointer in the backend).
        let (put_native, get_native) = if size == SMALL {
            // Made just before use: a client left idle while the loads ran
            // could have lost its connection meanwhile.
            match backend.native(group.path()).as_deref_mut() {
                Some(store) => (
                    native_note(store, &value, true),
                    native_note(store, &value, false),
                ),
                None => ("not measured".into(), "not measured".into()),
            }
        } else {
            (
                format!("storage dir {}", native_note(&mut storage, &value, true)),
                format!("storage dir {}", native_note(&mut storage, &value, false)),
            )
        };
        row(
            report,
            name,
            &format!("fenced PUT /state, {label}"),
            &put_one,
            &put_many,
            connections,
            put_native,
        );
        row(
            report,
            name,
            &format!("GET /state, {label}"),
            &get_one,
            &get_many,
            connections,
            get_native,
        );
    }
}

fn row(
    report: &mut Report,
    backend: &str,
    what: &str,
    one: &LoadResult,
    many: &LoadResult,
    connections: usize,
    native: String,
) {
    let errors = format!("{}{}", one.error_note(), many.error_note());
    report.add(
        Row::new(
            Section::State,
            format!("{what}: p50 / p99 (1 conn); throughput ({connections} conns)"),
            backend,
        )
        .value(format!(
            "{} / {}; {} req/s{}",
            human(one.p50()),
            human(one.p99()),
            thousands(many.rate()),
            match one.errors + many.errors {
                0 => String::new(),
                n => format!(" ({n} requests failed)"),
            }
        ))
        .samples(format!("{} + {}", one.requests, many.requests))
        .compare(format!("{native}{errors}"))
        .figure("p50_ms", ms(one.p50()))
        .figure("p99_ms", ms(one.p99()))
        .figure("requests_per_s", many.rate())
        .figure("one_conn_requests_per_s", one.rate())
        .figure("loaded_p99_ms", ms(many.p99()))
        .figure("errors", (one.errors + many.errors) as f64),
    );
}

fn native_note(store: &mut dyn NativeStore, value: &[u8], put: bool) -> String {
    let s = time_native(store, value, put);
    format!(
        "{}: p50 {}, p99 {}",
        store.describe(put),
        human(s.pct(0.5)),
        human(s.pct(0.99))
    )
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
