#!/usr/bin/env bash
# Runs every test: sets up the pinned toolchain (with the wasm32-wasip2
# target), then the unit, component and end-to-end tests in release mode,
# the one profile the serve command also builds.
#
# The store's PostgreSQL tests use the server BERTH_TEST_POSTGRES names; when
# it is unset and PostgreSQL's binaries are installed, a throw-away server is
# started for the run (tests/pg/cluster.sh) and stopped at exit. Without
# either they are skipped, unless BERTH_REQUIRE_POSTGRES=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install

if [ -z "${BERTH_TEST_POSTGRES:-}" ]; then
    if tests/pg/cluster.sh bindir >/dev/null 2>&1; then
        pg_dir=$(mktemp -d)
        trap 'tests/pg/cluster.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
        BERTH_TEST_POSTGRES=$(tests/pg/cluster.sh start "$pg_dir")
        export BERTH_TEST_POSTGRES
    else
        echo "PostgreSQL's binaries (initdb, pg_ctl, psql) were not found: the PostgreSQL store tests will be skipped (install PostgreSQL, or set BERTH_TEST_POSTGRES to a server's URL)" >&2
    fi
fi

cargo test --release --workspace --locked "$@"
