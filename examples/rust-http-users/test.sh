#!/usr/bin/env bash
# End-to-end test of examples/rust-http-users against the real `berth`
# binary (env BERTH, default target/release/berth from the repo root):
#   1. one request sequence against this example (variant `http`) and
#      against Berth's own components/users (variant `service`), each on a
#      fresh store: every answer has the expected status, and the same
#      status, body and headers (content-type, location, link, allow) as the
#      reference;
#   2. on another fresh store: headers and paging in detail, 20 POSTs give
#      20 ids, and after a SIGKILL and a restart on the same data directory
#      the acknowledged writes are there and no id is handed out again.
# Every check prints one line; the first failure exits 1 saying what was
# expected and what came. Servers bind 127.0.0.1 on a free port; every
# wait is bounded; every process started here is stopped on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BERTH=${BERTH:-target/release/berth}
case $BERTH in /*) ;; *) BERTH=$ROOT/$BERTH ;; esac
NAME=rust-http-users
READY_SECS=${READY_SECS:-120}

fail() {
    echo "FAIL - $*" >&2
    exit 1
}
[ -x "$BERTH" ] || fail "no berth binary at $BERTH; build it (cargo build --release) or set BERTH"
command -v curl >/dev/null || fail "curl is not installed"

"$HERE/build.sh"

WORK=$(mktemp -d /tmp/$NAME-test.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CHECKS=0
ok() {
    CHECKS=$((CHECKS + 1))
    echo "ok $CHECKS - $*"
}

# serve TAG MANIFEST DATA_DIR: start berth; sets PID and URL once it prints
# its `listening on` line (it does so when ready).
serve() {
    local tag=$1 manifest=$2 data=$3
    local out=$WORK/$tag.out err=$WORK/$tag.err
    mkdir -p "$data" "$WORK/cache-$tag"
    "$BERTH" serve --listen 127.0.0.1:0 --manifest "$manifest" --data "$data" \
        --cache-dir "$WORK/cache-$tag" >"$out" 2>"$err" &
    PID=$!
    PIDS+=("$PID")
    local line
    for _ in $(seq $((READY_SECS * 10))); do
        line=$(head -n 1 "$out" 2>/dev/null || true)
        case $line in
        "listening on http://"*)
            URL=${line#listening on }
            return 0
            ;;
        esac
        if ! kill -0 "$PID" 2>/dev/null; then
            cat "$err" >&2
            fail "berth ($tag) exited before it was ready"
        fi
        sleep 0.1
    done
    cat "$err" >&2
    fail "berth ($tag) was not ready within ${READY_SECS} s"
}

# req URL METHOD PATH [CT BODY]: one request; sets STATUS, BODY and the
# headers file $WORK/headers. CT: json, none (no content-type) or a value.
req() {
    local url=$1 method=$2 path=$3 args=()
    if [ $# -ge 5 ]; then
        case $4 in
        json) args+=(-H "content-type: application/json") ;;
        none) args+=(-H "content-type:") ;;
        *) args+=(-H "content-type: $4") ;;
        esac
        args+=(--data-binary "$5")
    fi
    STATUS=$(curl -sS --max-time 10 -X "$method" -o "$WORK/body" -D "$WORK/headers" \
        -w '%{http_code}' "${args[@]}" "$url$path") || STATUS="no answer (curl exit $?)"
    BODY=$(cat "$WORK/body" 2>/dev/null || true)
}

# header NAME: the value of response header NAME, empty when absent.
header() {
    grep -i "^$1:" "$WORK/headers" | head -n 1 | cut -d: -f2- | sed 's/^ *//; s/\r$//' || true
}

