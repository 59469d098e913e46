"""The `service` variant: the users service on Berth's own world
(`wit/service.wit`, world `service`). The host buffers the request, runs
`handle` in a fresh instance, and commits the request's key-value writes
together after it returns."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, types

import users_core


class KvStore:
    """`users_core`'s store on `berth:service/kv`, which has every
    operation it needs: `insert` and `delete` are checked again at commit,
    and a request that lost a race is run again by the host."""

    def get(self, key):
        return call(kv.get, key)

    def insert(self, key, value):
        return call(kv.insert, key, value)

    def remove(self, key):
        return call(kv.delete, key)

    def increment(self, key, delta):
        return call(kv.increment, key, delta)

    def entries(self, prefix, after, batch):
        while True:
            # A page may end early at the host's byte cap; only an empty
            # one ends the range.
            page = call(kv.scan, prefix, after, batch)
            if not page:
                return
            for entry in page:
                yield entry.key, entry.value
            after = page[-1].key


def call(op, *args):
    try:
        return op(*args)
    except Err as e:
        if isinstance(e.value, kv.Error_Invalid):
            raise users_core.StoreError(400, e.value.value)
        raise users_core.StoreError(503, str(e.value.value))


class Handler(exports.Handler):
    def handle(self, request: types.Request) -> types.Response:
        headers = {}
        for header in request.headers:
            headers.setdefault(header.name.lower(), header.value)
        # An exception left uncaught traps, so the host answers 500 and
        # commits none of the request's writes.
        status, out_headers, body = users_core.handle(
            request.method,
            request.path,
            request.query,
            headers,
            request.body,
            KvStore(),
        )
        return types.Response(
            status, [types.Header(n, v) for n, v in out_headers], body
        )
