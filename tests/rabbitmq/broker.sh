#!/usr/bin/env bash
# A throw-away RabbitMQ node for the broker's tests.
#
#   tests/rabbitmq/broker.sh start DIR    make a node with all its state in
#                                         DIR, start it on free loopback ports
#                                         with a user `berth` (a fresh random
#                                         password) allowed everything on a
#                                         vhost `berth`; print its URL and
#                                         write it to DIR/url
#   tests/rabbitmq/broker.sh stop DIR     stop it and wait until it has exited
#                                         (does nothing if it is not running)
#   tests/rabbitmq/broker.sh resume DIR   start the same node again after a
#                                         stop: same ports, user and data, so
#                                         durable queues keep their messages
#   tests/rabbitmq/broker.sh vhost DIR NAME
#                                         add a vhost NAME on that node, the
#                                         user allowed everything on it; print
#                                         its URL
#   tests/rabbitmq/broker.sh drop-vhost DIR NAME
#                                         delete it, queues and all
#   tests/rabbitmq/broker.sh ctl DIR ARGS...
#                                         rabbitmqctl ARGS on that node
#   tests/rabbitmq/broker.sh bindir       print where rabbitmq-server and
#                                         rabbitmqctl are, or exit 1 saying
#                                         they are missing
#
# The node shares nothing with a system RabbitMQ: its own name
# (berth-test-RANDOM@localhost), Erlang cookie (HOME is DIR), configuration,
# plugins file (none enabled), data, logs and its own epmd on a private port,
# stopped with it, so no epmd of another node is ever touched. Everything
# listens on 127.0.0.1 only. There is no `guest` user (nor `/` vhost): the
# only way in is the URL's. As root the node runs as the `rabbitmq` user and
# DIR belongs to it; otherwise as the caller. A start takes 5 to 20 s (the
# Erlang node boots), a stop 2 to 3 s.
set -euo pipefail

die() {
    echo "tests/rabbitmq/broker.sh: $*" >&2
    exit 1
}

# The first directory holding the real rabbitmq-server and rabbitmqctl (not
# Debian's wrapper in /usr/sbin, which runs the system node's setup): the
# newest of Debian's versioned sbin folders, then wherever PATH's are.
bindir() {
    local dir
    local candidates=()
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | sort -V -r)
    if command -v rabbitmq-server >/dev/null; then
        candidates+=("$(dirname "$(readlink -f "$(command -v rabbitmq-server)")")")
    fi
    for dir in "${candidates[@]}"; do
        if [ -x "$dir/rabbitmq-server" ] && [ -x "$dir/rabbitmqctl" ] &&
            ! grep -q rabbitmq-script-wrapper "$dir/rabbitmq-server" 2>/dev/null; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# Run a command as the user the node runs as, with the node's environment.
runas=()
if [ "$(id -u)" = 0 ]; then
    runas=(runuser -u rabbitmq --)
fi
as_server() {
    "${runas[@]}" env "${node_env[@]}" "$@"
}

# A loopback port nothing listens on (it may still be taken before it is
# bound; callers retry or say so).
free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free loopback port found"
}

# Reads DIR/settings (written by start) and sets node_env, the environment
# every command of this node runs with.
load() {
    local dir=$1
    [ -f "$dir/settings" ] || die "$dir holds no node: make one with \`$0 start $dir\`"
    # shellcheck source=/dev/null # written by start below
    . "$dir/settings"
    # Unset only if start was cut short before the first launch.
    epmd_port=${epmd_port:-}
    node_env=(
        HOME="$dir"
        RABBITMQ_NODENAME="$node"
        RABBITMQ_USE_LONGNAME=false
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$port"
        RABBITMQ_DIST_PORT="$dist_port"
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$dir/mnesia"
        RABBITMQ_LOG_BASE="$dir/log"
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
        RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand"
        ERL_EPMD_PORT="$epmd_port"
        ERL_EPMD_ADDRESS=127.0.0.1
    )
}

ctl() {
    as_server "$bin/rabbitmqctl" -q -n "$node" "$@"
}

