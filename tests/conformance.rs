//! The backend conformance suite against the file plugin, set up from a
//! sidecar config as `ha-sidecar plugin check` does it.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_passes_the_conformance_suite() {
    let cluster = Cluster::new();
    // A shorter lease than the other tests: the suite waits out leases several times.
    let yaml = cluster.file_config("conformance", free_port(), "").replace(
        "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms",
        "timing: {lease: 1s, renew-deadline: 750ms, retry-period: 250ms",
    );
    assert_conformance(&cluster.write_config("conformance", &yaml)).await;
}
