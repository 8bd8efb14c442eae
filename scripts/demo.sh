#!/usr/bin/env bash
# Builds everything and runs the demo on real Flink: three stock Flink 2.3
# JobManagers, each beside a sidecar on the embedded file backend, one
# TaskManager beside an observer sidecar, and a job that counts forever with a
# checkpoint every second. The leading JobManager is killed (kill -9) three
# times, then a whole machine (JobManager and sidecar), then stopped with
# SIGTERM; a standby takes over each time and the count continues from the
# last checkpoint. Prints who led, takeover times, the time until the job ran
# again, and the last count before and the first after each failure. Installs
# Flink 2.3.0 from PyPI on first use. Logs in flink-demo-run/.
# `--flink 1.20` runs the same demo on Flink 1.20.3 (the plugin's 1.20 jar); the other
# arguments go to flink-demo (--help).
source "$(dirname "$0")/setup.sh"
flink_line=2.3
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[i]}" = --flink ] && [ $((i + 1)) -lt ${#args[@]} ]; then
        flink_line="${args[i + 1]}"
    fi
done
case "$flink_line" in
    2.3) ensure_flink ;;
    1.20) ensure_flink_1_20 ;;
    *)
        echo "error: --flink $flink_line: the demo runs on Flink 2.3 or 1.20" >&2
        exit 1
        ;;
esac
build_plugins
echo "==> building ha-sidecar and the demo (release)"
cargo build --release --locked -p ha-sidecar -p demo
echo "==> building the Flink HA services plugin and the counting job (javac, jar)"
clients/flink/build.sh "$flink_line"
FLINK_VERSION="$flink_line" examples/flink/job/build.sh
echo "==> running the demo"
exec target/release/flink-demo "$@"
