#!/usr/bin/env bash
# End-to-end test of the container image, with podman:
#   1. makes any missing base image (tests/container/base-images.sh) and
#      builds the image from the Dockerfile;
#   2. checks the image: non-root user, /data volume, port, default command,
#      nothing in it but the static binary;
#   3. runs it on a named volume, waits for /readyz, GETs /users and POSTs a
#      user;
#   4. checks that the process is not root, from the image config, the
#      container config and /proc on the host;
#   5. stops it with SIGTERM and expects a prompt exit with status 0;
#   6. runs a new container on the same volume, restricted the way the
#      Kubernetes Deployment restricts it (read-only root, no capabilities,
#      no-new-privileges, the ConfigMap's manifest), and finds the user again;
#      stops it the same way.
# It removes its containers and volume on exit, prints every check, and exits
# non-zero on the first failure. It only talks to 127.0.0.1.
#
# The defaults suit a host where podman runs as root with runc; override with
#   BERTH_IMAGE             image to build and test (localhost/berth:latest)
#   BERTH_SKIP_BUILD=1      test an image that is already built
#   PODMAN_BUILD_OPTS       extra `podman build` options
#                           (--isolation chroot --network host)
#   PODMAN_RUN_OPTS         extra `podman run` options (runc, ulimits)
#   BERTH_NETWORK=publish   publish the port with -p 127.0.0.1:PORT:8080 and
#                           keep the default command, instead of the default
#                           `host`: the host's network namespace, berth on
#                           127.0.0.1:PORT, so no traffic leaves loopback

# `check && check || fail` is meant: it fails when any check does.
# shellcheck disable=SC2015
set -euo pipefail
cd "$(dirname "$0")/../.."

image="${BERTH_IMAGE:-localhost/berth:latest}"
read -r -a build_opts <<<"${PODMAN_BUILD_OPTS:---isolation chroot --network host}"
default_run_opts="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
if [ -x /usr/sbin/runc ]; then default_run_opts="--runtime /usr/sbin/runc $default_run_opts"; fi
read -r -a run_opts <<<"${PODMAN_RUN_OPTS:-$default_run_opts}"
network="${BERTH_NETWORK:-host}"
uid=10001
ready_timeout=120 # seconds for a container to answer /readyz
stop_budget=10    # seconds SIGTERM to exit may take

run_id="berth-test-$$"
volume="$run_id-data"
work="$(mktemp -d)"
containers=()
passed=0

