#!/usr/bin/env bash
# Builds every plugin the tests load: the Rust plugins of plugins/ (field-map and the test
# fixtures) for wasm32-wasip2, and the Python and JavaScript example plugins (their build
# scripts install componentize-py and componentize-js locally on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "== rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi

echo "== plugins/: cargo build --release"
(cd plugins && cargo build --release --locked)

echo "== examples/plugins-python"
bash examples/plugins-python/build.sh

echo "== examples/plugins-js"
bash examples/plugins-js/build.sh
