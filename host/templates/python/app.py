"""The {{name}} service: JSON records {"id": 1, "name": "..."} under
/{{name}}, kept in the component's own key-value namespace.

  GET  /{{name}}       the records, in id order
  POST /{{name}}       create one from {"name": "..."}; 201 with it
  GET  /{{name}}/ID    one record, or 404

Berth calls `Handler.handle` once per request, in a fresh instance, and
commits the request's key-value writes together after it returns.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, types

PREFIX = "/{{name}}"


class Handler(exports.Handler):
    def handle(self, request: types.Request) -> types.Response:
        try:
            status, body = route(request)
        except Err as e:
            # A store error: `invalid` is the request's fault, anything
            # else the store's.
            if isinstance(e.value, kv.Error_Invalid):
                status, body = 400, {"error": e.value.value}
            else:
                status, body = 503, {"error": "store unavailable: " + str(e.value.value)}
        return types.Response(
            status,
            [types.Header("content-type", "application/json")],
            json.dumps(body).encode(),
        )


def route(request):
    path = request.path.rstrip("/")
    if path == PREFIX:
        if request.method == "GET":
            return 200, list_records()
        if request.method == "POST":
            return create(request.body)
        return 405, {"error": "method " + request.method + " is not allowed on " + PREFIX}
    if path.startswith(PREFIX + "/"):
        raw = path[len(PREFIX) + 1 :]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            return 400, {"error": "the id must be a positive integer, got `" + raw + "`"}
        if request.method != "GET":
            return 405, {"error": "method " + request.method + " is not allowed on " + path}
        value = kv.get(key(int(raw)))
        if value is None:
            return 404, {"error": "{{name}} record " + str(int(raw)) + " does not exist"}
        return 200, json.loads(value)
    return 404, {"error": "no such resource: " + request.path}


def key(record_id):
    # Zero-padded, so the keys sort in id order.
    return "item/%020d" % record_id


def list_records():
    records, after = [], None
    while True:
        # A page may end early at the host's byte cap; only an empty one
        # ends the range.
        page = kv.scan("item/", after, 1000)
        if not page:
            return records
        records.extend(json.loads(entry.value) for entry in page)
        after = page[-1].key


def create(body):
    try:
        data = json.loads(body)
    except ValueError:
        return 400, {"error": "the body is not JSON"}
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.strip():
        return 400, {"error": "field `name` must be a non-empty string"}
    record_id = kv.increment("next-id", 1)
    record = {"id": record_id, "name": name.strip()}
    kv.insert(key(record_id), json.dumps(record).encode())
    return 201, record
