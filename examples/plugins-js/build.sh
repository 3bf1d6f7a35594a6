#!/usr/bin/env bash
# Builds out/plugin.wasm from plugin.js with componentize-js, installed into node_modules/ on
# first use (versions pinned by package-lock.json).
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -d node_modules/@bytecodealliance/componentize-js || ! -d node_modules/@bytecodealliance/preview2-shim ]]; then
    npm ci --no-audit --no-fund
fi

# The helper library is shared with the scaffolds (sdk/js): a copy beside plugin.js, because
# componentize-js resolves imports from the source's directory.
cp ../../sdk/js/hookyard-plugin.js ../../sdk/js/hookyard-plugin.d.ts .
node componentize.mjs
