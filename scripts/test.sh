#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, the
# conformance suite and the integration tests with real sidecar processes.
source "$(dirname "$0")/setup.sh"
ensure_zookeeper
ensure_etcd
ensure_postgres
ensure_debian_packages junit4
ensure_flink
build_plugins
echo "==> formatting"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
echo "==> lints"
cargo clippy --release --locked --all-targets -- -D warnings
(cd plugins && cargo clippy --release --locked --all-targets -- -D warnings)
echo "==> plugin unit tests (native)"
(cd plugins && cargo test --release --locked --target "$(rustc -vV | sed -n 's/^host: //p')" -p ha-sidecar-sdk -p ha-plugin-file -p ha-plugin-zookeeper -p ha-plugin-kubernetes)
echo "==> building the Flink HA services plugin, the counting job and the Flink demo"
clients/flink/build.sh
examples/flink/job/build.sh
cargo build --release --locked -p ha-sidecar -p demo
echo "==> host unit, conformance and integration tests (real Flink included)"
cargo test --release --locked --workspace --no-fail-fast
echo "==> Flink HA services plugin unit tests (clients/flink) against the release sidecar"
clients/flink/test.sh
SIDECAR_BACKEND=zookeeper clients/flink/test.sh
