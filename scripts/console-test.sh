#!/usr/bin/env bash
# The admin console's browser tests (tests/console/): headless Chromium (Debian's `chromium`,
# installed here when missing; no browser is downloaded) driven by Playwright for Python
# (installed from PyPI into target/console-test/venv), against the real gateway binary built by
# cargo with the field-map plugin built from plugins/. Screenshots go to docs/console/ when
# HOOKYARD_CONSOLE_SCREENSHOTS=1 (they are committed; a normal run leaves them alone).
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=1.65.3
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
    echo "== apt-get install chromium"
    if [ "$(id -u)" != 0 ]; then
        echo "error: $CHROMIUM is missing and installing it needs root (apt-get install -y chromium)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

venv=target/console-test/venv
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
    echo "== pip install playwright==$PLAYWRIGHT_VERSION (into $venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION"
fi

plugins=plugins/target/wasm32-wasip2/release
if [ ! -f "$plugins/field_map.wasm" ] || [ ! -f "$plugins/version_a.wasm" ]; then
    echo "== plugins/: cargo build --release"
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    (cd plugins && cargo build --release --locked)
fi

# The binary as the integration tests build it (cargo builds a package's binaries for its
# integration tests): the same feature set as `cargo test`, so nothing is compiled twice.
echo "== cargo test --no-run --test it (builds target/debug/hookyard)"
cargo test --locked --no-run --test it

shots=()
if [ "${HOOKYARD_CONSOLE_SCREENSHOTS:-0}" = 1 ]; then
    shots=(--screenshots docs/console)
fi
echo "== console browser tests"
"$venv/bin/python" tests/console/test_console.py --binary target/debug/hookyard \
    --plugins "$plugins" --chromium "$CHROMIUM" "${shots[@]}"
