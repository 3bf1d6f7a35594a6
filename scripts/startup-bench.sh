#!/usr/bin/env bash
# Start-up and idle memory of a release binary on its embedded defaults (docs/BENCHMARKS.md,
# "Start-up with the built-in field-map"): in an empty directory, the time until /readyz answers,
# the time until the built-in plugins are installed (hookyard_plugin_installs_running is 0), and
# the RSS after 5 s idle; then the same for a restart on that directory (compiled cache).
# Extra arguments are environment settings, e.g. HOOKYARD_CONSOLE_ENABLED=false.
# Usage: scripts/startup-bench.sh target/release/hookyard [VAR=value ...]
# Uses 127.0.0.1:8080/8081 (the defaults): nothing else may listen there.
set -euo pipefail
bin=$(realpath "$1"); shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
now() { date +%s%N; }
start_once() {
    local t0 pid ready installed v
    t0=$(now)
    env "$@" "$bin" serve > log 2>&1 &
    pid=$!
    until curl -sf 127.0.0.1:8080/readyz > /dev/null; do sleep 0.002; done
    ready=$(( ($(now) - t0) / 1000000 ))
    for _ in $(seq 1 3000); do
        v=$(curl -s 127.0.0.1:8080/metrics | awk '/^hookyard_plugin_installs_running /{print $2}')
        [ "$v" = 0 ] && break
        sleep 0.01
    done
    installed=$(( ($(now) - t0) / 1000000 ))
    sleep 5
    echo "ready_ms=$ready builtin_installed_ms=$installed idle_rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
echo "first start (empty store and plugin cache): $(start_once "$@")"
echo "restart (compiled cache):                   $(start_once "$@")"
