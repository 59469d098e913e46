#!/usr/bin/env bash
# Runs every test: sets up the pinned toolchain (with the wasm32-wasip2
# target), then the unit, component and end-to-end tests in release mode,
# the one profile the serve command also builds.
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install
cargo test --release --workspace --locked "$@"
