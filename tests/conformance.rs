//! The backend conformance suite against the file plugin.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ha_sidecar::config::Grants;
use ha_sidecar::conformance::{self, Subject};
use ha_sidecar::metrics::Metrics;
use ha_sidecar::runtime::LoadedPlugin;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = plugin_config("ha_plugin_file", &[("poll-interval-ms", "10")]);
    let grants = Grants {
        filesystem: Some(dir.path().to_path_buf()),
        zookeeper: None,
    };
    let plugin = LoadedPlugin::load(&cfg, &grants, None, Arc::new(Metrics::default()))
        .expect("load the file plugin");
    let subject = Subject {
        plugins: conformance::shared(plugin),
        settings: cfg.settings.clone(),
        namespace_setting: "cluster-id".into(),
        lease: Duration::from_millis(1000),
        renew_deadline: Duration::from_millis(750),
        retry: Duration::from_millis(250),
    };
    let outcomes = conformance::run(&subject, None).await;
    println!("{}", conformance::render(&outcomes));
    assert_eq!(outcomes.len(), conformance::checks().len());
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name)
        .collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:?}\n{}",
        conformance::render(&outcomes)
    );
}
