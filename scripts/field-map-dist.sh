#!/usr/bin/env bash
# The first-party field-map plugin ships inside the gateway binary (src/plugin/builtin.rs embeds
# plugins/field-map/dist/field_map.wasm), so `cargo run --release -- serve` has it on a fresh
# machine without the wasm32-wasip2 target. This script keeps that committed component honest:
#
#   scripts/field-map-dist.sh --check    fails when the sources the component is built from
#                                        changed since it was last refreshed (run by scripts/test.sh)
#   scripts/field-map-dist.sh --update   builds field-map and refreshes the component and the digest
#
# The digest covers every input of the build that is in this repository: field-map's and the
# SDK's sources and manifests, the plugins' lock file and build settings, and the WIT files.
set -euo pipefail
cd "$(dirname "$0")/.."

dist=plugins/field-map/dist
digest() {
    find plugins/field-map/src plugins/field-map/Cargo.toml plugins/sdk plugins/Cargo.toml \
        plugins/Cargo.lock plugins/.cargo wit -type f -not -name '*.orig' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

case "${1:-}" in
--check)
    want=$(cat "$dist/SOURCES.sha256")
    have=$(digest)
    if [ "$want" != "$have" ]; then
        echo "error: $dist/field_map.wasm is older than its sources (digest $have, recorded $want):" >&2
        echo "       run scripts/field-map-dist.sh --update and commit the result" >&2
        exit 1
    fi
    echo "$dist/field_map.wasm matches its sources ($have)"
    ;;
--update)
    (cd plugins && cargo build --release --locked -p field-map)
    cp plugins/target/wasm32-wasip2/release/field_map.wasm "$dist/field_map.wasm"
    digest > "$dist/SOURCES.sha256"
    echo "$dist/field_map.wasm: $(wc -c < "$dist/field_map.wasm") bytes, sources $(cat "$dist/SOURCES.sha256")"
    ;;
*)
    echo "usage: $0 --check | --update" >&2
    exit 2
    ;;
esac
