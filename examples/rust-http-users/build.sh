#!/usr/bin/env bash
# Build the example's component, and Berth's own users component to compare
# it with, into examples/rust-http-users/build/:
#   build/rust-http-users.wasm  this example (variant `http`, a wasi:http/proxy component)
#   build/users-service.wasm    components/users (variant `service`, berth:service)
# Idempotent: cargo rebuilds only what changed. The toolchain is the repo's
# pinned Rust (rust-toolchain.toml, with the wasm32-wasip2 target), which
# rustup installs on first use; build output goes to the cache directory
# ${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}, never into the repo.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}

if ! command -v cargo >/dev/null 2>&1; then
    echo "build.sh: cargo is not installed; install rustup (https://rustup.rs), which reads the pinned toolchain and target from $ROOT/rust-toolchain.toml" >&2
    exit 1
fi
mkdir -p "$CACHE" "$HERE/build"

echo "building rust-http-users (wasm32-wasip2, release)" >&2
(cd "$HERE" && CARGO_TARGET_DIR="$CACHE/rust-http-users-target" \
    nice -n 10 cargo build --release --target wasm32-wasip2 --locked)
cp "$CACHE/rust-http-users-target/wasm32-wasip2/release/rust_http_users.wasm" \
    "$HERE/build/rust-http-users.wasm"

echo "building components/users, the reference (wasm32-wasip2, release)" >&2
(cd "$ROOT/components" && CARGO_TARGET_DIR="$CACHE/components-target" \
    nice -n 10 cargo build --release --target wasm32-wasip2 --locked -p users)
cp "$CACHE/components-target/wasm32-wasip2/release/users.wasm" \
    "$HERE/build/users-service.wasm"

ls -l "$HERE/build/"*.wasm >&2
