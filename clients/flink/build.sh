#!/usr/bin/env bash
# Builds the Flink HA services plugin, one jar per supported Flink release line, from one
# source tree: src/main/java (shared: HTTP client, drivers, state store, counter, keys) and
# src/main/java-<line> (the wiring whose Flink interfaces differ: services, recovery factory,
# job store keys), each compiled against that Flink's own lib/:
#   build/ha-sidecar-flink-2.3.jar   Flink 2.3 (FLINK_HOME, else ensure_flink in scripts/setup.sh)
#   build/ha-sidecar-flink-1.20.jar  Flink 1.20 (FLINK_1_20_HOME, else ensure_flink_1_20)
# Arguments: the release lines to build (default: 2.3 1.20). No Maven: javac and jar only.
# Classes in build/<line>/classes (clients/flink/test.sh compiles the tests against them).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/flink-lines.sh"
lines=("$@")
[ ${#lines[@]} -gt 0 ] || lines=("${FLINK_LINES[@]}")
for line in "${lines[@]}"; do
    home="$(flink_home_for "$line")"
    out="$HERE/build/$line"
    rm -rf "$out/classes"
    mkdir -p "$out/classes"
    find "$HERE/src/main/java" "$HERE/src/main/java-$line" -name '*.java' | sort >"$out/sources.txt"
    javac --release 11 -Xlint:all,-serial,-processing,-options,-try -Werror -encoding UTF-8 \
        -cp "$home/lib/*" -d "$out/classes" @"$out/sources.txt"
    jar --create --file "$HERE/build/ha-sidecar-flink-$line.jar" -C "$out/classes" .
    echo "built $HERE/build/ha-sidecar-flink-$line.jar (against $home)"
done
