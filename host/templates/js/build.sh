#!/usr/bin/env bash
# Build build/{{name}}.wasm from src/app.js on Berth's world
# (wit/service.wit, world `service`) with componentize-js, pinned in
# tools/package-lock.json and installed on first use under
# ${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/js-users, keyed by the
# lock file's hash (where Berth's JavaScript example installs the same
# lock, so one install serves both). Unchanged inputs are not built again.
# Needs node 20 or later and npm.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/js-users
out=$here/build/{{name}}.wasm

say() { echo "build.sh: $*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "node and npm are needed (node 20 or later): apt-get install nodejs npm"
    exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    say "node $(node --version) is too old: componentize-js 0.23 needs node 20 or later"
    exit 1
fi

# One build at a time: tests may run this script in parallel, and the
# toolchain directory is shared.
mkdir -p "$cache" "$here/build"
exec 9> "$cache/.lock"
flock -w 900 9 || { say "another build held $cache/.lock for 15 minutes; giving up"; exit 1; }

lock_hash=$(sha256sum "$here/tools/package-lock.json" | cut -c1-16)
tools=$cache/npm-$lock_hash
if [ ! -f "$tools/.installed" ]; then
    say "installing componentize-js into $tools (once; about a minute)"
    rm -rf "$tools"
    mkdir -p "$tools"
    cp "$here/tools/package.json" "$here/tools/package-lock.json" "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$tools/.installed"
fi

stamp=$(cat "$here/tools/package-lock.json" "$here"/src/*.js "$here"/wit/*.wit | sha256sum | cut -d' ' -f1)
if [ -f "$out" ] && [ -f "$out.inputs" ] && [ "$(cat "$out.inputs")" = "$stamp" ]; then
    say "up to date: $out"
    exit 0
fi
rm -f "$out.inputs"
# Berth's world has no wasi:http: turn off StarlingMonkey's fetch() and
# fetch-event handler, which would import and export it.
(cd "$here" && "$tools/node_modules/.bin/componentize-js" src/app.js --wit wit --world-name service \
    --disable http fetch-event --out "$out.tmp")
[ -s "$out.tmp" ] || { say "componentize-js wrote nothing"; exit 1; }
mv "$out.tmp" "$out"
echo "$stamp" > "$out.inputs"
say "built $out"
