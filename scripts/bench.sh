#!/usr/bin/env bash
# Measures the design's performance targets (handover, takeover, GET /leader,
# plugin boundary, memory, start-up) and prints one table. Takes about a
# minute once built; run it on an otherwise idle machine, since it times real
# processes.
source "$(dirname "$0")/setup.sh"
build_plugins
echo "==> benchmark (release build)"
cargo bench --locked -p ha-sidecar --bench bench
