#!/usr/bin/env python3
"""The events workload: DELETE /users/{id}, each user with one pending order,
and the time from the DELETE's 2xx to the order being cancelled.

Used by benches/run.sh (`events`). Usage:
    events_latency.py APP_URL USERS CONCURRENCY
Creates USERS users with one pending order each (not timed), then deletes
them with CONCURRENCY threads, each on one kept-alive connection, while one
more thread polls the orders whose user is gone until each is cancelled.
A cancellation is seen at most one polling sweep after it happens; the sweep
covers only orders still pending, so it stays short while delivery keeps up.
Prints one line:
    RESULT rps=DELETES_PER_S p50_ms=... p99_ms=... deletes=N errors=N lost=N
`lost` counts orders still pending 60 s after the last DELETE.
"""
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

app, users, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
target = urlparse(app)


def connect():
    return http.client.HTTPConnection(target.hostname, target.port, timeout=30)


def call(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def in_threads(count, work):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# Set-up: users with one pending order each.
pairs = [None] * users


def create(worker):
    conn = connect()
    for i in range(worker, users, concurrency):
        status, body = call(conn, "POST", "/users", json.dumps({"name": f"bench-{i}"}))
        assert status == 201, (status, body)
        user = json.loads(body)["id"]
        status, body = call(conn, "POST", "/orders", json.dumps({"user_id": user}))
        assert status == 201, (status, body)
        pairs[i] = (user, json.loads(body)["id"])


in_threads(concurrency, create)

# Measured: the deletes, and the cancellations they cause.
deleted_at = {}  # order id -> when its user's DELETE got its 2xx
latencies = []
errors = 0
lock = threading.Lock()
deleting = True


def delete(worker):
    global errors
    conn = connect()
    for i in range(worker, users, concurrency):
        user, order = pairs[i]
        status, _ = call(conn, "DELETE", f"/users/{user}")
        done = time.monotonic()
        with lock:
            if 200 <= status < 300:
                deleted_at[order] = done
            else:
                errors += 1


def poll():
    conn = connect()
    while True:
        with lock:
            waiting = list(deleted_at.items())
            still_deleting = deleting
        if not waiting and not still_deleting:
            return
        if not still_deleting and time.monotonic() - finished > 60:
            return
        for order, since in waiting:
            status, body = call(conn, "GET", f"/orders/{order}")
            if status == 200 and json.loads(body)["status"] == "cancelled":
                seen = time.monotonic()
                with lock:
                    del deleted_at[order]
                    latencies.append(seen - since)
        if not waiting:
            time.sleep(0.0005)


finished = 0.0
poller = threading.Thread(target=poll)
poller.start()
start = time.monotonic()
in_threads(concurrency, delete)
finished = time.monotonic()
with lock:
    deleting = False
poller.join()

latencies.sort()


def percentile(p):
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000


print(
    f"RESULT rps={users / (finished - start):.1f} p50_ms={percentile(50):.1f} "
    f"p99_ms={percentile(99):.1f} deletes={users - errors} errors={errors} lost={len(deleted_at)}"
)
