#!/usr/bin/env bash
# Measure each variant and print one markdown table row per variant:
#   | NAME | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |
# variant `http`: this example (berth.toml); variant `service`: Berth's own
# components/users (service.toml), both built by build.sh.
#   size MB         the .wasm file, in 10^6 bytes
#   cold compile s  wall time of `berth compile --manifest M --cache-dir EMPTY_DIR`
#   warm start ms   from launching `berth serve` with that filled cache (and a
#                   data directory a previous run seeded) to the first 200 on
#                   GET /users/1; the median of $STARTS runs
#   req/s           `wrk -t1 -c16 -d10s` on GET /users/1 after a 3 s warm-up,
#                   berth pinned to CPU 0 and wrk to CPU 1 (taskset) when the
#                   machine has two CPUs or more
# Env: BERTH (default target/release/berth from the repo root), DURATION
# (10), WARMUP (3), CONNECTIONS (16), STARTS (5). Progress goes to stderr,
# the rows to stdout. Needs curl and wrk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BERTH=${BERTH:-target/release/berth}
case $BERTH in /*) ;; *) BERTH=$ROOT/$BERTH ;; esac
NAME=rust-http-users
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-16}
STARTS=${STARTS:-5}

fail() {
    echo "measure.sh: $*" >&2
    exit 1
}
[ -x "$BERTH" ] || fail "no berth binary at $BERTH; build it or set BERTH"
for tool in curl wrk; do command -v $tool >/dev/null || fail "$tool is not installed"; done
PIN_SERVER=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
fi

"$HERE/build.sh" >&2

WORK=$(mktemp -d /tmp/$NAME-measure.XXXXXX)
PID=""
stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
trap 'stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

# start MANIFEST DATA CACHE: launch berth, wait (at most 60 s) for the first
# 200 on GET /users/1; sets PID, URL and START_MS (launch to that 200).
start() {
    local out=$WORK/out t0 line code=""
    # Emptied here, not only by the redirection below: the child truncates
    # it a moment after the fork, and the address of the last run must not
    # be read in between.
    : >"$out"
    t0=$(now_ns)
    "${PIN_SERVER[@]}" "$BERTH" serve --listen 127.0.0.1:0 --manifest "$1" --data "$2" \
        --cache-dir "$3" >"$out" 2>"$WORK/err" &
    PID=$!
    URL=""
    local deadline=$((t0 + 60000000000))
    while [ "$(now_ns)" -lt "$deadline" ]; do
        if [ -z "$URL" ]; then
            line=$(head -n 1 "$out" 2>/dev/null || true)
            case $line in "listening on http://"*) URL=${line#listening on } ;; esac
        fi
        if [ -n "$URL" ]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/users/1" || true)
            if [ "$code" = 200 ]; then
                START_MS=$((($(now_ns) - t0) / 1000000))
                return 0
            fi
        fi
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/err" >&2; fail "berth exited during start-up"; }
        sleep 0.002
    done
    echo "berth's output:" >&2
    cat "$out" "$WORK/err" >&2
    fail "no 200 on GET /users/1 within 60 s (last answer: ${code:-none}, address: ${URL:-not printed})"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

measure() {
    local variant=$1 manifest=$2 wasm=$3 cache=$WORK/cache-$1 data=$WORK/data-$1
    local size t0 compile_s starts rps
    size=$(awk -v b="$(stat -c %s "$wasm")" 'BEGIN { printf "%.2f", b / 1e6 }')

    mkdir -p "$cache" "$data"
    echo "$variant: berth compile --manifest $manifest --cache-dir (empty)" >&2
    t0=$(now_ns)
    "$BERTH" compile --manifest "$manifest" --cache-dir "$cache" >&2
    compile_s=$(awk -v ns=$(($(now_ns) - t0)) 'BEGIN { printf "%.2f", ns / 1e9 }')

    # A first run seeds the store, so every measured start finds the same data.
    start "$manifest" "$data" "$cache"
    stop
    starts=""
    for _ in $(seq "$STARTS"); do
        start "$manifest" "$data" "$cache"
        starts+="$START_MS"$'\n'
        stop
    done
    echo "$variant: warm starts (ms): $(echo $starts)" >&2

    start "$manifest" "$data" "$cache"
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$URL/users/1" >/dev/null
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$URL/users/1" >"$WORK/wrk"
    stop
    cat "$WORK/wrk" >&2
    if grep -q "Non-2xx" "$WORK/wrk"; then fail "$variant: wrk saw responses other than 200"; fi
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/wrk")
    echo "| $NAME | $variant | $size | $compile_s | $(printf '%s' "$starts" | median) | $rps |"
}

echo "| NAME | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
measure http "$HERE/berth.toml" "$HERE/build/rust-http-users.wasm"
measure service "$HERE/service.toml" "$HERE/build/users-service.wasm"
