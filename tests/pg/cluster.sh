#!/usr/bin/env bash
# A throw-away PostgreSQL server for the store's tests.
#
#   tests/pg/cluster.sh start DIR   make a cluster in DIR, start it on a free
#                                   loopback port with a user `berth` (a fresh
#                                   random password) owning a database `berth`;
#                                   print its URL and write it to DIR/url
#   tests/pg/cluster.sh stop DIR    stop it (fast shutdown: clients are cut off)
#   tests/pg/cluster.sh bindir      print where PostgreSQL's binaries are, or
#                                   exit 1 saying they are missing
#
# As root the server runs as the `postgres` user (PostgreSQL refuses to run as
# root); otherwise as the caller. It only listens on 127.0.0.1 and a socket
# in DIR. The cluster's default collation is ICU's English one when
# PostgreSQL has ICU, so the tests would catch a key column that does not
# sort by bytes ("C"). Nothing is synced at initdb (the data is thrown away),
# but the server itself runs with fsync on, as in production.
set -euo pipefail

die() {
    echo "tests/pg/cluster.sh: $*" >&2
    exit 1
}

# The first directory holding initdb, pg_ctl and psql: pg_config's, then the
# newest of Debian's /usr/lib/postgresql/*/bin, then wherever PATH's initdb is.
bindir() {
    local dir
    local candidates=()
    if command -v pg_config >/dev/null; then
        candidates+=("$(pg_config --bindir)")
    fi
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    if command -v initdb >/dev/null; then
        candidates+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
    fi
    for dir in "${candidates[@]}"; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/psql" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# Run a command as the user the server runs as.
as_server() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local dir=$1 bin password port log tries
    bin=$(bindir) || die "PostgreSQL's binaries (initdb, pg_ctl, psql) were not found: install PostgreSQL (apt-get install postgresql)"
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        die "running as root needs a \`postgres\` user to run the server as"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -e "$dir/data" ] && die "$dir already holds a cluster: stop it and remove it first"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    # Commands run as the server's user need a working directory it can enter.
    cd "$dir"

    # The C locale's UTF-8 variant where the system has it (glibc 2.35+).
    local locale=(--locale=C)
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
        locale=(--locale=C.UTF-8)
    fi
    if "$bin/pg_config" --configure 2>/dev/null | grep -q -- --with-icu; then
        locale+=(--locale-provider=icu --icu-locale=en)
    fi
    as_server "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 "${locale[@]}" \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
EOF

    # A port that looks free may be taken before the server binds it: then
    # the start fails and another port is tried.
    log="$dir/server.log"
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 20000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        if as_server "$bin/pg_ctl" start -w -t 30 -D "$dir/data" -l "$log" -o "-p $port" >/dev/null; then
            break
        fi
        grep -q "could not bind\|already in use" "$log" 2>/dev/null || { cat "$log" >&2; die "the server did not start"; }
        port=
    done
    [ -n "$port" ] || die "no free port found in $tries tries"

    password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    as_server "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE berth LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE berth OWNER berth" >/dev/null
    local url="postgres://berth:$password@127.0.0.1:$port/berth"
    (umask 077 && echo "$url" >"$dir/url")
    echo "$url"
}

stop() {
    local dir=$1 bin
    [ -d "$dir/data" ] || return 0
    bin=$(bindir) || die "PostgreSQL's binaries were not found"
    cd "$dir"
    if as_server "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
        as_server "$bin/pg_ctl" stop -w -D "$dir/data" -m fast >/dev/null
    fi
}

case "${1:-}" in
    start | stop)
        [ $# -eq 2 ] || die "usage: $0 $1 DIR"
        "$1" "$2"
        ;;
    bindir)
        bindir || die "PostgreSQL's binaries (initdb, pg_ctl, psql) were not found"
        ;;
    *)
        die "usage: $0 start DIR | stop DIR | bindir"
        ;;
esac
