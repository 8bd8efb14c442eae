#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, the
# conformance suite and the integration tests with real sidecar processes.
source "$(dirname "$0")/setup.sh"
ensure_zookeeper
ensure_etcd
ensure_postgres
ensure_debian_packages junit4 prometheus systemd openssl krb5-kdc krb5-admin-server krb5-user
ensure_flink
ensure_flink_1_20
ensure_schemathesis
build_plugins
echo "==> formatting"
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
echo "==> lints"
cargo clippy --release --locked --all-targets -- -D warnings
(cd plugins && cargo clippy --release --locked --all-targets -- -D warnings)
echo "==> the SDK as a packaged crate: it builds from its own files, WIT included"
(cd plugins && cargo package --locked --allow-dirty -p ha-sidecar-sdk)
echo "==> plugin unit tests (native)"
(cd plugins && cargo test --release --locked --target "$(rustc -vV | sed -n 's/^host: //p')" -p ha-sidecar-sdk -p ha-plugin-file -p ha-plugin-zookeeper -p ha-plugin-kubernetes)
echo "==> building the Flink HA services plugin (2.3 and 1.20 jars), the counting job and the Flink demo"
clients/flink/build.sh
examples/flink/job/build.sh
FLINK_VERSION=1.20 examples/flink/job/build.sh
cargo build --release --locked -p ha-sidecar -p demo
echo "==> host unit, conformance and integration tests (real Flink included)"
cargo test --release --locked --workspace --no-fail-fast
echo "==> Flink HA services plugin unit tests (clients/flink) against the release sidecar"
clients/flink/test.sh
SIDECAR_BACKEND=zookeeper clients/flink/test.sh
# The same tests on the 1.20 jar and Flink 1.20, on the file backend (about 45 s): the plugin
# sees the same HTTP API whatever the backend, and the ZooKeeper run above covers that side.
FLINK_VERSION=1.20 clients/flink/test.sh
