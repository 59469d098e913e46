#!/usr/bin/env python3
"""Time from a new version arriving to the first request it answers.

Used by benches/swap.sh. Polls GET /swap on one kept-alive connection (so
the poll itself costs well under a millisecond) until `x-version` flips.
Usage: swap_latency.py MODE ROUNDS APP_URL ADMIN_URL WORKDIR
MODE is `watch` (rename a new file into place), `upload` (PUT it to the
admin API) or `rollback` (POST .../rollback). WORKDIR holds v1.wasm,
v2.wasm and the watched swapper.wasm. Prints one latency in ms per line.
"""
import http.client
import os
import sys
import time
from urllib.parse import urlparse

mode, rounds, app, admin, work = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
token = os.environ["BERTH_ADMIN_TOKEN"]


def connect(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


public = connect(app)


def version():
    public.request("GET", "/swap")
    response = public.getresponse()
    response.read()
    return response.getheader("x-version")


def admin_call(method, path, body=None):
    conn = connect(admin)
    conn.request(method, path, body=body, headers={"authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        sys.exit(f"{method} {path}: {response.status}")


current = version()
for _ in range(rounds):
    following = "v2" if current == "v1" else "v1"
    started = time.perf_counter()
    if mode == "watch":
        with open(os.path.join(work, f"{following}.wasm"), "rb") as f:
            wasm = f.read()
        tmp = os.path.join(work, "swapper.tmp")
        with open(tmp, "wb") as f:
            f.write(wasm)
        started = time.perf_counter()
        os.rename(tmp, os.path.join(work, "swapper.wasm"))
    elif mode == "upload":
        with open(os.path.join(work, f"{following}.wasm"), "rb") as f:
            admin_call("PUT", "/components/swapper", f.read())
    else:
        admin_call("POST", "/components/swapper/rollback")
    deadline = started + 30
    while version() != following:
        if time.perf_counter() > deadline:
            sys.exit(f"{following} did not arrive within 30 s")
    print(round((time.perf_counter() - started) * 1000, 1))
    current = following
