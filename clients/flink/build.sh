#!/usr/bin/env bash
# Builds the Flink HA services plugin: clients/flink/build/ha-sidecar-flink-2.3.jar, compiled
# against Flink 2.3.0's own jars (FLINK_HOME, installed by ensure_flink in scripts/setup.sh).
# No Maven: javac and jar only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${FLINK_HOME:-}" ]; then
    source "$HERE/../../scripts/setup.sh"
    ensure_flink
fi
BUILD="$HERE/build"
rm -rf "$BUILD/classes"
mkdir -p "$BUILD/classes"
find "$HERE/src/main/java" -name '*.java' >"$BUILD/sources.txt"
javac --release 11 -Xlint:all,-serial,-processing,-options,-try -Werror -encoding UTF-8 \
    -cp "$FLINK_HOME/lib/*" -d "$BUILD/classes" @"$BUILD/sources.txt"
jar --create --file "$BUILD/ha-sidecar-flink-2.3.jar" -C "$BUILD/classes" .
echo "built $BUILD/ha-sidecar-flink-2.3.jar"
