#!/usr/bin/env bash
# Build both variants of the JavaScript users service into build/:
#   build/service.wasm  Berth's own world (wit/service.wit, world `service`)
#   build/http.wasm     a standard wasi:http component using wasi:keyvalue
# componentize-js (pinned in package-lock.json) is installed on first use
# into ${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/js-users, keyed by
# the lock file's hash. A variant whose inputs did not change since its last
# build is not built again.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/js-users

say() { echo "js-users build: $*" >&2; }

# Node and npm. CI images may lack them: install them there (CI=true),
# refuse clearly anywhere else.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "${CI:-}" = true ]; then
        say "node or npm missing; CI=true, so installing them with apt-get"
        if [ "$(id -u)" -ne 0 ]; then
            say "apt-get needs root; install nodejs and npm (node >= 20) first"
            exit 1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    else
        say "node and npm are needed (node >= 20): apt-get install nodejs npm, or set CI=true to have this script do it"
        exit 1
    fi
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    say "node $(node --version) is too old: componentize-js 0.23 and its dependencies (commander 14, jco) need node >= 20; Debian 12's nodejs package is 18, Debian 13's is 20, or install node 20 from NodeSource"
    exit 1
fi

# One build at a time (test.sh and measure.sh both call this script), so
# that two runs never install into, or write, the same files together.
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock -w 900 9 || { say "another build.sh held $cache/.lock for 15 minutes; giving up"; exit 1; }

# componentize-js, installed once per lock file.
lock_hash=$(sha256sum "$here/package-lock.json" | cut -c1-16)
tools="$cache/npm-$lock_hash"
if [ ! -f "$tools/.installed" ]; then
    say "installing componentize-js into $tools (once; about a minute)"
    rm -rf "$tools"
    mkdir -p "$tools"
    cp "$here/package.json" "$here/package-lock.json" "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$tools/.installed"
fi
componentize="$tools/node_modules/.bin/componentize-js"

mkdir -p "$here/build"

# build VARIANT ENTRY WIT_DIR WORLD [componentize-js flags...]
build() {
    local variant=$1 entry=$2 wit=$3 world=$4
    shift 4
    local out="$here/build/$variant.wasm" stamp="$here/build/$variant.inputs"
    # Everything the output depends on: sources, WIT, the tool and its flags.
    local inputs
    inputs=$(
        cd "$here"
        {
            echo "$lock_hash $world $*"
            find src "$wit" -type f \( -name '*.js' -o -name '*.wit' \) -print0 | sort -z | xargs -0 sha256sum
        } | sha256sum | cut -c1-64
    )
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        say "$variant: up to date ($out)"
        return
    fi
    say "$variant: componentize-js $entry (a minute or two)"
    local started=$SECONDS
    rm -f "$stamp"
    (cd "$here" && nice -n 10 "$componentize" "$entry" --wit "$wit" --world-name "$world" "$@" --out "$out.tmp")
    [ -s "$out.tmp" ] || { say "$variant: componentize-js wrote nothing"; exit 1; }
    mv "$out.tmp" "$out"
    echo "$inputs" > "$stamp"
    say "$variant: $(du -m "$out" | cut -f1) MB in $((SECONDS - started)) s"
}

# Berth's own world has no wasi:http: turn off StarlingMonkey's fetch()
# (`http`) and fetch-event handler (`fetch-event`), which would import and
# export it. The WIT is the repository's own, not a copy.
build service src/service.js "$(realpath --relative-to="$here" "$root/wit")" service \
    --disable http fetch-event
# The fetch-event handler exports wasi:http/incoming-handler; `http` stays on
# because fetch-event needs it.
build http src/http.js wit-http http-users
