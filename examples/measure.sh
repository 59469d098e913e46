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
    "examples/$example/measure.sh" | grep '^| ' | grep -v -e '^| NAME' -e '^| ---' >> "$rows"
done

echo "# examples/measure.sh $(date -u +%Y-%m-%dT%H:%MZ), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| example | variant | size MB | cold compile s | warm start ms | GET /users/1 req/s | req/s vs Rust service |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
awk -F'|' '
    { for (i = 2; i <= 7; i++) gsub(/^ +| +$/, "", $i); row[NR] = $0; name[NR] = $2; variant[NR] = $3; rps[NR] = $7 }
    name[NR] == "rust-http-users" && variant[NR] == "service" { base = $7 }
    END {
        for (n = 1; n <= NR; n++) {
            split(row[n], f, "|")
            for (i = 2; i <= 7; i++) gsub(/^ +| +$/, "", f[i])
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[2], f[3], f[4], f[5], f[6], f[7],
                (base > 0 ? sprintf("%.2f", f[7] / base) : "-")
        }
    }' "$rows"
