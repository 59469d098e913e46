#!/usr/bin/env bash
# Every example end to end: each examples/*/test.sh builds its components
# with its own language's toolchain (fetched once into
# BERTH_EXAMPLES_CACHE, default /var/tmp/berth-examples) and checks them
# against the real berth binary, BERTH (default: the release build).
# test.sh runs this after the Rust tests; run it alone as
#   BERTH=target/release/berth examples/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH=${BERTH:-${CARGO_TARGET_DIR:-target}/release/berth}
case $BERTH in /*) ;; *) BERTH="$PWD/$BERTH" ;; esac
[ -x "$BERTH" ] || { echo "examples/test.sh: no berth binary at $BERTH; build it first (cargo build --release)" >&2; exit 1; }

for test in examples/*/test.sh; do
    started=$SECONDS
    echo "=== $test"
    "$test"
    echo "=== $test passed in $((SECONDS - started)) s"
done
