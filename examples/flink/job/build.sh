#!/usr/bin/env bash
# Builds the counting example job against the Flink distribution in
# $FLINK_HOME: javac --release 11 and jar, no Maven. Output: build/count-forever.jar
set -euo pipefail
cd "$(dirname "$0")"
: "${FLINK_HOME:?set FLINK_HOME to a Flink 2.3 distribution (scripts/setup.sh ensure_flink installs one)}"
rm -rf build/classes && mkdir -p build/classes
javac --release 11 -nowarn -cp "$FLINK_HOME/lib/*" -d build/classes $(find src -name '*.java')
printf 'Main-Class: dev.hasidecar.examples.CountForever\n' > build/manifest.txt
jar cfm build/count-forever.jar build/manifest.txt -C build/classes .
echo "built $(pwd)/build/count-forever.jar"
