#!/usr/bin/env bash
# The lighter demo, without Flink: builds the sidecar and runs three sidecars on the file backend,
# each beside a demo job manager; the leading pair is killed, a standby
# recovers the job through GET /recovery, the next leader is stopped
# gracefully, and the job finishes (its HA data is cleaned up). The summary
# shows takeover times, count continuity and the cleanup.
source "$(dirname "$0")/setup.sh"
build_plugins
echo "==> building ha-sidecar and the demo (release)"
cargo build --release --locked -p ha-sidecar -p demo
echo "==> running the demo"
exec target/release/demo
