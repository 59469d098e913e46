#!/usr/bin/env bash
# End-to-end test of both variants of the Python users service against the
# real berth binary ($BERTH, default target/release/berth under the
# repository root): builds them (build.sh), compiles each once into one
# compile cache, then serves each on a free loopback port with a fresh data
# directory and checks the whole API with curl, a SIGKILL and restart on the
# same data, and that both variants answer the same request sequence alike.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BERTH=${BERTH:-target/release/berth}
[[ $BERTH == /* ]] || BERTH="$root/$BERTH"
NAME=python-users
READY_SECS=${READY_SECS:-120}   # a cold compile of a Python component takes tens of seconds

checks=0
pid=
work=$(mktemp -d "${TMPDIR:-/tmp}/$NAME-test.XXXXXX")

cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    printf 'FAIL %s\n' "$1"
    shift
    for line in "$@"; do printf '     %s\n' "$line"; done
    if [[ -n ${log:-} && -f $log ]]; then
        echo "     last lines of berth's log ($log):"
        tail -n 15 "$log" | sed 's/^/       /'
    fi
    exit 1
}

pass() {
    checks=$((checks + 1))
    printf 'ok   %s\n' "$1"
}

[[ -x $BERTH ]] || fail "berth binary" "expected an executable at $BERTH (set BERTH)"
command -v curl >/dev/null || fail "curl" "expected curl on PATH"

"$here/build.sh"

# One compile cache for the whole run, filled once per variant, so every
# start below (and the restart after SIGKILL) loads compiled code. Each
# variant has its own directory in it: `berth serve` deletes the entries of
# its cache directory that its manifest does not use. COMPILE_CACHE names a
# cache to keep across runs (a rerun then compiles nothing); by default the
# run's own, which it deletes.
caches=${COMPILE_CACHE:-$work/cache}
for variant in service http; do
    start_ns=$(date +%s%N)
    "$BERTH" compile --manifest "$here/$variant.toml" --cache-dir "$caches/$variant" >"$work/compile-$variant.out" 2>&1 ||
        fail "berth compile $variant" "expected exit 0, got: $(tail -n 5 "$work/compile-$variant.out")"
    pass "berth compile $variant.toml ($((($(date +%s%N) - start_ns) / 1000000)) ms)"
done

# start VARIANT DATA_DIR: serve the variant and set $base to its address.
start() {
    local variant=$1 data=$2 out="$work/serve-$1.out" i
    log="$work/serve-$variant.log"
    : >"$out"
    "$BERTH" serve --listen 127.0.0.1:0 --manifest "$here/$variant.toml" \
        --data "$data" --cache-dir "$caches/$variant" >"$out" 2>>"$log" &
    pid=$!
    base=
    for ((i = 0; i < READY_SECS * 10; i++)); do
        if base=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$out") && [[ -n $base ]]; then
            break
        fi
        kill -0 "$pid" 2>/dev/null || fail "berth serve $variant" "expected it to start, it exited"
        sleep 0.1
    done
    [[ -n $base ]] || fail "berth serve $variant" "expected 'listening on' within ${READY_SECS} s"
    pass "berth serve $variant.toml is listening on $base"
}

# Send a request: req METHOD PATH [JSON_BODY [CONTENT_TYPE]]. Sets $status,
# $body and $headers (a file), and appends what both variants must agree on
# to the transcript: the status, the body and the headers the API defines.
req() {
    local method=$1 path=$2 data=${3-} type=${4-application/json}
    local args=(-s -o "$work/body" -D "$work/headers" -w '%{http_code}' --max-time 10 -X "$method")
    if [[ $# -ge 3 ]]; then
        args+=(--data-binary "$data")
        [[ -n $type ]] && args+=(-H "content-type: $type")
    fi
    status=$(curl "${args[@]}" "$base$path") || status="(curl failed: $?)"
    body=$(cat "$work/body")
    headers="$work/headers"
    {
        printf '%s %s %s -> %s %s\n' "$method" "$path" "$data" "$status" "$body"
        for name in content-type location link allow; do
            printf '    %s: %s\n' "$name" "$(header "$name")"
        done
    } >>"$transcript"
}

# The value of response header NAME (case-insensitive), without the CR.
header() {
    grep -i "^$1:" "$headers" | head -n 1 | cut -d: -f2- | sed 's/^ *//' | tr -d '\r' || true
}

# expect STATUS [BODY]: check the last response, and that any body is JSON.
expect() {
    local what="$method_path"
    [[ $status == "$1" ]] || fail "$what" "expected status $1, got $status" "body: $body"
    if [[ $# -ge 2 && $body != "$2" ]]; then
        fail "$what" "expected body $2" "got      $body"
    fi
    if [[ $1 != 204 ]]; then
        [[ $(header content-type) == application/json ]] ||
            fail "$what" "expected content-type application/json, got '$(header content-type)'"
    else
        [[ -z $body ]] || fail "$what" "expected no body, got $body"
    fi
}

expect_header() {
    local got
    got=$(header "$1")
    [[ $got == "$2" ]] || fail "$method_path" "expected header $1: $2" "got             $1: $got"
}

# check DESCRIPTION METHOD PATH [BODY] -- STATUS [RESPONSE_BODY] [-- NAME VALUE ...]
check() {
    local desc=$1
    shift
    local req_args=() exp_args=() hdr_args=()
    while [[ $1 != -- ]]; do req_args+=("$1"); shift; done
    shift
    while [[ $# -gt 0 && $1 != -- ]]; do exp_args+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    hdr_args=("$@")
    method_path="${req_args[0]} ${req_args[1]}${req_args[2]+ ${req_args[2]}}"
    req "${req_args[@]}"
    expect "${exp_args[@]}"
    while [[ ${#hdr_args[@]} -gt 0 ]]; do
        expect_header "${hdr_args[0]}" "${hdr_args[1]}"
        hdr_args=("${hdr_args[@]:2}")
    done
    pass "[$variant] $desc: $method_path -> $status${exp_args[1]+ $body}"
}

# Both variants run this same sequence, each on an empty data directory.
api() {
    local data=$work/data-$variant
    transcript="$work/transcript-$variant"
    : >"$transcript"
    mkdir -p "$data"
    start "$variant" "$data"

    check "seeded on first use" GET /users -- 200 '[{"id":1,"name":"John"},{"id":2,"name":"Jane"}]' -- link ''
    check "a page of one, with a link to the next" GET '/users?limit=1' -- 200 '[{"id":1,"name":"John"}]' \
        -- link '</users?limit=1&after=1>; rel="next"'
    check "the last page has no link" GET '/users?limit=1&after=1' -- 200 '[{"id":2,"name":"Jane"}]' -- link ''
    check "past the end" GET '/users?after=2' -- 200 '[]' -- link ''
    check "limit below range" GET '/users?limit=0' -- 400 \
        '{"error":"invalid query parameter `limit=0`: expected an integer from 1 to 1000"}'
    check "limit above range" GET '/users?limit=1001' -- 400 \
        '{"error":"invalid query parameter `limit=1001`: expected an integer from 1 to 1000"}'
    check "after not a number" GET '/users?after=x' -- 400 \
        '{"error":"invalid query parameter `after=x`: expected an integer from 0 to 9223372036854775807"}'
    check "a seeded user" GET /users/1 -- 200 '{"id":1,"name":"John"}'
    check "an unknown user" GET /users/7 -- 404 '{"error":"user 7 does not exist"}'
    check "an id that is not a number" GET /users/x -- 400 \
        '{"error":"invalid user id `x`: expected a positive integer below 2^63"}'
    check "id 0" GET /users/0 -- 400 '{"error":"invalid user id `0`: expected a positive integer below 2^63"}'
    check "id 2^63" GET /users/9223372036854775808 -- 400 \
        '{"error":"invalid user id `9223372036854775808`: expected a positive integer below 2^63"}'
    check "create" POST /users '{"name":"Ann"}' -- 201 '{"id":3,"name":"Ann"}' -- location /users/3
    check "read it back" GET /users/3 -- 200 '{"id":3,"name":"Ann"}'
    check "create with a chosen id" POST /users '{"id":10,"name":"Bob"}' -- 201 '{"id":10,"name":"Bob"}' \
        -- location /users/10
    check "a taken id" POST /users '{"id":10,"name":"Bo"}' -- 409 '{"error":"user 10 already exists"}'
    check "a seeded id is taken" POST /users '{"id":2,"name":"Jo"}' -- 409 '{"error":"user 2 already exists"}'
    check "the counter skips past chosen ids" POST /users '{"name":"Cy"}' -- 201 '{"id":11,"name":"Cy"}' \
        -- location /users/11
    check "a body that is not JSON" POST /users 'nope' -- 400
    check "a body that is not an object" POST /users '["Ann"]' -- 400
    check "a missing name" POST /users '{}' -- 400 '{"error":"missing field `name`"}'
    check "a null name" POST /users '{"name":null}' -- 400 '{"error":"missing field `name`"}'
    check "an empty name" POST /users '{"name":""}' -- 400 '{"error":"field `name` must not be empty"}'
    check "a blank name" POST /users '{"name":"  "}' -- 400 '{"error":"field `name` must not be empty"}'
    check "an unknown field" POST /users '{"name":"Ann","admin":true}' -- 400 \
        '{"error":"unknown field `admin`, expected `id` or `name`"}'
    check "a name that is not a string" POST /users '{"name":5}' -- 400
    check "id 0 in the body" POST /users '{"id":0,"name":"Z"}' -- 400 \
        '{"error":"field `id` must be a positive integer"}'
    check "a body that is not JSON by its type" POST /users '{"name":"Ann"}' text/plain -- 415 \
        '{"error":"expected content-type application/json, got `text/plain`"}'
    check "a method the list does not allow" PATCH /users -- 405 \
        '{"error":"method PATCH is not allowed here; allowed: GET, POST"}' -- allow 'GET, POST'
    check "a method a user does not allow" PUT /users/1 '{"name":"J"}' -- 405 \
        '{"error":"method PUT is not allowed here; allowed: GET, DELETE"}' -- allow 'GET, DELETE'
    check "an unknown path under /users" GET /users/1/friends -- 404 \
        '{"error":"no such resource: /users/1/friends"}'
    check "delete" DELETE /users/3 -- 204
    check "delete again" DELETE /users/3 -- 404 '{"error":"user 3 does not exist"}'
    check "a deleted user is gone" GET /users/3 -- 404 '{"error":"user 3 does not exist"}'
    check "delete a seeded user" DELETE /users/1 -- 204
    check "a deleted seed is not seeded again" GET /users -- 200 \
        '[{"id":2,"name":"Jane"},{"id":10,"name":"Bob"},{"id":11,"name":"Cy"}]'

    # Durability: acknowledged writes survive a SIGKILL, and the counter
    # does not hand out an id again, even one whose user was deleted.
    check "create before the crash" POST /users '{"name":"Dee"}' -- 201 '{"id":12,"name":"Dee"}' -- location /users/12
    check "delete the newest before the crash" DELETE /users/12 -- 204
    check "create before the crash" POST /users '{"name":"Eve"}' -- 201 '{"id":13,"name":"Eve"}' -- location /users/13
    req GET '/users?limit=1000'
    local before=$body
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    pass "[$variant] SIGKILL berth"
    start "$variant" "$data"
    method_path="GET /users?limit=1000 after the restart"
    req GET '/users?limit=1000'
    expect 200 "$before"
    pass "[$variant] after SIGKILL and restart, every acknowledged write is there: $body"
    check "the user created before the crash" GET /users/13 -- 200 '{"id":13,"name":"Eve"}'
    check "the counter does not reuse an id" POST /users '{"name":"Fay"}' -- 201 '{"id":14,"name":"Fay"}' -- location /users/14

    # 20 creates at once: 20 distinct ids, all new. Which ones is up to the
    # store (a request the host runs again leaves a gap), so from here on
    # the transcript records what must hold rather than the exact bodies.
    local i ids
    for ((i = 0; i < 20; i++)); do
        curl -s --max-time 20 -X POST -H 'content-type: application/json' \
            --data-binary '{"name":"Par"}' "$base/users" >"$work/par-$i" &
    done
    wait_for_curls
    ids=$(for ((i = 0; i < 20; i++)); do
        # A body has no final newline: add one, so the ids stay apart.
        sed -n 's/^{"id":\([0-9]*\),"name":"Par"}$/\1/p' "$work/par-$i"; echo
    done | grep . | sort -n | uniq)
    [[ $(wc -l <<<"$ids") == 20 && $(head -n 1 <<<"$ids") -gt 14 ]] ||
        fail "[$variant] 20 concurrent POSTs" "expected 20 distinct ids above 14, got: $(cat "$work"/par-* | tr '\n' ' ')"
    pass "[$variant] 20 concurrent POSTs -> 20 distinct ids above 14 ($(head -n 1 <<<"$ids")..$(tail -n 1 <<<"$ids"))"
    echo "20 concurrent POSTs: 20 distinct ids above 14" >>"$transcript"

    # Following the links visits every user once, in id order.
    local next='/users?limit=7' seen=() pages=0 transcript_was=$transcript
    transcript=/dev/null
    while [[ -n $next && $pages -lt 20 ]]; do
        method_path="GET $next"
        req GET "$next"
        expect 200
        seen+=($(grep -o '"id":[0-9]*' <<<"$body" | cut -d: -f2))
        next=$(header link | sed -n 's/^<\(.*\)>; rel="next"$/\1/p')
        pages=$((pages + 1))
    done
    local expected
    expected="2 10 11 13 14 $(tr '\n' ' ' <<<"$ids")"
    [[ "${seen[*]} " == "$expected" ]] ||
        fail "[$variant] paging with limit=7" "expected ids $expected" "got          ${seen[*]}"
    pass "[$variant] following link headers with limit=7: ${#seen[@]} users in $pages pages, in id order"
    method_path="GET /users?limit=1000&after=14"
    req GET '/users?limit=1000&after=14'
    expect 200
    [[ $(grep -o '"name":"Par"' <<<"$body" | wc -l) == 20 && -z $(header link) ]] ||
        fail "[$variant] $method_path" "expected the 20 new users and no link" "got $body"
    pass "[$variant] one page of 1000 after 14: the 20 new users, no link"
    transcript=$transcript_was
    echo "paging: ${#seen[@]} users in $pages pages" >>"$transcript"

    kill -TERM "$pid"
    local t
    for ((t = 0; t < 100; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "[$variant] SIGTERM" "expected berth to exit within 10 s"
    wait "$pid" || fail "[$variant] SIGTERM" "expected exit 0, got $?"
    pid=
    pass "[$variant] SIGTERM: berth drains and exits 0"
}

# Wait for the background curls, bounded: each has --max-time 20.
wait_for_curls() {
    local job
    for job in $(jobs -p); do
        [[ $job == "$pid" ]] && continue
        wait "$job" || true
    done
}

for variant in service http; do
    api
done

if ! diff -u "$work/transcript-service" "$work/transcript-http" >"$work/transcript.diff"; then
    fail "the two variants answer alike" "expected the same status, body and headers for every request" \
        "$(head -n 40 "$work/transcript.diff")"
fi
pass "both variants gave the same status, body and headers for all $(grep -c -- ' -> ' "$work/transcript-service") requests"

echo "$NAME: $checks checks passed"
