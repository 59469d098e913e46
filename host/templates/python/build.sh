#!/usr/bin/env bash
# Build build/{{name}}.wasm from app.py on Berth's world (wit/service.wit,
# world `service`) with componentize-py, pinned in requirements.txt and
# installed on first use into a virtualenv under
# ${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/python (where Berth's
# Python example installs it too, so one install serves both). Unchanged
# inputs are not built again. Needs python3 (3.9 or later) with venv.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n 's/^componentize-py==//p' "$here/requirements.txt")
venv=${BERTH_EXAMPLES_CACHE:-/var/tmp/berth-examples}/python/componentize-py-$version
cpy=$venv/bin/componentize-py
out=$here/build/{{name}}.wasm

say() { printf 'build.sh: %s\n' "$*" >&2; }

# One build at a time: tests may run this script in parallel.
mkdir -p "$here/build"
exec 9> "$here/build/.lock"
flock -w 900 9 || { say "another build held $here/build/.lock for 15 minutes; giving up"; exit 1; }

if [[ ! -f $venv/.installed ]]; then
    command -v python3 >/dev/null || { say "python3 is required (apt-get install python3)"; exit 1; }
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        { say "python3 cannot create virtualenvs: install python3-venv (apt-get install python3-venv)"; exit 1; }
    say "installing componentize-py $version into $venv (once)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    touch "$venv/.installed"
fi

stamp=$(cat "$here/requirements.txt" "$here/app.py" "$here"/wit/*.wit | sha256sum | cut -d' ' -f1)
if [[ -f $out && -f $out.inputs && $(cat "$out.inputs") == "$stamp" ]]; then
    say "up to date: $out"
    exit 0
fi
# From a copy of the source, so componentize-py bundles app.py and nothing
# else, and writes its bytecode outside the project.
rm -rf "$here/build/src" "$out.inputs"
mkdir -p "$here/build/src"
cp "$here/app.py" "$here/build/src/"
(cd "$here/build/src" && env -u VIRTUAL_ENV "$cpy" -d "$here/wit" -w service componentize -p . app -o "$out.tmp")
mv "$out.tmp" "$out"
echo "$stamp" > "$out.inputs"
say "built $out"