# Whether the node's process (from its pid file) is alive.
running() {
    local pid
    pid=$(cat "$dir/rabbitmq.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
    local dir=$1 node password dist_port tries
    bin=$(bindir) || die "RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found: install RabbitMQ (apt-get install rabbitmq-server)"
    if [ "$(id -u)" = 0 ] && ! id rabbitmq >/dev/null 2>&1; then
        die "running as root needs a \`rabbitmq\` user to run the node as"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -e "$dir/settings" ] && die "$dir already holds a node: resume it, or stop it and remove it first"
    chmod 700 "$dir"

    node="berth-test-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')@localhost"
    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    # No plugins (the management UI is not needed), and nothing read from
    # /etc/rabbitmq.
    echo '[].' >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    mkdir -p "$dir/mnesia" "$dir/log"
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie")
    chmod 400 "$dir/.erlang.cookie"

    # A port that looks free may be taken before the node binds it: then the
    # node exits at boot and other ports are tried.
    for tries in 1 2 3 4 5; do
        port=$(free_port)
        dist_port=$(free_port)
        [ "$dist_port" != "$port" ] || continue
        cat >"$dir/settings" <<EOF
node=$node
port=$port
dist_port=$dist_port
EOF
        # The first boot makes the vhost and the user from default_*,
        # instead of `guest` on `/`: quicker than rabbitmqctl calls (a
        # second or two each), and there never is a `guest` to delete.
        (umask 077 && cat >"$dir/rabbitmq.conf") <<EOF
listeners.tcp.1 = 127.0.0.1:$port
distribution.listener.interface = 127.0.0.1
log.console = false
log.file.level = info
default_vhost = berth
default_user = berth
default_pass = $password
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
EOF
        if [ "$(id -u)" = 0 ]; then
            chown -R rabbitmq: "$dir"
        fi
        launch "$dir" && break
        stop_epmd
        grep -qs eaddrinuse "$dir"/log/*.log || {
            tail -n 30 "$dir/log/console.log" >&2
            die "the node did not start (its logs are in $dir/log)"
        }
        port=
    done
    [ -n "$port" ] || die "no free ports found in $tries tries"

    local url="amqp://berth:$password@127.0.0.1:$port/berth"
    (umask 077 && echo "$url" >"$dir/url")
    echo "$url"
}

resume() {
    local dir=$1
    bin=$(bindir) || die "RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found"
    [ -f "$dir/settings" ] || die "$dir holds no node: make one with \`$0 start $dir\`"
    dir=$(cd "$dir" && pwd)
    load "$dir"
    running && die "the node in $dir is already running"
    # A node that was killed, rather than stopped, leaves its epmd behind.
    stop_epmd
    launch "$dir" || {
        stop_epmd
        tail -n 30 "$dir/log/console.log" >&2
        die "the node did not start again (its logs are in $dir/log)"
    }
    cat "$dir/url"
}

# Starts the node DIR/settings describes, with a private epmd on a fresh
# port, and waits until it accepts connections; returns 1 if the node exited
# instead (a port taken, say).
launch() {
    local dir=$1 child
    sed -i '/^epmd_port=/d' "$dir/settings"
    echo "epmd_port=$(free_port)" >>"$dir/settings"
    if [ "$(id -u)" = 0 ]; then
        chown rabbitmq: "$dir/settings"
    fi
    load "$dir"
    # Commands run as the node's user need a working directory it can enter.
    cd "$dir"
    rm -f "$dir/rabbitmq.pid"
    # Its own session, so a Ctrl-C meant for the caller does not reach it;
    # the caller stops it. Erlang starts the private epmd itself.
    setsid "${runas[@]}" env "${node_env[@]}" "$bin/rabbitmq-server" >>"$dir/log/console.log" 2>&1 </dev/null &
    child=$!
    # Until the node writes its pid file and boots, await_startup cannot
    # reach it.
    local deadline=$((SECONDS + 90))
    until running && ctl await_startup --timeout 30 >/dev/null 2>&1; do
        kill -0 "$child" 2>/dev/null || return 1
        if [ $SECONDS -ge $deadline ]; then
            stop "$dir"
            die "the node did not start in 90 s (its logs are in $dir/log)"
        fi
        sleep 0.2
    done
}

stop() {
    local dir=$1 pid
    [ -f "$dir/settings" ] || return 0
    dir=$(cd "$dir" && pwd)
    load "$dir"
    cd "$dir"
    if running; then
        pid=$(cat "$dir/rabbitmq.pid")
        bin=$(bindir) || die "RabbitMQ's binaries were not found"
        # `stop PIDFILE` returns once that process has exited; if the CLI
        # cannot reach the node, the node is told to stop by signal instead.
        ctl stop "$dir/rabbitmq.pid" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    stop_epmd
}

# Make the node in DIR the one `ctl` talks to, from a directory its user
# can enter.
attach() {
    bin=$(bindir) || die "RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found"
    load "$(cd "$1" && pwd)"
    cd "$1"
}

# A virtual host NAME on the running node in DIR, on which the node's user
# may do everything; prints its URL. Tests running side by side each take
# one, so they never share a queue.
vhost() {
    local dir name=$2
    dir=$(cd "$1" && pwd)
    attach "$dir"
    ctl add_vhost "$name" >/dev/null
    ctl set_permissions -p "$name" berth '.*' '.*' '.*' >/dev/null
    sed "s#/[^/]*\$#/$name#" "$dir/url"
}

# Delete the virtual host NAME, with its queues and messages.
drop_vhost() {
    local dir name=$2
    dir=$(cd "$1" && pwd)
    attach "$dir"
    ctl delete_vhost "$name" >/dev/null
}

# rabbitmqctl ARGS... on the running node in DIR (a test reads the
# topology berth declared with `list_bindings`, `list_queues`).
node_ctl() {
    attach "$1"
    shift
    ctl "$@"
}

# Stops the epmd on the node's private port, which served only this node
# (epmd refuses while a node is still registered with it).
stop_epmd() {
    [ -n "$epmd_port" ] || return 0
    as_server "$(dirname "$(readlink -f "$(command -v erl)")")/epmd" \
        -port "$epmd_port" -kill >/dev/null 2>&1 || true
}

case "${1:-}" in
    start | stop | resume)
        [ $# -eq 2 ] || die "usage: $0 $1 DIR"
        "$1" "$2"
        ;;
    vhost | drop-vhost)
        [ $# -eq 3 ] || die "usage: $0 $1 DIR NAME"
        "${1/-/_}" "$2" "$3"
        ;;
    ctl)
        [ $# -ge 3 ] || die "usage: $0 ctl DIR RABBITMQCTL-ARGS..."
        shift
        node_ctl "$@"
        ;;
    bindir)
        bindir || die "RabbitMQ's binaries (rabbitmq-server, rabbitmqctl) were not found: install RabbitMQ (apt-get install rabbitmq-server)"
        ;;
    *)
        die "usage: $0 start DIR | stop DIR | resume DIR | vhost DIR NAME | drop-vhost DIR NAME | ctl DIR ARGS... | bindir"
        ;;
esac
