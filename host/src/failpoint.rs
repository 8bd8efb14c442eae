//! Crash points for tests: `HA_SIDECAR_FAILPOINT=<name>` makes the process
//! abort (as kill -9 would stop it) when it reaches the named point, so tests
//! can prove that a crash at exactly that moment leaves recoverable state.
//! Unset, a failpoint costs one comparison against a cached value.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// The points the code declares, for the README and for typo checks.
pub const POINTS: [&str; 4] = [
    "after-blob-write",
    "before-dirty-record",
    "after-dirty-record",
    "mid-cleanup",
];

pub fn hit(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "undeclared failpoint {name}");
    let armed = ARMED.get_or_init(|| {
        std::env::var("HA_SIDECAR_FAILPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if armed.as_deref() == Some(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting the process");
        std::process::abort();
    }
}
