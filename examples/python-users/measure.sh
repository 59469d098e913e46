#!/usr/bin/env bash
# Measure both variants of the Python users service and print one markdown
# table row per variant:
#   | NAME | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |
#
# - size: the .wasm file, in MB (10^6 bytes)
# - cold compile: wall time of `berth compile --manifest M --cache-dir EMPTY`
# - warm start: from launching `berth serve` with that filled cache (and an
#   empty data directory) to the first 200 on GET /users/1
# - req/s: `wrk -t1 -c16 -d10s` on GET /users/1 after a 3 s warm-up, berth
#   pinned to core 0 and wrk to core 1 (`taskset`) when there are two cores
#
# BERTH as for test.sh; BERTH_FLAGS adds flags to `berth serve` (for
# example `--keep-resident-mb 16`). Needs curl, wrk and python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BERTH=${BERTH:-target/release/berth}
[[ $BERTH == /* ]] || BERTH="$root/$BERTH"
NAME=python-users
read -r -a flags <<<"${BERTH_FLAGS:-}"

command -v wrk >/dev/null || { echo "measure.sh: wrk is required" >&2; exit 1; }
[[ -x $BERTH ]] || { echo "measure.sh: no berth binary at $BERTH (set BERTH)" >&2; exit 1; }

pin_berth=() pin_wrk=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    pin_berth=(taskset -c 0) pin_wrk=(taskset -c 1)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/$NAME-measure.XXXXXX")
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$here/build.sh" >&2

echo "| name | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
for variant in service http; do
    manifest="$here/$variant.toml"
    cache="$work/cache-$variant"
    size=$(stat -c %s "$here/build/$variant.wasm")

    start_ns=$(date +%s%N)
    "$BERTH" compile --manifest "$manifest" --cache-dir "$cache" >"$work/compile.log" 2>&1 ||
        { cat "$work/compile.log" >&2; exit 1; }
    compile_ns=$(($(date +%s%N) - start_ns))

    # Warm start, timed by a small Python driver: launch, read the address
    # from the `listening on` line, then GET /users/1 until it answers 200
    # (bounded at 60 s).
    warm_ms=$(python3 - "$BERTH" "$manifest" "$work/data-start-$variant" "$cache" "${flags[@]}" <<'EOF'
import subprocess, sys, time, urllib.request, urllib.error
berth, manifest, data, cache, *flags = sys.argv[1:]
t0 = time.monotonic()
p = subprocess.Popen([berth, "serve", "--listen", "127.0.0.1:0", "--manifest", manifest,
                      "--data", data, "--cache-dir", cache, *flags],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"berth did not start: {line!r}")
    url = line.split()[2] + "/users/1"
    while time.monotonic() - t0 < 60:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    print(f"{(time.monotonic() - t0) * 1000:.0f}")
                    break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.005)
    else:
        sys.exit("no 200 on GET /users/1 within 60 s")
finally:
    p.terminate()
    p.wait(timeout=20)
EOF
)

    # Throughput, on a fresh data directory with the filled cache.
    "${pin_berth[@]}" "$BERTH" serve --listen 127.0.0.1:0 --manifest "$manifest" \
        --data "$work/data-wrk-$variant" --cache-dir "$cache" "${flags[@]}" \
        >"$work/serve.out" 2>"$work/serve.log" &
    pid=$!
    base=
    for _ in $(seq 600); do
        base=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$work/serve.out")
        [[ -n $base ]] && break
        sleep 0.1
    done
    [[ -n $base ]] || { echo "measure.sh: berth did not start" >&2; tail "$work/serve.log" >&2; exit 1; }
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/users/1") == 200 ]] ||
        { echo "measure.sh: GET /users/1 is not 200" >&2; exit 1; }
    "${pin_wrk[@]}" wrk -t1 -c16 -d3s "$base/users/1" >/dev/null
    "${pin_wrk[@]}" wrk -t1 -c16 -d10s "$base/users/1" >"$work/wrk.out"
    if grep -q 'Non-2xx' "$work/wrk.out"; then
        echo "measure.sh: wrk saw non-2xx answers:" >&2
        cat "$work/wrk.out" >&2
        exit 1
    fi
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk.out")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=

    awk -v n="$NAME" -v v="$variant" -v s="$size" -v c="$compile_ns" -v w="$warm_ms" -v r="$rps" \
        'BEGIN { printf "| %s | %s | %.1f | %.1f | %s | %s |\n", n, v, s / 1e6, c / 1e9, w, r }'
done
