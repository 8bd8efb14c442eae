//! Real Flink (2.3, and 1.20) on the sidecar: three stock JobManagers, each beside a
//! client-candidacy sidecar, one TaskManager beside an observer, and a job that
//! counts forever with a checkpoint every second. The scenario of Flink's own
//! `test_ha_datastream.sh`, adapted: three times `kill -9` the leading
//! JobManager (its sidecar stays), then a machine loss (JobManager and
//! sidecar), then SIGTERM; each time the job must run again under the new
//! leader, recovered from its latest checkpoint, with no value lost or counted
//! twice, never two leaders at once, and `flink list` must work through the
//! sidecar; cancelling the job must delete its HA data.
//!
//! The scenario is the `flink-demo` binary's (the README's first command runs
//! it too); this test runs it on the file backend and on a real three-member
//! ZooKeeper ensemble and checks its evidence. It needs `FLINK_HOME` (a Flink
//! 2.3.0 distribution, installed by `scripts/setup.sh`), the plugin jar and
//! the job jar (`scripts/test.sh` builds them) and fails loudly without them.
//!
//! One more case runs the demo on Flink 1.20 (`FLINK_1_20_HOME`, the plugin's
//! 1.20 jar and the job built against 1.20) on the file backend, with one
//! `kill -9` instead of three to keep the suite's time down.

mod support;
#[path = "support/zk.rs"]
mod zk;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use support::repo_root;
use zk::ZooKeeper;

/// Two Flink clusters at once would not fit two cores: one at a time.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// The Flink release a case runs: `--flink`, the variable naming its
/// distribution, the release the demo reports, and how scripts/setup.sh
/// installs it.
struct Release {
    line: &'static str,
    home_var: &'static str,
    version: &'static str,
    ensure: &'static str,
}

const FLINK_2_3: Release = Release {
    line: "2.3",
    home_var: "FLINK_HOME",
    version: "2.3.0",
    ensure: "ensure_flink",
};

const FLINK_1_20: Release = Release {
    line: "1.20",
    home_var: "FLINK_1_20_HOME",
    version: "1.20.3",
    ensure: "ensure_flink_1_20",
};

/// Runs flink-demo on `flink` and `backend` with `kills` crashes (then a
/// machine loss and a SIGTERM) and checks its report.
fn demo(flink: &Release, backend: &str, name: &str, kills: usize) -> Value {
    demo_with(
        flink,
        backend,
        name,
        &["--kills", &kills.to_string()],
        kills + 2,
    )
}

/// Runs flink-demo with `args` and checks its report, which must name
/// `recoveries` recoveries (faults, and a move from Flink's own HA).
fn demo_with(
    flink: &Release,
    backend: &str,
    name: &str,
    args: &[&str],
    recoveries: usize,
) -> Value {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo_root();
    let home = std::env::var_os(flink.home_var).unwrap_or_else(|| {
        panic!(
            "{} is not set: the Flink tests need a Flink {} distribution (scripts/test.sh installs it with {})",
            flink.home_var, flink.version, flink.ensure
        )
    });
    let binary = root.join("target/release/flink-demo");
    assert!(
        binary.is_file(),
        "{} is missing: build it with cargo build --release -p demo (scripts/test.sh does)",
        binary.display()
    );
    let run: PathBuf =
        std::env::temp_dir().join(format!("ha-sidecar-flink-{name}-{}", std::process::id()));
    let report = run.with_extension("json");
    let status = Command::new(&binary)
        .current_dir(&root)
        .env(flink.home_var, home)
        .args(["--flink", flink.line, "--backend", backend])
        .args(args)
        .arg("--run-dir")
        .arg(&run)
        .arg("--report")
        .arg(&report)
        .status()
        .expect("cannot run flink-demo");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "flink-demo ({status}) wrote no report {}: {e}; logs in {}",
            report.display(),
            run.display()
        )
    });
    let r: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(
        r["flink"], flink.version,
        "the demo ran the Flink asked for: {text}"
    );
    assert_eq!(
        r["overlaps"],
        Value::Array(vec![]),
        "two leaders at once: {text}"
    );
    assert_eq!(
        r["count_problems"],
        Value::Array(vec![]),
        "the count did not continue: {text}"
    );
    let faults = r["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), recoveries, "{args:?}: {text}");
    assert_eq!(r["recovery_problems"], Value::Array(vec![]), "{text}");
    for f in faults {
        // A moved cluster restarted as a whole: any JobManager may lead again.
        if f["fault"] != "moved from Flink's own HA" {
            assert_ne!(f["from"], f["to"], "a standby took over: {f}");
        }
        let (latest, restored) = (
            f["latest_checkpoint_before"].as_u64(),
            f["restored_checkpoint"].as_u64(),
        );
        assert!(
            matches!((latest, restored), (Some(l), Some(r)) if r >= l),
            "the new leader restored the job from the latest completed checkpoint: {f}"
        );
        // The print sink is at-least-once: a recovery replays from the checkpoint, never past
        // the last printed value (a gap would also show in count_problems).
        if let (Some(b), Some(a)) = (f["last_before"].as_u64(), f["first_after"].as_u64()) {
            assert!(
                a <= b + 1,
                "the job resumed at or before the next value: {f}"
            );
        }
    }
    assert_eq!(r["list_ok"], true, "flink list through the sidecar: {text}");
    assert_eq!(
        r["cleaned"], true,
        "cancelling the job deleted its HA data: {text}"
    );
    assert_eq!(r["ok"], true, "{text}");
    assert!(status.success(), "flink-demo exited with {status}: {text}");
    let _ = std::fs::remove_dir_all(&run);
    r
}

#[test]
fn real_flink_fails_over_on_the_file_backend() {
    let r = demo(&FLINK_2_3, "file", "file", 3);
    eprintln!("file backend: {}", r["faults"]);
}

/// One kill -9 (with the machine loss and the SIGTERM): the file case
/// already walks the crash around all three JobManagers, and the suite's
/// time is better spent elsewhere.
#[test]
fn real_flink_fails_over_on_a_zookeeper_ensemble() {
    let zk = ZooKeeper::ensemble(3);
    let r = demo(
        &FLINK_2_3,
        &format!("zookeeper={}", zk.quorum()),
        "zookeeper",
        1,
    );
    eprintln!("ZooKeeper backend: {}", r["faults"]);
}

#[test]
fn real_flink_1_20_fails_over_on_the_file_backend() {
    let r = demo(&FLINK_1_20, "file", "file-1.20", 1);
    eprintln!("Flink 1.20, file backend: {}", r["faults"]);
}

/// Flink's own ZooKeeper HA runs the job, the cluster is stopped (SIGTERM to
/// every JobManager: the job is suspended and stays in ZooKeeper), and the
/// same cluster starts on the sidecar with the same quorum, root and
/// cluster-id: the new leader recovers the job Flink's own HA left, from its
/// latest checkpoint, with the count continuing; then one crash on the sidecar.
#[test]
fn a_cluster_moves_from_flinks_own_zookeeper_ha_to_the_sidecar_with_its_job() {
    let zk = ZooKeeper::ensemble(3);
    let r = demo_with(
        &FLINK_2_3,
        &format!("zookeeper={}", zk.quorum()),
        "moved",
        &["--move-from-flink-ha", "--faults", "kill"],
        2,
    );
    assert_eq!(r["faults"][0]["fault"], "moved from Flink's own HA", "{r}");
    eprintln!("moved from Flink's own ZooKeeper HA: {}", r["faults"]);
}
