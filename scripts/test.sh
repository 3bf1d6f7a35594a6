#!/usr/bin/env bash
# Runs every test of hookyard: formatting, lints, unit, property and integration tests, and the
# plugin mapping engine's tests. Works on a fresh machine: it installs what the tests need (the
# wasm32-wasip2 target, componentize-py and componentize-js for the example plugins) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-plugins.sh

host=$(rustc -vV | sed -n 's/^host: //p')
echo "== plugins/: fmt, clippy and the field-map engine tests (on $host)"
(cd plugins && cargo fmt --all -- --check)
(cd plugins && cargo clippy --locked --release -- -D warnings)
(cd plugins && cargo test --locked --target "$host" -p field-map)

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets
