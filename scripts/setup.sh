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

# Flink 1.20.3 (the 1.x LTS) for the plugin's 1.20 jar: unlike 2.3, its jars come only as the
# sdist of apache-flink-libraries (deps/lib, deps/opt, deps/plugins, deps/bin/*.jar); bin/ and
# conf/ come from the apache-flink wheel. Its scripts are the same on every platform, so the
# wheel is fetched for one fixed tag (CPython 3.11, manylinux2014 x86_64: 1.20 has no wheel for
# newer Pythons) whatever python3 runs pip. Both are unpacked once into .cache/flink-1.20.3
# (bin/, conf/, lib/, opt/, plugins/: a runnable FLINK_HOME); exports FLINK_1_20_HOME.
ensure_flink_1_20() {
    local version=1.20.3
    export FLINK_1_20_HOME="$ROOT/.cache/flink-$version"
    [ -f "$FLINK_1_20_HOME/lib/flink-dist-$version.jar" ] && [ -x "$FLINK_1_20_HOME/bin/flink" ] && return 0
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: installing Flink $version needs python3 (with pip) on PATH" >&2
        exit 1
    fi
    echo "==> installing Flink $version from PyPI into $FLINK_1_20_HOME (about 235 MB)"
    local tmp
    tmp="$(mktemp -d)"
    if ! python3 -m pip download --no-deps --quiet --dest "$tmp" --only-binary :all: \
        --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
        "apache-flink==$version"; then
        echo "error: pip could not download the apache-flink==$version wheel (bin/ and conf/ of Flink $version) from PyPI" >&2
        rm -rf "$tmp"
        exit 1
    fi
    if ! python3 -m pip download --no-deps --quiet --dest "$tmp" --no-binary :all: \
        "apache-flink-libraries==$version"; then
        echo "error: pip could not download the apache-flink-libraries==$version sdist (the jars of Flink $version) from PyPI" >&2
        rm -rf "$tmp"
        exit 1
    fi
    # The wheel is a zip and the sdist a tar.gz; python3 unpacks both where unzip may be missing.
    if ! python3 - "$tmp" "$version" <<'PY'
import pathlib, sys, tarfile, zipfile
tmp, version = pathlib.Path(sys.argv[1]), sys.argv[2]
home = tmp / "home"
wheels = list(tmp.glob("apache_flink-*.whl"))
sdists = list(tmp.glob("apache-flink-libraries-*.tar.gz")) + list(tmp.glob("apache_flink_libraries-*.tar.gz"))
if len(wheels) != 1 or len(sdists) != 1:
    sys.exit(f"expected one apache-flink wheel and one apache-flink-libraries sdist in {tmp}, found {wheels} and {sdists}")
with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
        if name.startswith("pyflink/") and not name.endswith("/"):
            target = home / name[len("pyflink/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
with tarfile.open(sdists[0]) as t:
    for member in t.getmembers():
        parts = pathlib.PurePosixPath(member.name).parts
        if len(parts) < 3 or parts[1] != "deps" or not member.isfile() or ".." in parts:
            continue
        target = home.joinpath(*parts[2:])
        target.parent.mkdir(parents=True, exist_ok=True)
        with t.extractfile(member) as src:
            target.write_bytes(src.read())
dist = home / "lib" / f"flink-dist-{version}.jar"
if not dist.is_file() or not (home / "bin" / "flink").is_file() or not (home / "conf").is_dir():
    sys.exit(f"the unpacked packages hold no {dist.name}, bin/flink or conf/: not a Flink {version} distribution")
(home / "log").mkdir(exist_ok=True)
PY
    then
        echo "error: unpacking Flink $version from the PyPI packages in $tmp failed (see above); remove $tmp when done" >&2
        exit 1
    fi
    chmod +x "$tmp/home/bin/"*.sh "$tmp/home/bin/flink"
    mkdir -p "$(dirname "$FLINK_1_20_HOME")"
    rm -rf "$FLINK_1_20_HOME"
    mv "$tmp/home" "$FLINK_1_20_HOME"
    rm -rf "$tmp"
}

# schemathesis (PyPI) for tests/openapi.rs, which checks docs/openapi.yaml
# against real sidecars: installed once into its own virtualenv,
# .cache/schemathesis, where the test finds its `st`. The version is pinned so
# that a new release does not change what the test checks.
ensure_schemathesis() {
    local version=4.32.5
    local venv="$ROOT/.cache/schemathesis"
    if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $NF}')" = "$version" ]; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: installing schemathesis $version needs python3 (with venv and pip) on PATH" >&2
        exit 1
    fi
    echo "==> installing schemathesis $version from PyPI into $venv"
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        echo "error: python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    if ! "$venv/bin/pip" install --quiet "schemathesis==$version"; then
        echo "error: pip could not install schemathesis==$version from PyPI into $venv" >&2
        exit 1
    fi
}

build_plugins() {
    echo "==> building plugins (wasm32-wasip2)"
    (cd plugins && cargo build --release --locked)
    # The backends built for the previous contract (a workspace of their own,
    # see its Cargo.toml), into the same target directory.
    (cd plugins/fixtures/contract-0-1 && cargo build --release --locked --target-dir ../../target)
}

# The host links MIT Kerberos' GSSAPI library (ZooKeeper's SASL/Kerberos
# login); its Rust binding reads the library's headers with bindgen, which
# needs libclang. Both are needed to build, by every script.
ensure_debian_packages libkrb5-dev libclang-dev
