#!/usr/bin/env bash
# Builds everything and runs the demo: three sidecars on the file backend,
# each beside a demo job manager; the leading pair is killed, then the next
# one stopped gracefully; the summary shows takeover times and count continuity.
source "$(dirname "$0")/setup.sh"
build_plugins
echo "==> building ha-sidecar and the demo (release)"
cargo build --release --locked -p ha-sidecar -p demo
echo "==> running the demo"
exec target/release/demo
