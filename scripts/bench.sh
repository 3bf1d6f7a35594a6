#!/usr/bin/env bash
# The end-to-end load test (docs/LOADTEST.md) in one command: builds the gateway (release), the
# field-map plugin and the harness (loadtest/, a cargo workspace of its own), then runs every
# scenario with moderate durations (the whole run takes about five minutes) and prints the
# tables. Arguments pass through to hookyard-loadtest, for example:
#
#   bash scripts/bench.sh                                   # everything, defaults below
#   bash scripts/bench.sh --scenario e2e,field-map --duration 20
#   bash scripts/bench.sh --rate 1000 --outage-secs 10      # a fixed rate; a shorter outage
#   bash scripts/bench.sh --perf-stat --perf-record /tmp/prof   # SQLite syncs/s; CPU profiles
#   bash scripts/bench.sh --out docs/loadtest-latest.md
#
# `loadtest/target/release/hookyard-loadtest --help` lists every flag.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build --release (the gateway)" >&2
cargo build --release --locked

echo "== the field-map plugin (wasm32-wasip2)" >&2
# Only field-map of the Rust plugins.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
(cd plugins && cargo build --release --locked -p field-map)

# The python and js scenarios (and their -fresh twins) need the example plugins.
if [[ " $* " == *python* || " $* " == *js* || " $* " == *all* || " $* " != *--scenario* ]]; then
    echo "== the Python and JavaScript example plugins" >&2
    bash examples/plugins-python/build.sh >&2
    bash examples/plugins-js/build.sh >&2
fi

echo "== loadtest/: cargo build --release (the harness)" >&2
(cd loadtest && cargo build --release --locked)

echo "== load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
exec loadtest/target/release/hookyard-loadtest \
    --gateway-bin target/release/hookyard \
    --field-map plugins/target/wasm32-wasip2/release/field_map.wasm \
    --duration 10 \
    "$@"
