#!/usr/bin/env bash
# Runs the plugin's JUnit 4 tests (Debian's junit4 package) against real sidecar processes:
# the release binary (HA_SIDECAR_BIN, default target/release/ha-sidecar) and the file plugin
# must be built. Test classes to run may be given as arguments (default: all).
#   FLINK_VERSION=2.3 (default) | 1.20   the jar and the Flink distribution under test (the same
#                                        tests; build.sh says where each distribution comes from)
#   SIDECAR_BACKEND=file (default) | zookeeper
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$HERE/flink-lines.sh"
line="${FLINK_VERSION:-2.3}"
home="$(flink_home_for "$line")"
for jar in /usr/share/java/junit4.jar /usr/share/java/hamcrest.jar; do
    if [ ! -f "$jar" ]; then
        echo "error: $jar is missing: install the Debian package junit4 (apt-get install junit4)" >&2
        exit 1
    fi
done
if [ "$line" = 2.3 ]; then
    FLINK_HOME="$home" "$HERE/build.sh" "$line"
else
    FLINK_1_20_HOME="$home" "$HERE/build.sh" "$line"
fi
OUT="$HERE/build/$line"
rm -f "$OUT/test.log"
rm -rf "$OUT/test-classes"
mkdir -p "$OUT/test-classes"
CP="$home/lib/*:$OUT/classes:/usr/share/java/junit4.jar:/usr/share/java/hamcrest.jar"
find "$HERE/src/test/java" -name '*.java' | sort >"$OUT/test-sources.txt"
javac --release 11 -encoding UTF-8 -cp "$CP" -d "$OUT/test-classes" @"$OUT/test-sources.txt"
cp -r "$HERE/src/test/resources/." "$OUT/test-classes/"
if [ $# -gt 0 ]; then
    classes=("$@")
else
    mapfile -t classes < <(cd "$HERE/src/test/java" && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)
fi
echo "==> Flink $line plugin tests on the ${SIDECAR_BACKEND:-file} backend: ${classes[*]} (plugin log: $OUT/test.log)"
java -cp "$OUT/test-classes:$CP" -Drepo.root="$ROOT" -Dsidecar.backend="${SIDECAR_BACKEND:-file}" ${TEST_JAVA_OPTS:-} -Dtest.log="$OUT/test.log" \
    -Dlog4j.configurationFile=log4j2-test.properties \
    org.junit.runner.JUnitCore "${classes[@]}"
