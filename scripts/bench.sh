#!/usr/bin/env bash
# The benchmark command (docs/benchmarks.md): failover, the leader endpoint,
# fenced state and the plugin's overhead, per backend, against real sidecar
# processes and real backend services, and Flink end to end: real Flink
# JobManagers on Flink's own ZooKeeper HA and on the sidecar, side by side.
# Prints one table per section to stdout (progress goes to stderr). Arguments go to the benchmark, e.g.
#   ./scripts/bench.sh --json bench.json        # also write the raw figures
#   ./scripts/bench.sh --trials 5 --backends file
#   ./scripts/bench.sh --only flink             # only the Flink side by side
#   ./scripts/bench.sh --help                   # every option
# About 20 minutes with the defaults once built (the Flink section is 15 of
# them: Flink's own HA waits out its 60 s session twice). It times real
# processes: run it on an otherwise idle machine.
source "$(dirname "$0")/setup.sh"
ensure_zookeeper
ensure_etcd
ensure_flink
build_plugins >&2
echo "==> building the Flink HA services plugin, the counting job and the Flink demo" >&2
clients/flink/build.sh 2.3 >&2  # the benchmark runs Flink 2.3 only
examples/flink/job/build.sh >&2
cargo build --release --locked -p ha-sidecar -p demo >&2
echo "==> benchmark (release build)" >&2
cargo bench --locked -p ha-sidecar --bench bench -- "$@"
