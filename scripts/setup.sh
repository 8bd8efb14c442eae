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

build_plugins() {
    echo "==> building plugins (wasm32-wasip2)"
    (cd plugins && cargo build --release --locked)
}
