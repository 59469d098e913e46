#!/usr/bin/env python3
"""The events workload: DELETE /users/{id}, each user with one pending order,
whose `user.deleted` event makes orders cancel it.

Used by benches/run.sh (`events`). Usage:
    events_latency.py APP_URL USERS CONCURRENCY RATE
Creates 2 x USERS users with one pending order each (not timed), then:
1. throughput: deletes USERS of them as fast as CONCURRENCY threads can, each
   on one kept-alive connection, and waits until every order is cancelled:
   the DELETE rate, and the rate at which cancellations completed (from the
   first DELETE to the last cancellation);
2. latency: deletes the other USERS at RATE per second from one thread (a
   load the delivery keeps up with), while another thread polls the orders
   of deleted users until each is cancelled: the time from a DELETE's 2xx to
   the cancellation, seen at most one polling sweep late (the sweep covers
   only orders still pending, so it stays short).
Prints one line:
    RESULT rps=... cancel_rps=... p50_ms=... p99_ms=... errors=N lost=N
`lost` counts orders still pending 60 s after the last DELETE of a phase.
"""
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlparse

app, users, concurrency, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
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
pairs = [None] * (2 * users)


def create(worker):
    conn = connect()
    for i in range(worker, len(pairs), concurrency):
        status, body = call(conn, "POST", "/users", json.dumps({"name": f"bench-{i}"}))
        assert status == 201, (status, body)
        user = json.loads(body)["id"]
        status, body = call(conn, "POST", "/orders", json.dumps({"user_id": user}))
        assert status == 201, (status, body)
        pairs[i] = (user, json.loads(body)["id"])


in_threads(concurrency, create)


class Phase:
    """Deletes, and a poller that times each order's cancellation."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deleted_at = {}  # order -> when its user's DELETE got its 2xx
        self.latencies = []
        self.errors = 0
        self.deleting = True
        self.finished = 0.0
        self.last_cancel = 0.0

    def deleted(self, status, order):
        done = time.monotonic()
        with self.lock:
            if 200 <= status < 300:
                self.deleted_at[order] = done
            else:
                self.errors += 1

    def poll(self):
        conn = connect()
        while True:
            with self.lock:
                waiting = list(self.deleted_at.items())
                deleting = self.deleting
            if not waiting and not deleting:
                return
            if not deleting and time.monotonic() - self.finished > 60:
                return
            for order, since in waiting:
                status, body = call(conn, "GET", f"/orders/{order}")
                if status == 200 and json.loads(body)["status"] == "cancelled":
                    seen = time.monotonic()
                    with self.lock:
                        del self.deleted_at[order]
                        self.latencies.append(seen - since)
                        self.last_cancel = seen
            if not waiting:
                time.sleep(0.0005)

    def run(self, delete_all):
        poller = threading.Thread(target=self.poll)
        poller.start()
        start = time.monotonic()
        delete_all(self)
        self.finished = time.monotonic()
        with self.lock:
            self.deleting = False
        poller.join()
        return start


# 1. Throughput.
burst = Phase()


def burst_deletes(phase):
    def delete(worker):
        conn = connect()
        for i in range(worker, users, concurrency):
            user, order = pairs[i]
            status, _ = call(conn, "DELETE", f"/users/{user}")
            phase.deleted(status, order)

    in_threads(concurrency, delete)


began = burst.run(burst_deletes)
rps = users / (burst.finished - began)
cancel_rps = len(burst.latencies) / max(burst.last_cancel - began, 1e-9)

# 2. Latency, at a steady rate.
paced = Phase()


def paced_deletes(phase):
    conn = connect()
    start = time.monotonic()
    for n, i in enumerate(range(users, 2 * users)):
        wait = start + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        user, order = pairs[i]
        status, _ = call(conn, "DELETE", f"/users/{user}")
        phase.deleted(status, order)


paced.run(paced_deletes)
latencies = sorted(paced.latencies)


def percentile(p):
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000


print(
    f"RESULT rps={rps:.1f} cancel_rps={cancel_rps:.1f} p50_ms={percentile(50):.1f} "
    f"p99_ms={percentile(99):.1f} errors={burst.errors + paced.errors} "
    f"lost={len(burst.deleted_at) + len(paced.deleted_at)}"
)
