#!/usr/bin/env bash
# Builds the counting example job against a Flink distribution's own lib/: javac --release 11
# and jar, no Maven. The same source for every release line the plugin supports:
#   FLINK_VERSION=2.3 (default)  against FLINK_HOME       -> build/count-forever.jar
#   FLINK_VERSION=1.20           against FLINK_1_20_HOME  -> build/count-forever-1.20.jar
# (each installed by scripts/setup.sh when its variable is unset).
set -euo pipefail
cd "$(dirname "$0")"
source ../../../clients/flink/flink-lines.sh
line="${FLINK_VERSION:-2.3}"
home="$(flink_home_for "$line")"
jar=build/count-forever.jar
[ "$line" = 2.3 ] || jar="build/count-forever-$line.jar"
out="build/$line"
rm -rf "$out/classes" && mkdir -p "$out/classes"
javac --release 11 -nowarn -cp "$home/lib/*" -d "$out/classes" $(find src -name '*.java')
printf 'Main-Class: dev.hasidecar.examples.CountForever\n' > "$out/manifest.txt"
jar cfm "$jar" "$out/manifest.txt" -C "$out/classes" .
echo "built $(pwd)/$jar (against $home)"
