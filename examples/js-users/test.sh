#!/usr/bin/env bash
# End-to-end test of both variants against the real `berth` binary: builds
# them (build.sh), compiles each once into one compile cache for the whole
# run, serves each on a free port with its own temporary data directory,
# checks the users API with curl, kills berth with SIGKILL after
# acknowledged writes and checks them after a restart, and checks that the
# two variants answered the same request sequence identically.
#
#   BERTH=path/to/berth examples/js-users/test.sh   (default target/release/berth)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
berth=${BERTH:-target/release/berth}
case $berth in /*) ;; *) berth="$root/$berth" ;; esac

checks=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/js-users-test.XXXXXX")
server_pid=
variant=

cleanup() {
    if [ -n "$server_pid" ]; then
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL [$variant]: $*" >&2
    if [ -n "$variant" ] && [ -s "$tmp/$variant.err" ]; then
        echo "--- last lines of berth's stderr:" >&2
        tail -n 15 "$tmp/$variant.err" >&2
    fi
    exit 1
}

pass() {
    checks=$((checks + 1))
    echo "ok $checks [$variant] $*"
}

# --- the server -------------------------------------------------------------

# start: serve $variant on a free port with data directory $data; sets $base.
start() {
    : > "$tmp/$variant.out"
    "$berth" serve --listen 127.0.0.1:0 --data "$data" --cache-dir "$tmp/cache" \
        --manifest "$here/$variant.toml" > "$tmp/$variant.out" 2>> "$tmp/$variant.err" &
    server_pid=$!
    local line= i
    # The first stdout line is `listening on http://IP:PORT`, printed once
    # Berth is ready. Up to 120 s: the compile cache is full, so it is
    # usually well under a second.
    for ((i = 0; i < 1200; i++)); do
        line=$(head -n 1 "$tmp/$variant.out")
        [ -n "$line" ] && break
        kill -0 "$server_pid" 2>/dev/null || fail "berth serve exited before it was ready"
        sleep 0.1
    done
    case $line in
        "listening on http://"*) base=${line#listening on } ;;
        *) fail "berth serve printed no \`listening on\` line within 120 s (got: ${line:-nothing})" ;;
    esac
}

# stop SIGNAL: stop the server, waiting at most 20 s. Its stderr goes
# nowhere: that is where bash reports a job it reaps as "Killed".
stop() {
    kill "-$1" "$server_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" || true
    server_pid=
} 2>/dev/null

# --- requests ---------------------------------------------------------------

# send METHOD PATH [BODY]: one request; sets $status and $body, leaves the
# headers in $tmp/headers. A body is sent as $ct (default
# application/json). Every request also goes into the variant's transcript,
# which the two variants must agree on.
send() {
    local method=$1 path=$2 args=(-sS --max-time 20 -X "$1" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}')
    if [ $# -ge 3 ]; then
        args+=(-H "content-type: ${ct:-application/json}" --data-binary "$3")
    fi
    status=$(curl "${args[@]}" "$base$path") || fail "$method $path: curl failed (status ${status:-none})"
    body=$(cat "$tmp/body")
    printf '%s %s %s -> %s %s | type=%s location=%s link=%s allow=%s\n' "$method" "$path" "${3:-}" \
        "$status" "$body" "$(header content-type)" "$(header location)" "$(header link)" "$(header allow)" \
        >> "$tmp/$variant.transcript"
}

# header NAME: the value of response header NAME, empty if absent.
header() {
    grep -i "^$1:" "$tmp/headers" | head -n 1 | cut -d: -f2- | sed 's/^ *//; s/\r$//' || true
}

