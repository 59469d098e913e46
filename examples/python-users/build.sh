#!/usr/bin/env bash
# Build both variants of the Python users service into build/:
#   build/service.wasm  Berth's own world (wit/service.wit, world `service`)
#   build/http.wasm     wasi:http/proxy + wasi:keyvalue (wit/world.wit here)
#
# componentize-py (pinned in requirements.txt) is installed on first use into
# a virtualenv under ${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}; nothing
# is installed globally. A variant whose inputs have not changed since its
# last build is not built again. Needs python3 (3.9 or later) with venv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$here/build"
version=$(sed -n 's/^componentize-py==//p' "$here/requirements.txt")
cache=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}
venv="$cache/python/componentize-py-$version"
cpy="$venv/bin/componentize-py"

say() { printf 'build.sh: %s\n' "$*" >&2; }

install_toolchain() {
    command -v python3 >/dev/null || { say "python3 is required (apt-get install python3)"; exit 1; }
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [[ ${CI:-} == true && $(id -u) == 0 ]]; then
            say "python3 has no venv module; CI=true, so installing python3-venv with apt-get"
            apt-get install -y python3-venv
        else
            say "python3 cannot create virtualenvs: install python3-venv (apt-get install python3-venv) and run again"
            exit 1
        fi
    fi
    say "installing componentize-py $version into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    "$cpy" --version >/dev/null
    # Only a finished install is marked, so an interrupted one starts over.
    touch "$venv/.installed"
}

if [[ ! -f $venv/.installed ]]; then
    install_toolchain
fi

mkdir -p "$build"

# The http variant's WIT: this example's world and the standard wasi:http
# 0.2.12 packages it vendors, plus the wasi:keyvalue draft from Berth's own
# host/wit-keyvalue, so the interface it imports is the one Berth implements.
rm -rf "$build/wit-http"
mkdir -p "$build/wit-http/deps"
cp "$here/wit/world.wit" "$build/wit-http/"
cp "$here"/wit/deps/*.wit "$build/wit-http/deps/"
cp "$root/host/wit-keyvalue/store.wit" "$build/wit-http/deps/keyvalue.wit"

# build VARIANT WIT_DIR WORLD APP_MODULE
build() {
    local variant=$1 wit=$2 world=$3 app=$4 out="$build/$1.wasm" stamp
    stamp=$( { echo "$version $world $app"; cat "$here/build.sh" "$here"/src/*.py; find "$wit" -name '*.wit' | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
    if [[ -f $out && -f $out.inputs && $(cat "$out.inputs") == "$stamp" ]]; then
        say "$variant: up to date ($out)"
        return
    fi
    say "$variant: componentize-py -w $world $app -> $out"
    rm -f "$out.inputs"
    # From a copy of the sources, with no virtualenv in sight, so that
    # componentize-py bundles this example's modules and nothing else (no
    # stray __pycache__), and writes its own bytecode outside the tree.
    rm -rf "$build/src-$variant"
    mkdir -p "$build/src-$variant"
    cp "$here"/src/*.py "$build/src-$variant/"
    (cd "$build/src-$variant" && env -u VIRTUAL_ENV "$cpy" -d "$wit" -w "$world" componentize -p . "$app" -o "$out.tmp")
    mv "$out.tmp" "$out"
    echo "$stamp" > "$out.inputs"
    say "$variant: $(stat -c %s "$out") bytes"
}

build service "$root/wit" service service_app
build http "$build/wit-http" http-users http_app
