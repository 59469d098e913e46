#!/usr/bin/env bash
# The table of component kinds: each example's measure.sh, one after the
# other on an otherwise idle machine, as one markdown table, with each
# row's requests per second against Berth's own Rust users component
# (`rust-http-users`, variant `service`) measured in the same run.
#   BERTH=target/release/berth examples/measure.sh
# Takes about ten minutes, most of it the interpreters' cold compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH=${BERTH:-${CARGO_TARGET_DIR:-target}/release/berth}
case $BERTH in /*) ;; *) BERTH="$PWD/$BERTH" ;; esac

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for example in rust-http-users python-users js-users; do
    "examples/$example/build.sh" >&2
    "examples/$example/measure.sh" | grep "^| " | grep -v -i -e "^| name |" -e "^| ---" | tee -a "$rows" >&2
done

echo "# examples/measure.sh $(date -u +%Y-%m-%dT%H:%MZ), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| example | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s | req/s vs Rust service |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
awk -F'|' '
    function trim(x) { gsub(/^ +| +$/, "", x); return x }
    { n++; for (i = 2; i <= 7; i++) f[n, i] = trim($i) }
    f[n, 2] == "rust-http-users" && f[n, 3] == "service" { base = f[n, 7] }
    END {
        for (r = 1; r <= n; r++)
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[r, 2], f[r, 3], f[r, 4], f[r, 5],
                f[r, 6], f[r, 7], (base > 0 ? sprintf("%.2f", f[r, 7] / base) : "-")
    }' "$rows"
