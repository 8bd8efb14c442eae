#!/usr/bin/env bash
# Runs the plugin's JUnit 4 tests (Debian's junit4 package) against real sidecar processes:
# the release binary (HA_SIDECAR_BIN, default target/release/ha-sidecar) and the file plugin
# must be built. Test classes to run may be given as arguments (default: all).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ -z "${FLINK_HOME:-}" ]; then
    source "$ROOT/scripts/setup.sh"
    ensure_flink
fi
for jar in /usr/share/java/junit4.jar /usr/share/java/hamcrest.jar; do
    if [ ! -f "$jar" ]; then
        echo "error: $jar is missing: install the Debian package junit4 (apt-get install junit4)" >&2
        exit 1
    fi
done
"$HERE/build.sh"
rm -f "$HERE/build/test.log"
BUILD="$HERE/build"
rm -rf "$BUILD/test-classes"
mkdir -p "$BUILD/test-classes"
CP="$FLINK_HOME/lib/*:$BUILD/classes:/usr/share/java/junit4.jar:/usr/share/java/hamcrest.jar"
find "$HERE/src/test/java" -name '*.java' >"$BUILD/test-sources.txt"
javac --release 11 -encoding UTF-8 -cp "$CP" -d "$BUILD/test-classes" @"$BUILD/test-sources.txt"
cp -r "$HERE/src/test/resources/." "$BUILD/test-classes/"
if [ $# -gt 0 ]; then
    classes=("$@")
else
    mapfile -t classes < <(cd "$HERE/src/test/java" && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)
fi
echo "==> Flink plugin tests on the ${SIDECAR_BACKEND:-file} backend: ${classes[*]} (plugin log: $BUILD/test.log)"
java -cp "$BUILD/test-classes:$CP" -Drepo.root="$ROOT" -Dsidecar.backend="${SIDECAR_BACKEND:-file}" ${TEST_JAVA_OPTS:-} -Dtest.log="$BUILD/test.log" \
    -Dlog4j.configurationFile=log4j2-test.properties \
    org.junit.runner.JUnitCore "${classes[@]}"