cleanup() {
    local c
    for c in "${containers[@]}"; do podman rm -f -v -t 0 "$c" >/dev/null 2>&1 || true; done
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    local c
    for c in "${containers[@]}"; do
        echo "--- logs of $c"
        podman logs "$c" 2>&1 | tail -n 30 || true
    done
    echo "container: $passed passed, 1 failed"
    exit 1
}
step() { printf '\n=== %s\n' "$*"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_container NAME PORT [podman run options...] -- [berth args...]
# Starts NAME detached on the volume, serving on 127.0.0.1:PORT.
run_container() {
    local name="$1" port="$2"
    shift 2
    local opts=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    local args=("$@") net=()
    if [ "$network" = host ]; then
        # The host's network: berth must listen on the chosen loopback port.
        net=(--network host)
        if [ ${#args[@]} -eq 0 ]; then args=(serve --data /data); fi
        args+=(--listen "127.0.0.1:$port")
    else
        # Published port: berth must listen on all the container's addresses.
        net=(-p "127.0.0.1:$port:8080")
        if [ ${#args[@]} -gt 0 ]; then args+=(--listen 0.0.0.0:8080); fi
    fi
    containers+=("$name")
    podman run -d --name "$name" "${run_opts[@]}" "${net[@]}" \
        -v "$volume:/data" "${opts[@]}" "$image" "${args[@]}" >/dev/null ||
        fail "podman run $name"
}

# Polls /readyz until it answers 200, the container exits, or time runs out.
wait_ready() {
    local name="$1" port="$2" start=$SECONDS state
    while [ $((SECONDS - start)) -lt "$ready_timeout" ]; do
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; then
            ok "$name ready (/readyz 200) after $((SECONDS - start)) s"
            return 0
        fi
        state="$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)"
        [ "$state" = running ] || fail "$name is $state before it became ready"
        sleep 0.2
    done
    fail "$name not ready within $ready_timeout s"
}

# http METHOD URL [curl args...]: sets $status and $body.
http() {
    local method="$1" url="$2"
    shift 2
    status="$(curl -sS --max-time 10 -o "$work/body" -w '%{http_code}' -X "$method" "$url" "$@")" ||
        fail "$method $url: no answer"
    body="$(cat "$work/body")"
}

# Sends SIGTERM (podman stop) and expects exit status 0 within the budget.
stop_cleanly() {
    local name="$1" start code
    start="$(date +%s.%N)"
    podman stop -t 30 "$name" >/dev/null || fail "podman stop $name"
    local took
    took="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")"
    code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
    [ "$code" = 0 ] || fail "$name exited with status $code after SIGTERM"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$took" "$stop_budget" ||
        fail "$name took $took s to stop (budget $stop_budget s)"
    # 143 would mean SIGTERM killed it unhandled, 137 that podman had to SIGKILL.
    ok "$name stopped by SIGTERM in $took s with exit status 0"
}

step "base images and build"
if [ "${BERTH_SKIP_BUILD:-}" != 1 ]; then
    tests/container/base-images.sh Dockerfile || fail "making the base images"
    build_start=$SECONDS
    podman build "${build_opts[@]}" -t "$image" . || fail "podman build"
    ok "built $image in $((SECONDS - build_start)) s"
fi
podman image exists "$image" || fail "no image $image"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"

step "image"
inspect() { podman image inspect --format "$1" "$image"; }
[ "$(inspect '{{.Config.User}}')" = "$uid:$uid" ] || fail "image user is '$(inspect '{{.Config.User}}')', want $uid:$uid"
ok "image runs as $uid:$uid"
grep -q '"/data"' <<<"$(inspect '{{json .Config.Volumes}}')" || fail "/data is not a volume: $(inspect '{{json .Config.Volumes}}')"
ok "/data is a volume"
grep -q '"8080/tcp"' <<<"$(inspect '{{json .Config.ExposedPorts}}')" || fail "8080 not exposed"
ok "exposes 8080/tcp"
cmd="$(inspect '{{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
[ "$cmd" = '["/berth"] ["serve","--listen","0.0.0.0:8080","--data","/data"]' ] || fail "command is $cmd"
ok "default command: $cmd"
probe="$run_id-files"
containers+=("$probe")
podman create --name "$probe" "${run_opts[@]}" "$image" >/dev/null || fail "podman create"
podman export "$probe" | tar -tv >"$work/listing"
awk '{print $NF}' "$work/listing" | sed 's|/$||' | sort >"$work/files"
podman export "$probe" | tar -x -C "$work" berth
podman rm -v "$probe" >/dev/null
unset 'containers[-1]'
files="$(grep -vE '^(\.|\./)?$' "$work/files" | sed 's|^\./||' | sort -u | tr '\n' ' ')"
# podman adds empty mount points for its own use (dev, proc, sys, etc/...).
extra="$(tr ' ' '\n' <<<"$files" | grep -vE '^(berth|data|tmp|dev|proc|sys|run|etc|etc/hosts|etc/resolv\.conf|etc/hostname|run/\.containerenv|\.containerenv)$' | grep . || true)"
[ -z "$extra" ] || fail "the image holds more than berth, /data and /tmp: $extra"
ok "the image holds only: $files"
mode_of() { awk -v f="$1" '$NF == f || $NF == f "/" || $NF == "./" f "/" {print $1, $2}' "$work/listing"; }
[ "$(mode_of tmp)" = "drwxrwxrwt 0/0" ] || fail "/tmp is '$(mode_of tmp)', want drwxrwxrwt 0/0"
ok "/tmp: $(mode_of tmp)"
[ "$(mode_of data)" = "drwxr-xr-x $uid/$uid" ] || fail "/data is '$(mode_of data)', want drwxr-xr-x $uid/$uid"
ok "/data: $(mode_of data)"
segments="$(readelf -l "$work/berth")" || fail "/berth is not an ELF file"
sections="$(readelf -S "$work/berth")"
if grep -q 'program interpreter' <<<"$segments"; then fail "/berth is dynamically linked"; fi
if grep -qE '\.(symtab|debug_info|debug_line)\b' <<<"$sections"; then fail "/berth is not stripped"; fi
ok "/berth is static and stripped ($(du -h "$work/berth" | cut -f1))"

step "first run on volume $volume"
podman volume create "$volume" >/dev/null
port="$(free_port)"
first="$run_id-1"
run_container "$first" "$port"
wait_ready "$first" "$port"
base="http://127.0.0.1:$port"
stdout="$(podman logs "$first" 2>/dev/null)"
grep -q '^listening on http://' <<<"$stdout" || fail "no 'listening on' line on stdout"
ok "stdout says: $(grep -m1 '^listening on' <<<"$stdout")"
http GET "$base/healthz"
[ "$status" = 200 ] && [ "$body" = '{"status":"ok"}' ] || fail "GET /healthz: $status $body"
ok "GET /healthz: 200 $body"
http GET "$base/users"
[ "$status" = 200 ] && grep -q '"John"' <<<"$body" && grep -q '"Jane"' <<<"$body" ||
    fail "GET /users: $status $body"
ok "GET /users: 200 $body"
http POST "$base/users" -H 'content-type: application/json' -d '{"name":"Ann"}'
[ "$status" = 201 ] && grep -q '"Ann"' <<<"$body" || fail "POST /users: $status $body"
ann_id="$(sed -n 's/.*"id":\([0-9]*\).*/\1/p' <<<"$body")"
[ -n "$ann_id" ] || fail "POST /users returned no id: $body"
ok "POST /users: 201 $body"

step "not root"
user="$(podman inspect --format '{{.Config.User}}' "$first")"
[ "$user" = "$uid:$uid" ] || fail "container user is '$user'"
ok "container config user: $user"
pid="$(podman inspect --format '{{.State.Pid}}' "$first")"
[ "$pid" -gt 0 ] 2>/dev/null || fail "no host pid for $first"
[ "$(cat "/proc/$pid/comm")" = berth ] || fail "host pid $pid is $(cat "/proc/$pid/comm"), not berth"
uids="$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
gids="$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
[ "$uids" = "$uid $uid $uid $uid" ] || fail "process $pid has uids $uids"
[ "$gids" = "$uid $uid $uid $uid" ] || fail "process $pid has gids $gids"
ok "host pid $pid (berth): real/effective/saved/fs uid $uids, gid $gids"
capeff="$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")"
[ "$capeff" = 0000000000000000 ] || fail "process $pid has effective capabilities $capeff"
ok "no effective capabilities (CapEff $capeff)"
mountpoint="$(podman volume inspect --format '{{.Mountpoint}}' "$volume")"
owner="$(stat -c '%u:%g' "$mountpoint/berth.db" 2>/dev/null)" || fail "no berth.db in the volume"
[ "$owner" = "$uid:$uid" ] || fail "berth.db is owned by $owner"
ok "the volume holds berth.db, owned by $owner"

step "SIGTERM"
stop_cleanly "$first"

step "second run on the same volume, restricted like the Kubernetes pod"
# The manifest from the ConfigMap, as Kubernetes mounts it.
sed -n '/^  berth.toml: |$/,/^[^ ]/{/^    /s/^    //p;/^$/p}' deploy/k8s/base/configmap.yaml >"$work/berth.toml"
grep -q 'builtin:users' "$work/berth.toml" || fail "could not read the manifest from deploy/k8s/base/configmap.yaml"
chmod 0644 "$work/berth.toml"
chmod 0755 "$work"
port="$(free_port)"
second="$run_id-2"
run_container "$second" "$port" \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$work/berth.toml:/etc/berth/berth.toml:ro" -- \
    serve --data /data --manifest /etc/berth/berth.toml --drain-timeout-secs 20
wait_ready "$second" "$port"
base="http://127.0.0.1:$port"
http GET "$base/users/$ann_id"
[ "$status" = 200 ] && grep -q '"Ann"' <<<"$body" || fail "GET /users/$ann_id after restart: $status $body"
ok "after restart, GET /users/$ann_id: 200 $body"
http POST "$base/orders" -H 'content-type: application/json' -d "{\"user_id\":$ann_id}"
[ "$status" = 201 ] || fail "POST /orders for user $ann_id: $status $body"
ok "POST /orders for user $ann_id: 201 $body (the ConfigMap's manifest routes and wires it)"
stop_cleanly "$second"

echo
echo "container: $passed passed, 0 failed"
