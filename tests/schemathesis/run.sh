#!/usr/bin/env bash
# Property-based API tests: serve the built-in users and orders on a free
# loopback port with a fresh store, point schemathesis at the /openapi.json
# the server publishes, and fail on anything any of its checks finds: a
# server error, a response that does not match the document (status,
# content type, headers, body schema), data the schemas forbid but the server
# accepts, or data they allow but the server refuses. schemathesis.toml,
# beside this script, says where the document cannot say it all.
#
#   tests/schemathesis/run.sh              # build if needed, then test
#   SCHEMATHESIS_MAX_EXAMPLES=500 tests/schemathesis/run.sh
#
# schemathesis is installed from PyPI into a virtualenv outside the clone,
# kept between runs. The berth binary is the release build in
# $CARGO_TARGET_DIR (or ./target).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

version=4.32.5
venv="${XDG_CACHE_HOME:-/var/tmp}/berth-schemathesis"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
seed="${SCHEMATHESIS_SEED:-$(date +%s)}"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $version"; then
    echo "installing schemathesis $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

# BERTH_BIN names a berth binary to test as it is; by default the release
# build is brought up to date first.
if [ -n "${BERTH_BIN:-}" ]; then
    berth="$BERTH_BIN"
else
    cargo build --release --locked --bin berth
    berth="${CARGO_TARGET_DIR:-$root/target}/release/berth"
fi

work=$(mktemp -d)
pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkfifo "$work/stdout"
RUST_LOG=warn "$berth" serve --listen 127.0.0.1:0 --data "$work/data" >"$work/stdout" 2>"$work/stderr" &
pid=$!
exec 3<"$work/stdout"
if ! read -r -t 60 -u 3 line || [[ "$line" != "listening on http://"* ]]; then
    echo "berth did not start; its stderr:" >&2
    cat "$work/stderr" >&2
    exit 1
fi
base=${line#listening on }
echo "berth is listening on $base (seed $seed, $max_examples examples per operation)"

status=0
# Run from the scratch folder so nothing schemathesis writes lands in the
# clone. No --max-time: with it, schemathesis keeps fuzzing until the budget
# is spent; the examples bound the run, and `timeout` bounds a stuck one.
(cd "$work" && timeout 900 "$venv/bin/schemathesis" \
    --config-file "$root/tests/schemathesis/schemathesis.toml" \
    run "$base/openapi.json" \
    --url "$base" \
    --checks all \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --request-timeout 20 \
    --workers 2 \
    --generation-database none \
    --no-color) || status=$?

# The server must also stop cleanly after all that.
kill -TERM "$pid"
exit_code=0
wait "$pid" || exit_code=$?
pid=
if [ "$exit_code" -ne 0 ]; then
    echo "berth exited with $exit_code after SIGTERM; its stderr:" >&2
    cat "$work/stderr" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "schemathesis: FAILED (seed $seed; rerun with SCHEMATHESIS_SEED=$seed)" >&2
    tail -n 50 "$work/stderr" >&2
fi
exit "$status"
