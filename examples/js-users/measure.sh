#!/usr/bin/env bash
# Measure both variants and print one markdown table row each:
#   | NAME | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |
# size: build/VARIANT.wasm. Cold compile: wall time of
#   berth compile --manifest VARIANT.toml --cache-dir EMPTY-DIR
# Warm start: from launching
#   berth serve --listen 127.0.0.1:0 --data FRESH-DIR --cache-dir FILLED-DIR --manifest VARIANT.toml
# to the first 200 on GET /users/1 (which also seeds the store).
# Throughput: berth pinned to CPU 0, wrk to CPU 1 (when there are two),
#   wrk -t1 -c16 -d3s URL/users/1    (warm-up, not counted)
#   wrk -t1 -c16 -d10s URL/users/1
#
#   BERTH=path/to/berth examples/js-users/measure.sh   (default target/release/berth)
# Run it on an otherwise idle machine; it takes about two minutes plus the
# two cold compiles.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
berth=${BERTH:-target/release/berth}
case $berth in /*) ;; *) berth="$root/$berth" ;; esac
[ -x "$berth" ] || { echo "no berth binary at $berth (build it, or set BERTH)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/js-users-measure.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin_berth=() pin_wrk=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_berth=(taskset -c 0) pin_wrk=(taskset -c 1)
fi

"$here/build.sh" >&2

echo "| NAME | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
for variant in service http; do
    manifest="$here/$variant.toml"
    cache="$tmp/cache-$variant"
    size=$(awk -v b="$(stat -c %s "$here/build/$variant.wasm")" 'BEGIN { printf "%.1f", b / 1048576 }')

    echo "$variant: cold compile" >&2
    start_ns=$(date +%s%N)
    "$berth" compile --manifest "$manifest" --cache-dir "$cache" >&2
    compile_s=$(awk -v ns="$(($(date +%s%N) - start_ns))" 'BEGIN { printf "%.1f", ns / 1e9 }')

    echo "$variant: warm start" >&2
    mkdir -p "$tmp/start-$variant"
    warm_ms=$(python3 - "$berth" "$manifest" "$cache" "$tmp/start-$variant" <<'EOF'
import signal, subprocess, sys, time, urllib.error, urllib.request

berth, manifest, cache, data = sys.argv[1:]
signal.alarm(120)  # the whole measurement, start-up included, is bounded
start = time.monotonic()
server = subprocess.Popen(
    [berth, "serve", "--listen", "127.0.0.1:0", "--data", data, "--cache-dir", cache, "--manifest", manifest],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"berth serve printed {line!r} instead of `listening on`")
    url = line.split()[-1] + "/users/1"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.002)
    print(round((time.monotonic() - start) * 1000))
finally:
    server.terminate()
    server.wait(timeout=20)
EOF
)

    echo "$variant: throughput" >&2
    mkdir -p "$tmp/wrk-$variant"
    : > "$tmp/wrk-$variant.out" # exists before the background server opens it
    "${pin_berth[@]}" "$berth" serve --listen 127.0.0.1:0 --data "$tmp/wrk-$variant" --cache-dir "$cache" \
        --manifest "$manifest" > "$tmp/wrk-$variant.out" 2> "$tmp/wrk-$variant.err" &
    server_pid=$!
    line=
    for ((i = 0; i < 600; i++)); do
        line=$(head -n 1 "$tmp/wrk-$variant.out" || true)
        [ -n "$line" ] && break
        kill -0 "$server_pid" 2>/dev/null || { echo "berth serve exited early" >&2; exit 1; }
        sleep 0.1
    done
    [[ $line == "listening on http://"* ]] || { echo "berth serve did not start within 60 s" >&2; exit 1; }
    url="${line#listening on }/users/1"
    curl -sf --max-time 20 "$url" > /dev/null
    "${pin_wrk[@]}" wrk -t1 -c16 -d3s "$url" > /dev/null
    rps=$("${pin_wrk[@]}" wrk -t1 -c16 -d10s "$url" | tee "$tmp/wrk-$variant.txt" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
    grep -q 'Non-2xx' "$tmp/wrk-$variant.txt" && { echo "$variant: wrk saw non-2xx answers:" >&2; cat "$tmp/wrk-$variant.txt" >&2; }
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=

    echo "| js-users | $variant | $size | $compile_s | $warm_ms | $rps |"
done