# expect DESC STATUS BODY [NAME=VALUE...]: the last answer had STATUS, BODY
# (`*`: any) and each header NAME with VALUE (empty VALUE: absent).
expect() {
    local desc=$1 status=$2 body=$3 h name value got
    shift 3
    [ "$STATUS" = "$status" ] || fail "$desc: expected status $status, got $STATUS (body: $BODY)"
    [ "$body" = "*" ] || [ "$BODY" = "$body" ] || fail "$desc: expected body $body, got $BODY"
    for h in "$@"; do
        name=${h%%=*}
        value=${h#*=}
        got=$(header "$name")
        [ "$got" = "$value" ] || fail "$desc: expected header $name: '$value', got '$got'"
    done
    ok "$desc"
}

# The answer as one comparable line: status, the headers that matter, body.
transcript_line() {
    echo "$STATUS ct=$(header content-type) location=$(header location) link=$(header link) allow=$(header allow) $BODY"
}

# The comparison sequence: EXPECTED_STATUS|METHOD|PATH|CT|REQUEST_BODY, CT
# `-` for no body. Both variants start on an empty store. serde reads a
# struct from a JSON array too; both refuse `[1,"Ann"]` rather than read it
# as `{"id":1,"name":"Ann"}`.
SEQUENCE=$(
    cat <<'EOF'
200|GET|/users|-|
200|GET|/users/1|-|
200|GET|/users/2|-|
200|GET|/users/01|-|
404|GET|/users/7|-|
400|GET|/users/x|-|
400|GET|/users/0|-|
400|GET|/users/-1|-|
404|GET|/users/9223372036854775807|-|
400|GET|/users/9223372036854775808|-|
201|POST|/users|json|{"name":"Ann"}
201|POST|/users|json|{"name":"  Bob  "}
201|POST|/users|json|{"id":10,"name":"Cy"}
409|POST|/users|json|{"id":10,"name":"Cy again"}
201|POST|/users|json|{"name":"Dee"}
400|POST|/users|json|{"id":0,"name":"Zero"}
400|POST|/users|json|{"id":9007199254740992,"name":"Big"}
400|POST|/users|json|{"id":-1,"name":"Negative"}
400|POST|/users|json|{"id":null,"name":"Null"}
400|POST|/users|json|{"id":"5","name":"String id"}
400|POST|/users|json|{}
400|POST|/users|json|{"name":""}
400|POST|/users|json|{"name":"   "}
400|POST|/users|json|{"name":null}
400|POST|/users|json|{"name":5}
400|POST|/users|json|{"name":"Al","age":3}
400|POST|/users|json|not json
400|POST|/users|json|
400|POST|/users|json|"Ann"
400|POST|/users|json|[]
400|POST|/users|json|[1,"Ann"]
415|POST|/users|text/plain|{"name":"Ann"}
415|POST|/users|none|{"name":"Ann"}
201|POST|/users|application/json; charset=utf-8|{"name":"Eve"}
200|GET|/users|-|
200|GET|/users/|-|
200|GET|/users?limit=2|-|
200|GET|/users?limit=2&after=2|-|
200|GET|/users?after=10|-|
200|GET|/users?after=12|-|
200|GET|/users?limit=1000|-|
200|GET|/users?limit=%32|-|
400|GET|/users?limit=0|-|
400|GET|/users?limit=1001|-|
400|GET|/users?limit=abc|-|
400|GET|/users?after=-1|-|
400|GET|/users?after=9223372036854775808|-|
405|PATCH|/users|-|
405|PUT|/users|json|{"name":"Ann"}
405|DELETE|/users|-|
204|DELETE|/users/3|-|
404|DELETE|/users/3|-|
404|GET|/users/3|-|
204|DELETE|/users/1|-|
200|GET|/users|-|
404|GET|/users/1|-|
400|DELETE|/users/x|-|
404|GET|/users/1/x|-|
404|GET|/users/1/|-|
404|GET|/usersx|-|
404|GET|/|-|
EOF
)

run_sequence() {
    local url=$1 out=$2 expected method path ct body
    : >"$out"
    while IFS='|' read -r expected method path ct body; do
        if [ "$ct" = - ]; then
            req "$url" "$method" "$path"
        else
            req "$url" "$method" "$path" "$ct" "$body"
        fi
        echo "$expected|$method $path${body:+ $body}|$(transcript_line)" >>"$out"
    done <<<"$SEQUENCE"
}

# bulk URL N: N POSTs over one keep-alive connection; prints their statuses.
bulk() {
    local url=$1 n=$2 i
    for i in $(seq "$n"); do
        printf 'url = "%s/users"\nrequest = "POST"\nheader = "content-type: application/json"\n' "$url"
        printf 'data = "{\\"name\\":\\"bulk %s\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$i"
        if [ "$i" -lt "$n" ]; then echo next; fi
    done >"$WORK/bulk.curl"
    curl -sS --max-time 120 -K "$WORK/bulk.curl"
}

# pages URL LIMIT: follow the `link` headers from /users?limit=LIMIT (at most
# 100 pages), printing each page's transcript line.
pages() {
    local url=$1 next="/users?limit=$2" n=0
    while [ -n "$next" ] && [ $n -lt 100 ]; do
        req "$url" GET "$next"
        transcript_line
        next=$(header link | sed -n 's/^<\(.*\)>; rel="next"$/\1/p')
        n=$((n + 1))
    done
}

echo "== 1. the same requests to both variants, each on an empty store"
serve http "$HERE/berth.toml" "$WORK/data-http"
HTTP_URL=$URL
serve service "$HERE/service.toml" "$WORK/data-service"
SERVICE_URL=$URL
run_sequence "$HTTP_URL" "$WORK/http.seq"
run_sequence "$SERVICE_URL" "$WORK/service.seq"
exec 3<"$WORK/service.seq"
while IFS='|' read -r expected what got; do
    IFS='|' read -r _ _ reference <&3
    case $got in
    "$expected "*) ok "http: $what -> ${got%% *}" ;;
    *) fail "http: $what: expected status $expected, got $got" ;;
    esac
    [ "$got" = "$reference" ] || fail "http and service differ on $what: http gave '$got', service gave '$reference'"
    ok "same as service: $what"
