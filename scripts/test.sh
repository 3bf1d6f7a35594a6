#!/usr/bin/env bash
# Runs every test of hookyard: formatting, lints, unit, property and integration tests (the
# integration tests on SQLite, then on PostgreSQL), and the plugin mapping engine's tests. Works
# on a fresh machine: it installs what the tests need (the wasm32-wasip2 target, componentize-py
# and componentize-js for the example plugins) by itself. PostgreSQL must be running (see below).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-plugins.sh

host=$(rustc -vV | sed -n 's/^host: //p')
echo "== plugins/: fmt, clippy and the field-map engine tests (on $host)"
(cd plugins && cargo fmt --all -- --check)
(cd plugins && cargo clippy --locked --release -- -D warnings)
(cd plugins && cargo test --locked --target "$host" -p field-map)

echo "== the built-in field-map component is current (scripts/field-map-dist.sh)"
bash scripts/field-map-dist.sh --check

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

# The store's unit tests run the conformance suite on SQLite and PostgreSQL; the integration
# tests run once per store (HOOKYARD_TEST_STORE). PostgreSQL: HOOKYARD_TEST_POSTGRES_URL, by
# default postgres://postgres@127.0.0.1:5432/test; each test makes and drops its own schema.
# The cluster tests (several processes on one database) always use PostgreSQL, so they run once.
# The source tests use the message brokers every machine here runs; this script starts nothing
# for them, so it stops at once, saying which one is missing.
for broker in "NATS JetStream:127.0.0.1:4222" "RabbitMQ:127.0.0.1:5672"; do
    name=${broker%%:*}; addr=${broker#*:}
    if ! (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
        echo "error: $name is not running on $addr; the source tests (tests/it/sources.rs) need it" >&2
        exit 1
    fi
done

echo "== cargo test (integration tests on SQLite)"
HOOKYARD_TEST_STORE=sqlite cargo test --locked --all-targets
echo "== cargo test --test it (integration tests on PostgreSQL)"
HOOKYARD_TEST_STORE=postgres cargo test --locked --test it -- --skip cluster::

# The admin console in a real browser (headless Chromium + Playwright, installed by the script).
echo "== console browser tests (scripts/console-test.sh)"
bash scripts/console-test.sh
