#!/usr/bin/env bash
# Builds out/plugin.wasm from plugin.js with componentize-js, installed into node_modules/ on
# first use (versions pinned by package-lock.json).
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -d node_modules/@bytecodealliance/componentize-js || ! -d node_modules/@bytecodealliance/preview2-shim ]]; then
    npm ci --no-audit --no-fund
fi

node componentize.mjs
