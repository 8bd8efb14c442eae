# Sourced by the other scripts: puts the repository root in $ROOT and makes
# sure the toolchain pieces the build needs are installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

# Plugins are WebAssembly components built for wasm32-wasip2.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target (rustup)"
    rustup target add wasm32-wasip2
fi

# Installs the Debian packages given that are missing (apt-get, through sudo
# when not root), e.g. the real services some integration tests run.
ensure_debian_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -qx 'Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: the tests need the Debian packages ${missing[*]}; this script installs them with apt-get, which is not available here" >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: the tests need the Debian packages ${missing[*]}; run as root, or install them: apt-get install ${missing[*]}" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# ZooKeeper for the ZooKeeper backend's integration tests: tests/support/zk.rs
# runs it from the package's jars (no systemd), with the JRE the package
# depends on.
ensure_zookeeper() {
    ensure_debian_packages zookeeper
    if ! command -v java >/dev/null 2>&1; then
        echo "error: the zookeeper package is installed but there is no \`java\` on PATH; install a JRE (apt-get install default-jre-headless)" >&2
        exit 1
    fi
}

# etcd for the etcd backend's integration tests: tests/support/etcd.rs runs
# the package's binary directly (no systemd).
ensure_etcd() {
    ensure_debian_packages etcd-server
}

# PostgreSQL 15 for the PostgreSQL backend's integration tests:
# tests/support/postgres.rs runs initdb and postgres from
# /usr/lib/postgresql/15/bin in a temporary directory (no systemd, no
# cluster of the package's own).
ensure_postgres() {
    ensure_debian_packages postgresql-15
    if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
        echo "error: postgresql-15 is installed but /usr/lib/postgresql/15/bin/initdb is missing" >&2
        exit 1
    fi
}

# Flink 2.3.0 for the Flink HA services plugin (clients/flink): the two PyPI
# wheels hold a complete distribution under pyflink/ (lib/flink-dist-2.3.0.jar
# has every class the plugin compiles against). Unpacked once into
# .cache/flink-2.3.0; exports FLINK_HOME.
ensure_flink() {
    local version=2.3.0
    export FLINK_HOME="$ROOT/.cache/flink-$version"
    [ -f "$FLINK_HOME/lib/flink-dist-$version.jar" ] && return 0
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: installing Flink $version needs python3 (with pip) on PATH" >&2
        exit 1
    fi
    echo "==> installing Flink $version from PyPI into $FLINK_HOME"
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download --no-deps --only-binary :all: --quiet --dest "$tmp" \
        "apache-flink==$version" "apache-flink-libraries==$version"
    local wheel
    # A wheel is a zip; python3 unpacks it where unzip may be missing.
    python3 - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
for wheel in tmp.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp / "unpacked", [n for n in z.namelist() if n.startswith("pyflink/")])
PY
    chmod +x "$tmp/unpacked/pyflink/bin/"*
    mkdir -p "$(dirname "$FLINK_HOME")"
    rm -rf "$FLINK_HOME"
    mv "$tmp/unpacked/pyflink" "$FLINK_HOME"
    rm -rf "$tmp"
}

build_plugins() {
    echo "==> building plugins (wasm32-wasip2)"
    (cd plugins && cargo build --release --locked)
}
