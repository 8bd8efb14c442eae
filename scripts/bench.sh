#!/usr/bin/env bash
# The benchmark command (docs/benchmarks.md): failover, the leader endpoint,
# fenced state and the plugin's overhead, per backend, against real sidecar
# processes and real backend services. Prints one table per section to
# stdout (progress goes to stderr). Arguments go to the benchmark, e.g.
#   ./scripts/bench.sh --json bench.json        # also write the raw figures
#   ./scripts/bench.sh --trials 5 --backends file
#   ./scripts/bench.sh --help                   # every option
# About 5 minutes with the defaults once built. It times real processes:
# run it on an otherwise idle machine.
source "$(dirname "$0")/setup.sh"
ensure_zookeeper
ensure_etcd
build_plugins >&2
echo "==> benchmark (release build)" >&2
cargo bench --locked -p ha-sidecar --bench bench -- "$@"