# check METHOD PATH [BODY] -- STATUS EXPECTED-BODY [name=value...]: send the
# request and compare. EXPECTED-BODY is exact, or a glob after `~`, or `-`
# for "not checked"; `name=value` compares a response header (`name=`
# means absent). JSON error bodies also need content-type application/json.
check() {
    local request=()
    while [ "$1" != -- ]; do request+=("$1"); shift; done
    shift
    local want_status=$1 want_body=$2
    shift 2
    send "${request[@]}"
    local what="${request[0]} ${request[1]}${request[2]:+ ${request[2]}}"
    [ "$status" = "$want_status" ] || fail "$what: expected status $want_status, got $status: $body"
    case $want_body in
        -) ;;
        '~'*) [[ $body == ${want_body#\~} ]] || fail "$what: expected a body like ${want_body#\~}, got: $body" ;;
        *) [ "$body" = "$want_body" ] || fail "$what: expected body $want_body, got: $body" ;;
    esac
    if [[ $body == '{"error":'* ]]; then
        set -- "content-type=application/json" "$@"
    fi
    local h name value got
    for h in "$@"; do
        name=${h%%=*} value=${h#*=}
        got=$(header "$name")
        [ "$got" = "$value" ] || fail "$what: expected header $name: '${value}', got '${got}'"
    done
    pass "$what -> $status ${body:0:70}"
}

# --- the API ------------------------------------------------------------------

john='{"id":1,"name":"John"}'
jane='{"id":2,"name":"Jane"}'

api() {
    # Seeded on first use, listed in id order, paged.
    check GET /users -- 200 "[$john,$jane]" content-type=application/json link=
    check GET /users/1 -- 200 "$john" content-type=application/json
    check GET /users/ -- 200 "[$john,$jane]"
    check GET '/users?limit=1' -- 200 "[$john]" 'link=</users?limit=1&after=1>; rel="next"'
    check GET '/users?limit=1&after=1' -- 200 "[$jane]" link=
    check GET '/users?after=2' -- 200 "[]" link=
    check GET '/users?limit=2&after=0' -- 200 "[$john,$jane]" link=
    check GET '/users?limit=0' -- 400 '{"error":"invalid query parameter `limit=0`: expected an integer from 1 to 1000"}'
    check GET '/users?limit=1001' -- 400 '{"error":"invalid query parameter `limit=1001`: expected an integer from 1 to 1000"}'
    check GET '/users?after=x' -- 400 '{"error":"invalid query parameter `after=x`: expected an integer from 0 to 9223372036854775807"}'
    check GET '/users?limit=-1' -- 400 '~{"error":"invalid query parameter `limit=-1`*'

    # Create: ids from the counter, above the seeds; or the client's own.
    check POST /users '{"name":"Ann"}' -- 201 '{"id":3,"name":"Ann"}' location=/users/3 content-type=application/json
    check GET /users/3 -- 200 '{"id":3,"name":"Ann"}'
    check POST /users '{"id":10,"name":"Bob"}' -- 201 '{"id":10,"name":"Bob"}' location=/users/10
    check POST /users '{"id":10,"name":"Bob"}' -- 409 '{"error":"user 10 already exists"}'
    check POST /users '{"id":1,"name":"Someone"}' -- 409 '{"error":"user 1 already exists"}'
    check POST /users '{"name":"  Cy  "}' -- 201 '{"id":11,"name":"Cy"}' location=/users/11
    check GET /users -- 200 "[$john,$jane,"'{"id":3,"name":"Ann"},{"id":10,"name":"Bob"},{"id":11,"name":"Cy"}]'

    # Bad bodies.
    check POST /users '{"name":' -- 400 '~{"error":"invalid JSON body: *"}'
    check POST /users 'not json' -- 400 '~{"error":"invalid JSON body: *"}'
    check POST /users '[{"name":"Ann"}]' -- 400 '{"error":"invalid JSON body: expected an object such as {\"name\": \"Ann\"}"}'
    check POST /users '"Ann"' -- 400 '{"error":"invalid JSON body: expected an object such as {\"name\": \"Ann\"}"}'
    check POST /users '{}' -- 400 '{"error":"missing field `name`"}'
    check POST /users '{"name":""}' -- 400 '{"error":"field `name` must not be empty"}'
    check POST /users '{"name":"   "}' -- 400 '{"error":"field `name` must not be empty"}'
    check POST /users '{"name":"Ann","age":3}' -- 400 '{"error":"invalid JSON body: unknown field `age`, expected `id` or `name`"}'
    check POST /users '{"name":7}' -- 400 '{"error":"field `name` must be a string"}'
    check POST /users '{"name":null}' -- 400 '{"error":"field `name` must be a string"}'
    check POST /users '{"id":0,"name":"Ann"}' -- 400 '{"error":"field `id` must be a positive integer"}'
    check POST /users '{"id":"5","name":"Ann"}' -- 400 '{"error":"field `id` must be a positive integer"}'
    check POST /users '{"id":null,"name":"Ann"}' -- 400 '{"error":"field `id` must be a positive integer"}'
    check POST /users '{"id":1.5,"name":"Ann"}' -- 400 '{"error":"field `id` must be a positive integer"}'
    check POST /users '{"id":9007199254740992,"name":"Ann"}' -- 400 '{"error":"field `id` must be at most 9007199254740991"}'
    ct=text/plain check POST /users '{"name":"Ann"}' -- 415 '{"error":"expected content-type application/json, got `text/plain`"}'

    # Ids in the path.
    check GET /users/x -- 400 '{"error":"invalid user id `x`: expected a positive integer below 2^63"}'
    check GET /users/0 -- 400 '{"error":"invalid user id `0`: expected a positive integer below 2^63"}'
    check GET /users/-1 -- 400 '{"error":"invalid user id `-1`: expected a positive integer below 2^63"}'
    check GET /users/9223372036854775808 -- 400 '{"error":"invalid user id `9223372036854775808`: expected a positive integer below 2^63"}'
    check GET /users/9223372036854775807 -- 404 '{"error":"user 9223372036854775807 does not exist"}'
    check GET /users/7 -- 404 '{"error":"user 7 does not exist"}'
    check DELETE /users/x -- 400 '{"error":"invalid user id `x`: expected a positive integer below 2^63"}'

    # Delete.
    check DELETE /users/3 -- 204 '' content-type=
    check GET /users/3 -- 404 '{"error":"user 3 does not exist"}'
    check DELETE /users/3 -- 404 '{"error":"user 3 does not exist"}'
    check DELETE /users/1 -- 204 ''
    check GET /users/1 -- 404 '{"error":"user 1 does not exist"}'
    check GET /users -- 200 "[$jane,"'{"id":10,"name":"Bob"},{"id":11,"name":"Cy"}]'

    # Methods and paths.
    check PATCH /users -- 405 '{"error":"method PATCH is not allowed here; allowed: GET, POST"}' 'allow=GET, POST'
    check PUT /users/2 '{"name":"X"}' -- 405 '{"error":"method PUT is not allowed here; allowed: GET, DELETE"}' 'allow=GET, DELETE'
    check GET /users/2/friends -- 404 '{"error":"no such resource: /users/2/friends"}'

    # 20 POSTs at once: 20 distinct ids.
    # One name for all, so that what follows reads the same in both variants
    # whichever request got which id.
    local i ids curls=()
    for ((i = 1; i <= 20; i++)); do
        curl -sS --max-time 30 -o "$tmp/many.$i" -w '%{http_code}' -X POST -H 'content-type: application/json' \
            --data-binary '{"name":"Many"}' "$base/users" > "$tmp/many.$i.status" &
        curls+=($!)
    done
    wait "${curls[@]}" || true # each curl is bounded by --max-time
    for ((i = 1; i <= 20; i++)); do
        [ "$(cat "$tmp/many.$i.status")" = 201 ] || fail "concurrent POST $i: expected 201, got $(cat "$tmp/many.$i.status"): $(cat "$tmp/many.$i")"
    done
    ids=$(cat "$tmp"/many.? "$tmp"/many.?? | grep -o '"id":[0-9]*' | sort -u | wc -l)
    [ "$ids" = 20 ] || fail "20 concurrent POSTs: expected 20 distinct ids, got $ids"
    echo "20 concurrent POSTs: 20 distinct ids" >> "$tmp/$variant.transcript"
    pass "20 concurrent POSTs -> 201 with 20 distinct ids"

    # Following `link` visits every user once, in id order.
    local next='/users?limit=7' seen=() pages=0
    while [ -n "$next" ] && ((pages < 50)); do
        send GET "$next"
        [ "$status" = 200 ] || fail "GET $next: expected 200, got $status: $body"
        seen+=($(grep -o '"id":[0-9]*' <<< "$body" | cut -d: -f2))
        next=$(header link | sed -n 's/^<\(.*\)>; rel="next"$/\1/p')
        pages=$((pages + 1))
    done
    send GET '/users?limit=1000'
    local all
    all=$(grep -o '"id":[0-9]*' <<< "$body" | cut -d: -f2 | tr '\n' ' ')
    [ "${seen[*]} " = "$all" ] || fail "paging by link: expected ids $all, got ${seen[*]}"
    local previous=0 id
    for id in $all; do
        ((id > previous)) || fail "GET /users not in id order: $all"
        previous=$id
    done
    [ "${#seen[@]}" = 23 ] || fail "paging by link: expected 23 users, got ${#seen[@]}"
    pass "following link with limit=7 visits all 23 users once, in id order ($pages pages)"
}

# Acknowledged writes survive a SIGKILL; the counter does not hand an id out
# again; the deleted seed user is not seeded again.
durability() {
    check POST /users '{"name":"Durable"}' -- 201 '~{"id":*,"name":"Durable"}'
    local durable before max
    durable=$(grep -o '"id":[0-9]*' <<< "$body" | cut -d: -f2)
    check DELETE /users/2 -- 204 ''
    send GET '/users?limit=1000'
    before=$body
    max=$(grep -o '"id":[0-9]*' <<< "$body" | cut -d: -f2 | sort -n | tail -n 1)

    stop KILL
    start
    pass "berth killed with SIGKILL and restarted on the same data directory"
    check GET "/users/$durable" -- 200 "{\"id\":$durable,\"name\":\"Durable\"}"
    check GET /users/2 -- 404 '{"error":"user 2 does not exist"}'
    check GET /users/1 -- 404 '{"error":"user 1 does not exist"}'
    check GET '/users?limit=1000' -- 200 "$before"
    check POST /users '{"name":"After"}' -- 201 '~{"id":*,"name":"After"}'
    local after
    after=$(grep -o '"id":[0-9]*' <<< "$body" | cut -d: -f2)
    ((after > max)) || fail "POST after the restart: expected an id above $max, got $after"
    pass "the id after the restart ($after) is above every id handed out before ($max)"
    stop TERM
}

[ -x "$berth" ] || { echo "FAIL: no berth binary at $berth (build it, or set BERTH)" >&2; exit 1; }
"$here/build.sh"

# One compile per variant, into the cache every server of this run uses.
for variant in service http; do
    started=$(date +%s%N)
    "$berth" compile --manifest "$here/$variant.toml" --cache-dir "$tmp/cache" > "$tmp/compile.out" 2>&1 \
        || fail "berth compile --manifest $variant.toml: $(cat "$tmp/compile.out")"
    pass "berth compile --manifest $variant.toml ($(( ($(date +%s%N) - started) / 1000000 )) ms)"
done

for variant in service http; do
    data="$tmp/data-$variant"
    mkdir -p "$data"
    : > "$tmp/$variant.transcript"
    start
    pass "serving build/$variant.wasm at $base"
    api
    durability
done

variant=both
if ! diff -u "$tmp/service.transcript" "$tmp/http.transcript" > "$tmp/diff"; then
    cat "$tmp/diff" >&2
    fail "the two variants answered the same requests differently (diff above: service, then http)"
fi
pass "service and http gave the same status, body and headers for all $(wc -l < "$tmp/service.transcript") requests"

echo "js-users: $checks checks passed"
