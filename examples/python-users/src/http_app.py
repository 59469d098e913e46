"""The `http` variant: the users service as a standard `wasi:http/proxy`
component, keeping its state in `wasi:keyvalue` (0.2.0-draft, `store` and
`atomics`), as Berth, wasmtime serve and Spin provide it.

Berth stages the request's keyvalue writes and commits those made before
the response is set before its headers go out, so every write here happens
before `ResponseOutparam.set`."""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, store, streams, types

import users_core

# Bytes per read of the request body and per write of the response body
# (`blocking-write-and-flush` takes at most 4096).
READ_SIZE = 64 * 1024
WRITE_SIZE = 4096


class KeyvalueStore:
    """`users_core`'s store on a wasi:keyvalue bucket.

    The draft has no insert-if-absent and no compare-and-swap, so `insert`
    and `remove` check first and then write: between two concurrent
    requests on the same key, both may find it absent (two POSTs with the
    same chosen id both get 201, the later write winning) or present (two
    DELETEs both get 204). Ids the service picks come from
    `atomics.increment`, which never hands one out twice.

    `list-keys` has no prefix or start key, so a listing walks the keys from
    the first (`meta/...` sorts before `user/...`) and skips those at or
    before the cursor: a page's cost grows with the number of users before
    it."""

    def __init__(self, bucket):
        self.bucket = bucket

    def get(self, key):
        return call(self.bucket.get, key)

    def insert(self, key, value):
        if call(self.bucket.exists, key):
            return False
        call(self.bucket.set, key, value)
        return True

    def remove(self, key):
        if not call(self.bucket.exists, key):
            return False
        call(self.bucket.delete, key)
        return True

    def increment(self, key, delta):
        return call(atomics.increment, self.bucket, key, delta)

    def entries(self, prefix, after, batch):
        cursor = None
        while True:
            page = call(self.bucket.list_keys, cursor)
            for key in page.keys:
                if key.startswith(prefix) and key > after:
                    value = call(self.bucket.get, key)
                    if value is not None:
                        yield key, value
                elif key > prefix and not key.startswith(prefix):
                    return  # keys come in byte order: past the prefix
            if not page.keys or page.cursor is None:
                return
            cursor = page.cursor


def call(op, *args):
    try:
        return op(*args)
    except Err as e:
        if isinstance(e.value, store.Error_Other):
            raise users_core.StoreError(503, e.value.value)
        raise users_core.StoreError(503, type(e.value).__name__)


def method_name(method):
    if isinstance(method, types.Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def read_body(request):
    """The whole request body (Berth has already bounded its size)."""
    chunks = []
    body = request.consume()
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(READ_SIZE))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise
    types.IncomingBody.finish(body).__exit__(None, None, None)
    return b"".join(chunks)


def send(response_out, status, headers, body):
    entries = [(name, value.encode()) for name, value in headers]
    if status != 204:
        entries.append(("content-length", str(len(body)).encode()))
    fields = types.Fields.from_list(entries)
    response = types.OutgoingResponse(fields)
    response.set_status_code(status)
    out = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    with out.write() as stream:
        for start in range(0, len(body), WRITE_SIZE):
            stream.blocking_write_and_flush(body[start : start + WRITE_SIZE])
    types.OutgoingBody.finish(out, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        method = method_name(request.method())
        path, _, query = (request.path_with_query() or "/").partition("?")
        headers = {}
        with request.headers() as fields:
            for name, value in fields.entries():
                headers.setdefault(name.lower(), value.decode("latin-1"))
        body = read_body(request)
        # An exception left uncaught traps, so the host answers 500 and
        # commits none of the request's writes.
        with store.open("") as bucket:
            status, out_headers, out_body = users_core.handle(
                method, path, query, headers, body, KeyvalueStore(bucket)
            )
        send(response_out, status, out_headers, out_body)