done <"$WORK/http.seq"
exec 3<&-

# Past one page of the store's key listing (1000 keys): 1100 more users,
# then every page of the listing, following the links, on both variants.
for tag in http service; do
    url=$HTTP_URL
    [ $tag = service ] && url=$SERVICE_URL
    created=$(bulk "$url" 1100 | grep -c '^201$' || true)
    [ "$created" = 1100 ] || fail "$tag: 1100 POSTs: expected 1100 answers 201, got $created"
    ok "$tag: 1100 more users created"
done
for limit in 1000 333; do
    pages "$HTTP_URL" $limit >"$WORK/http.pages"
    pages "$SERVICE_URL" $limit >"$WORK/service.pages"
    count=$(grep -o '"id":' "$WORK/http.pages" | wc -l)
    ids=$(grep -o '"id":[0-9]*' "$WORK/http.pages" | cut -d: -f2)
    [ "$count" = 1105 ] || fail "http: paging by $limit: expected 1105 users, got $count"
    [ "$ids" = "$(sort -n -u <<<"$ids")" ] || fail "http: paging by $limit: ids not strictly ascending"
    ok "http: paging by $limit visits all 1105 users once, in id order, in $(wc -l <"$WORK/http.pages") pages"
    cmp -s "$WORK/http.pages" "$WORK/service.pages" ||
        fail "http and service differ paging by $limit: $(diff "$WORK/http.pages" "$WORK/service.pages" | head -c 600)"
    ok "same as service: every page, link and body, paging by $limit"
done

echo "== 2. this example on its own, then a SIGKILL and a restart"
serve one "$HERE/berth.toml" "$WORK/data-one"
U=$URL
J='content-type=application/json'
req "$U" GET /users
expect "GET /users lists the seeds" 200 '[{"id":1,"name":"John"},{"id":2,"name":"Jane"}]' "$J" link=
req "$U" GET '/users?limit=1'
expect "GET /users?limit=1 links to the next page" 200 '[{"id":1,"name":"John"}]' "$J" \
    'link=</users?limit=1&after=1>; rel="next"'
