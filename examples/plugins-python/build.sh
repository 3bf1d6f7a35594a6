#!/usr/bin/env bash
# Builds out/plugin.wasm from app.py with componentize-py, installed into .venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")"

COMPONENTIZE_PY_VERSION=0.25.1
WIT_DIR=../../wit

if [[ ! -x .venv/bin/componentize-py ]] \
    || [[ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

mkdir -p out
# -p: the helper library (sdk/python/hookyard_plugin.py) is importable beside app.py.
.venv/bin/componentize-py -d "$WIT_DIR" -w plugin componentize -p . -p ../../sdk/python app -o out/plugin.wasm
ls -l out/plugin.wasm
