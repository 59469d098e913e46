#!/usr/bin/env bash
# Hot-swap benchmark, loopback only, bounded durations. Measures:
#  1. file watch: time from a new wasm landing (rename into place) to the
#     first request answered by it;
#  2. admin API: time from the start of the upload to the first request
#     answered by the new version (the upload returns once it is swapped in);
#  3. throughput (wrk) with no swaps, with a swap every SWAP_EVERY
#     seconds through the admin API, and with none again, in one server run.
# Needs curl, python3 and wrk (`apt-get install -y wrk`) and a build of
# the profile it measures: `cargo build --profile dist` (PROFILE=release
# measures a `cargo build --release`).
# Usage: benches/swap.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-20}
SECONDS_PER_RUN=${2:-10}
SWAP_EVERY=${SWAP_EVERY:-0.5}
PROFILE=${PROFILE:-dist}
BERTH=target/$PROFILE/berth
GUESTS=$(dirname "$(ls -t target/"$PROFILE"/build/berth-*/out/guest-target/wasm32-wasip2/release/swap_v1.wasm | head -1)")
[ -x "$BERTH" ] && [ -f "$GUESTS/swap_v2.wasm" ] || { echo "run cargo build --profile $PROFILE first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cp "$GUESTS/swap_v1.wasm" "$work/v1.wasm"
cp "$GUESTS/swap_v2.wasm" "$work/v2.wasm"
cp "$work/v1.wasm" "$work/swapper.wasm"
cat > "$work/berth.toml" <<TOML
[components.swapper]
wasm = "swapper.wasm"
routes = ["/swap"]
TOML
export BERTH_ADMIN_TOKEN=bench-token
RUST_LOG=warn "$BERTH" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --watch \
    --manifest "$work/berth.toml" --data "$work/data" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 600); do [ "$(wc -l < "$work/out")" -ge 2 ] && break; sleep 0.1; done
app=$(sed -n 's/^listening on //p' "$work/out")
admin=$(sed -n 's/^admin listening on //p' "$work/out")
auth="authorization: Bearer $BERTH_ADMIN_TOKEN"
echo "berth $app, admin $admin; wasm $(stat -c %s "$work/v1.wasm") bytes; $(nproc) cores"

summary() { sort -n | awk '{a[NR]=$1} END {printf "min %.1f ms, median %.1f ms, max %.1f ms (n=%d)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'; }
latency() { python3 benches/swap_latency.py "$1" "$ROUNDS" "$app" "$admin" "$work" | summary; }

echo "== file watch: new file renamed into place -> first request served by it"
latency watch
echo "== admin API: upload start -> first request served by it"
latency upload
echo "== admin API: rollback -> first request served by the old version"
latency rollback

current=$(curl -s -o /dev/null -D - "$app/swap" | tr -d '\r' | sed -n 's/^x-version: //p')
rps() { awk '/Requests\/sec/ {print $2}'; }
errors() { awk '/Non-2xx|Socket errors/ {print}'; }
echo "== throughput, wrk -t1 -c16 -d${SECONDS_PER_RUN}s GET /swap"
wrk -t1 -c16 -d"${SECONDS_PER_RUN}s" "$app/swap" > "$work/base"
echo "no swaps:               $(rps < "$work/base") req/s $(errors < "$work/base")"
wrk -t1 -c16 -d"${SECONDS_PER_RUN}s" "$app/swap" > "$work/swapping" &
wrk_pid=$!
swaps=0
while kill -0 "$wrk_pid" 2>/dev/null; do
    next=$([ $current = v1 ] && echo v2 || echo v1)
    curl -sf -o /dev/null -X PUT -H "$auth" --data-binary "@$work/$next.wasm" "$admin/components/swapper" && swaps=$((swaps + 1))
    current=$next
    sleep "$SWAP_EVERY"
done
wait "$wrk_pid"
echo "swap every ${SWAP_EVERY}s: $(rps < "$work/swapping") req/s over $swaps swaps $(errors < "$work/swapping")"
wrk -t1 -c16 -d"${SECONDS_PER_RUN}s" "$app/swap" > "$work/after"
echo "no swaps again:         $(rps < "$work/after") req/s $(errors < "$work/after")"