req "$U" GET '/users?limit=1&after=1'
expect "the last page has no link" 200 '[{"id":2,"name":"Jane"}]' link=
req "$U" GET /users/1
expect "GET /users/1" 200 '{"id":1,"name":"John"}' "$J"
req "$U" GET /users/7
expect "GET /users/7 is 404" 404 '{"error":"user 7 does not exist"}' "$J"
req "$U" GET /users/x
expect "GET /users/x is 400" 400 '{"error":"invalid user id `x`: expected a positive integer below 2^63"}' "$J"
req "$U" POST /users json '{"name":"Ann"}'
expect "POST creates id 3, above the seeds" 201 '{"id":3,"name":"Ann"}' "$J" location=/users/3
req "$U" POST /users json '{"id":3,"name":"Ann"}'
expect "POST a taken id is 409" 409 '{"error":"user 3 already exists"}' "$J"
req "$U" POST /users json '{}'
expect "POST without a name is 400" 400 '{"error":"missing field `name`"}' "$J"
req "$U" POST /users json '{"name":""}'
expect "POST an empty name is 400" 400 '{"error":"field `name` must not be empty"}' "$J"
req "$U" POST /users json '[1]'
expect "POST a body that is not an object is 400" 400 '*' "$J"
req "$U" POST /users json '{"name":"Al","age":3}'
expect "POST an unknown field is 400" 400 '*' "$J"
case $BODY in *'unknown field `age`'*) ok "the 400 names the unknown field" ;; *) fail "expected the 400 to name field age, got $BODY" ;; esac
req "$U" PATCH /users
expect "PATCH /users is 405 with allow" 405 \
    '{"error":"method PATCH is not allowed here; allowed: GET, POST"}' "$J" 'allow=GET, POST'
req "$U" PATCH /users/1
expect "PATCH /users/1 is 405 with allow (no PUT here)" 405 \
    '{"error":"method PATCH is not allowed here; allowed: GET, DELETE"}' "$J" 'allow=GET, DELETE'
req "$U" GET /users/1/x
expect "an unknown path is 404" 404 '{"error":"no such resource: /users/1/x"}' "$J"
req "$U" DELETE /users/1
expect "DELETE a seed is 204" 204 ''
req "$U" DELETE /users/1
expect "DELETE it again is 404" 404 '{"error":"user 1 does not exist"}' "$J"

IDS=()
for i in $(seq 20); do
    req "$U" POST /users json "{\"name\":\"user $i\"}"
    [ "$STATUS" = 201 ] || fail "POST number $i: expected 201, got $STATUS $BODY"
    IDS+=("$(header location)")
done
DISTINCT=$(printf '%s\n' "${IDS[@]}" | sort -u | wc -l)
[ "$DISTINCT" = 20 ] || fail "20 POSTs: expected 20 distinct ids, got $DISTINCT: ${IDS[*]}"
ok "20 POSTs gave 20 distinct ids (${IDS[0]} .. ${IDS[19]})"
LAST=${IDS[19]#/users/}

kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
ok "berth killed with SIGKILL after the acknowledged writes"
serve one-again "$HERE/berth.toml" "$WORK/data-one"
U=$URL
ok "berth restarted on the same data directory"
for location in "${IDS[@]}"; do
    req "$U" GET "$location"
    [ "$STATUS" = 200 ] || fail "after the restart, GET $location: expected 200, got $STATUS $BODY"
done
ok "after the restart all 20 users are there"
req "$U" GET /users/3
expect "after the restart GET /users/3" 200 '{"id":3,"name":"Ann"}'
req "$U" GET /users/1
expect "after the restart the deleted seed stays deleted" 404 '{"error":"user 1 does not exist"}'
req "$U" GET '/users?limit=2'
expect "after the restart the list starts at Jane" 200 '[{"id":2,"name":"Jane"},{"id":3,"name":"Ann"}]' \
    'link=</users?limit=2&after=3>; rel="next"'
req "$U" POST /users json '{"name":"After"}'
NEXT=$(header location)
NEXT=${NEXT#/users/}
[ "$STATUS" = 201 ] && [ "$NEXT" -gt "$LAST" ] ||
    fail "POST after the restart: expected 201 with an id above $LAST, got $STATUS, location /users/$NEXT"
ok "after the restart the counter goes on: id $NEXT > $LAST"

echo "$NAME: $CHECKS checks passed"
