#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, the
# conformance suite and the integration tests with real sidecar processes.
source "$(dirname "$0")/setup.sh"
ensure_zookeeper
ensure_etcd
build_plugins
echo "==> formatting"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
echo "==> lints"
cargo clippy --release --locked --all-targets -- -D warnings
(cd plugins && cargo clippy --release --locked --all-targets -- -D warnings)
echo "==> plugin unit tests (native)"
(cd plugins && cargo test --release --locked --target "$(rustc -vV | sed -n 's/^host: //p')" -p ha-sidecar-sdk -p ha-plugin-file -p ha-plugin-zookeeper -p ha-plugin-kubernetes)
echo "==> host unit, conformance and integration tests"
cargo test --release --locked --workspace --no-fail-fast
echo "==> Flink HA services plugin (clients/flink) against the release sidecar"
ensure_debian_packages junit4
ensure_flink
cargo build --release --locked --bin ha-sidecar
clients/flink/test.sh
SIDECAR_BACKEND=zookeeper clients/flink/test.sh
