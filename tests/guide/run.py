#!/usr/bin/env python3
"""Run a guide's commands as a new user would, and fail when one fails.

Every ```sh block preceded by the line `<!-- guide: run -->` in the guide
(docs/guide.md by default) runs in order, in one bash session (so `cd`,
exported variables and background jobs carry over), in a fresh directory
outside the Berth checkout, with the `berth` binary named by $BERTH first
on PATH. A command line followed by `# => TEXT` must print TEXT (within its
output); one followed by `# eventually => TEXT` must print it within
EVENTUALLY seconds, retried every half second. Each block is timed, and
the times are printed at the end.

The only thing added to what a user does is a build cache: after each
step and each `berth new`, a generated project's `tests/target` that does not exist yet is
linked to $BERTH_GUIDE_CACHE (default: `scaffold` in the cargo target
directory, where tests/all's scaffold tests build such packages too), and
its own `target` to that path plus `-wasm`, so wasmtime and the SDK's
dependencies are not compiled again on every run. Set BERTH_GUIDE_CACHE=
(empty) to build from cold.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MARK = "<!-- guide: run -->"
EVENTUALLY = 120
# The whole run, cold caches included (wasmtime compiles once for tests/).
TIMEOUT = int(os.environ.get("BERTH_GUIDE_TIMEOUT", "2400"))
EXPECT = re.compile(r"^#\s*(eventually\s+)?=>\s?(.*)$")

PRELUDE = r"""
set -euo pipefail
__times=$1
__cleanup() {
    local pids
    pids=$(jobs -p)
    if [ -n "$pids" ]; then kill $pids 2>/dev/null || true; wait 2>/dev/null || true; fi
}
trap __cleanup EXIT
__step() {
    __t0=$(date +%s.%N)
    printf '\n=== guide step %s: %s\n' "$1" "$2"
}
__step_done() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$__t0" "$(date +%s.%N)" >> "$__times"
    __link_caches
}
__link_caches() {
    if [ -n "${BERTH_GUIDE_CACHE:-}" ]; then
        local project cache
        for project in "$__work"/*/ "$__work"/*/tests/; do
            if [ -f "$project/Cargo.toml" ] && [ ! -e "$project/target" ]; then
                case "$project" in
                    */tests/) cache="$BERTH_GUIDE_CACHE" ;;
                    *) cache="$BERTH_GUIDE_CACHE-wasm" ;;
                esac
                mkdir -p "$cache"
                ln -s "$cache" "$project/target"
            fi
        done
    fi
}
__check() {
    case "$2" in
        *"$1"*) return 0 ;;
        *) return 1 ;;
    esac
}
__expect() {
    local want=$1 cmd=$2 out status=0
    out=$(eval "$cmd" 2>&1) || status=$?
    printf '%s\n' "$out"
    if [ "$status" -ne 0 ]; then
        printf 'guide: `%s` exited with %s\n' "$cmd" "$status" >&2
        exit 1
    fi
    if ! __check "$want" "$out"; then
        printf 'guide: `%s` printed the above, without: %s\n' "$cmd" "$want" >&2
        exit 1
    fi
}
__eventually() {
    local want=$1 cmd=$2 out=
    local deadline=$((SECONDS + __eventually_secs))
    while :; do
        out=$(eval "$cmd" 2>&1) || true
        if __check "$want" "$out"; then
            printf '%s\n' "$out"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf '%s\n' "$out"
            printf 'guide: `%s` did not print %s within %s s\n' "$cmd" "$want" "$__eventually_secs" >&2
            exit 1
        fi
        sleep 0.5
    done
}
"""

# What a user's shell would not have: the test run's own cargo settings (a
# target directory elsewhere would move the .wasm the manifest names) and
# Berth's, which would point `berth serve` at a test database.
SCRUBBED = ("CARGO_", "RUSTFLAGS", "RUSTDOCFLAGS", "RUSTC", "BERTH_")
KEPT = ("BERTH_GUIDE_CACHE", "BERTH_EXAMPLES_CACHE", "CARGO_HOME")


def blocks(text):
    """The marked blocks: (heading, lines) in order."""
    lines = text.splitlines()
    heading = ""
    found = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("# ").strip()
        if line.strip() == MARK:
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            if i >= len(lines) or lines[i].strip() != "```sh":
                sys.exit(f"guide: line {i + 1}: {MARK} must be followed by a ```sh block")
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                sys.exit("guide: a ```sh block is not closed")
            found.append((heading, body))
        i += 1
    return found


def translate(body):
    """The block as bash, each command with an expectation wrapped."""
    out = []
    i = 0
    while i < len(body):
        line = body[i]
        following = body[i + 1].strip() if i + 1 < len(body) else ""
        expect = EXPECT.match(following)
        if expect and line.strip() and not line.lstrip().startswith("#"):
            check = "__eventually" if expect.group(1) else "__expect"
            out.append(f"{check} {shlex.quote(expect.group(2))} {shlex.quote(line)}")
            i += 2
            continue
        out.append(line)
        # A project just made gets its build caches before the block builds it.
        if line.strip().startswith("berth new"):
            out.append("__link_caches")
        i += 1
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    guide = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "docs", "guide.md")
    berth = os.environ.get("BERTH")
    if not berth or not os.access(berth, os.X_OK):
        sys.exit("guide: set BERTH to the berth binary to run the guide with")
    berth = os.path.abspath(berth)
    with open(guide, encoding="utf-8") as f:
        steps = blocks(f.read())
    if not steps:
        sys.exit(f"guide: {guide} has no block marked {MARK}")

    work = tempfile.mkdtemp(prefix="berth-guide-")
    times = os.path.join(work, ".times")
    script = [PRELUDE, f"__work={shlex.quote(work)}", f"__eventually_secs={EVENTUALLY}"]
    for n, (heading, body) in enumerate(steps, 1):
        script.append(f"__step {n} {shlex.quote(heading)}")
        script.extend(translate(body))
        script.append(f"__step_done {n} {shlex.quote(heading)}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k in KEPT or not k.startswith(SCRUBBED)
    }
    # Where tests/all's scaffold tests build generated test packages too.
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    env.setdefault("BERTH_GUIDE_CACHE", os.path.join(os.path.abspath(target), "scaffold"))
    env["PATH"] = os.path.dirname(berth) + os.pathsep + env.get("PATH", "")
    env["NO_COLOR"] = "1"
    env["CARGO_TERM_COLOR"] = "never"

    print(f"guide: running {len(steps)} steps of {guide} in {work}", flush=True)
    started = time.monotonic()
    shell = subprocess.Popen(
        ["bash", "-c", "\n".join(script), "guide", times],
        cwd=work,
        env=env,
        start_new_session=True,
    )
    try:
        status = shell.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        status = f"killed after {TIMEOUT} s"
    # Whatever the session left behind (a server it started) goes too.
    try:
        os.killpg(shell.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

    done = []
    if os.path.exists(times):
        with open(times, encoding="utf-8") as f:
            done = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    print("\nguide: step times")
    for n, heading, start, end in done:
        print(f"  {n}. {heading}: {float(end) - float(start):.1f} s")
    total = time.monotonic() - started
    if status != 0:
        failed = len(done) + 1
        print(
            f"guide: FAILED at step {failed} of {len(steps)} ({status}); the project is left in {work}",
            file=sys.stderr,
        )
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print(f"guide: {len(steps)} steps passed in {total:.0f} s")


if __name__ == "__main__":
    main()
