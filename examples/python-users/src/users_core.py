"""The users service, independent of how requests arrive and where state lives.

Both variants (`service_app` on Berth's own world, `http_app` on wasi:http
with wasi:keyvalue) call `handle` with the request's parts and a store
adapter, and send back the `(status, headers, body)` it returns, so they
answer every request alike.

Records live under `user/<20-digit zero-padded id>`, so that key order is id
order; `meta/user/seeded` remembers that John and Jane were stored once, and
`meta/user/next-id` is the store's counter that hands out ids. These are
the keys Berth's Rust `users` component uses.

A store adapter provides:

- `get(key) -> bytes | None`
- `insert(key, value) -> bool`: store only if absent; whether it stored
- `remove(key) -> bool`: delete; whether the key existed
- `entries(prefix, after, batch)`: an iterator of `(key, value)` for the keys
  starting with `prefix` that sort after `after`, in ascending order;
  `batch` hints how many the caller is likely to read
- `increment(key, delta) -> int`: the store's durable counter

and raises `StoreError` when the store fails.
"""

import json

# The largest id the service accepts in a path or assigns: 2^63 - 1, the top
# of the store's signed 64-bit counters.
MAX_ID = 2**63 - 1
# The largest id a client may choose: 2^53 - 1, which every JSON parser holds
# exactly, and far enough below MAX_ID that the counter can go on past it.
MAX_CLIENT_ID = 2**53 - 1
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A listing page ends once its records reach this many bytes of JSON (a
# larger record comes alone), as the Rust service's pages do.
PAGE_BYTES = 1024 * 1024

USER_PREFIX = "user/"
SEEDED = "meta/user/seeded"
COUNTER = "meta/user/next-id"
SEEDS = ((1, "John"), (2, "Jane"))

JSON = ("content-type", "application/json")


class StoreError(Exception):
    """A store operation failed: `status` is what the client gets (400 for a
    request past the store's limits, 503 when the store is unavailable)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Reply(Exception):
    """An early answer, raised from deep inside a handler step."""

    def __init__(self, status, headers, body):
        super().__init__(status)
        self.response = (status, headers, body)


def handle(method, path, query, headers, body, store):
    """Answer one request.

    `headers` maps lower-case names to their first value; `path` is the path
    as sent (percent-encoded) and `query` the raw query string, without `?`.
    Returns `(status, [(name, value), ...], body_bytes)`.
    """
    try:
        return route(method, path, query, headers, body, store)
    except Reply as reply:
        return reply.response
    except StoreError as e:
        if e.status == 503:
            return error(503, f"store unavailable: {e.message}")
        return error(e.status, e.message)


def route(method, path, query, headers, body, store):
    segments = path.lstrip("/").split("/")
    if segments in (["users"], ["users", ""]):
        if method == "GET":
            seed(store)
            return list_users(query, store)
        if method == "POST":
            seed(store)
            return create(headers, body, store)
        return method_not_allowed(method, ("GET", "POST"))
    if len(segments) == 2 and segments[0] == "users":
        user_id = parse_id(segments[1])
        if method == "GET":
            return get(user_id, store)
        if method == "DELETE":
            seed(store)
            return delete(user_id, store)
        return method_not_allowed(method, ("GET", "DELETE"))
    return error(404, f"no such resource: {path}")


# --- responses --------------------------------------------------------------


def encode(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def respond(status, value, *headers):
    return status, [JSON, *headers], encode(value)


def error(status, message, *headers):
    return respond(status, {"error": message}, *headers)


def fail(status, message):
    raise Reply(*error(status, message))


def method_not_allowed(method, allowed):
    allow = ", ".join(allowed)
    return error(
        405,
        f"method {method} is not allowed here; allowed: {allow}",
        ("allow", allow),
    )


def not_found(user_id):
    return error(404, f"user {user_id} does not exist")


# --- parsing ----------------------------------------------------------------


def digits(raw):
    """The integer `raw` spells in ASCII decimal digits only, else None."""
    if raw and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def parse_id(raw):
    n = digits(raw)
    if n is None or not 1 <= n <= MAX_ID:
        fail(400, f"invalid user id `{raw}`: expected a positive integer below 2^63")
    return n


HEX = "0123456789abcdefABCDEF"


def percent_decode(raw):
    """Decode `%XX` escapes (a `+` stays a `+`); None if broken or not UTF-8."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in HEX for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out += raw[i].encode()
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def query_int(query, name, low, high, default):
    """Query parameter `name` (its first occurrence) as an integer in
    `low..=high`; `default` when absent; 400 otherwise."""
    for pair in query.split("&") if query else ():
        key, _, raw = pair.partition("=")
        if key != name:
            continue
        decoded = percent_decode(raw)
        n = digits(decoded) if decoded is not None else None
        if n is None or not low <= n <= high:
            fail(
                400,
                f"invalid query parameter `{name}={raw}`: "
                f"expected an integer from {low} to {high}",
            )
        return n
    return default


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def user_input(headers, body):
    """The body of POST /users: `{"name": ..., "id": ...}` with `id`
    optional. Returns `(id or None, name)`; answers 415 or 400 otherwise."""
    content_type = headers.get("content-type", "")
    essence = content_type.split(";")[0].strip().lower()
    if not (
        essence == "application/json"
        or (essence.startswith("application/") and essence.endswith("+json"))
    ):
        shown = f"`{content_type}`" if content_type else "none"
        fail(415, f"expected content-type application/json, got {shown}")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        fail(400, f"invalid JSON body: {e}")
    if not isinstance(value, dict):
        fail(400, f"invalid JSON body: expected an object, got {type_name(value)}")
    for field in value:
        if field not in ("id", "name"):
            fail(400, f"unknown field `{field}`, expected `id` or `name`")

    user_id = None
    if "id" in value:
        user_id = value["id"]
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            fail(400, f"field `id` must be an integer, got {type_name(user_id)}")
        if user_id < 1:
            fail(400, "field `id` must be a positive integer")
        if user_id > MAX_CLIENT_ID:
            fail(400, f"field `id` must be at most {MAX_CLIENT_ID}")

    name = value.get("name")
    if name is None:
        fail(400, "missing field `name`")
    if not isinstance(name, str):
        fail(400, f"field `name` must be a string, got {type_name(name)}")
    name = name.strip()
    if not name:
        fail(400, "field `name` must not be empty")
    return user_id, name


def type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- records ----------------------------------------------------------------


def key(user_id):
    return f"{USER_PREFIX}{user_id:020d}"


def load(raw):
    try:
        return json.loads(raw)
    except ValueError as e:
        fail(500, f"stored record is corrupt: {e}")


def insert(store, user_id, name):
    """Store a user under `user_id` unless the id is taken; whether it did.
    The counter is raised past the id, so it never hands it out again."""
    if not store.insert(key(user_id), encode({"id": user_id, "name": name})):
        return False
    current = store.increment(COUNTER, 0)
    if current < user_id:
        store.increment(COUNTER, user_id - current)
    return True


def seed(store):
    """Store John and Jane the first time a request needs them. The marker
    stays, so a deleted sample user is not seeded again."""
    if store.get(SEEDED) is not None:
        return
    if store.insert(SEEDED, b"1"):
        for user_id, name in SEEDS:
            insert(store, user_id, name)


# --- the operations ---------------------------------------------------------


def list_users(query, store):
    """One page of users in id order: `?limit=` (1 to 1000, default 100) and
    `?after=` (an id, default 0); `link` names the next page, if any."""
    limit = query_int(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    after = query_int(query, "after", 0, MAX_ID, 0)
    records, size, last = [], 0, None
    more = False
    # One entry past what the page needs tells whether a next page exists.
    batch = min(max(limit + 1, 100), 500)
    for entry_key, raw in store.entries(USER_PREFIX, key(after), batch):
        if len(records) >= limit or (records and size + len(raw) > PAGE_BYTES):
            more = True
            break
        records.append(load(raw))
        size += len(raw)
        last = records[-1]["id"]
    headers = []
    if more:
        headers.append(("link", f'</users?limit={limit}&after={last}>; rel="next"'))
    return respond(200, records, *headers)


def get(user_id, store):
    # One read when the user exists, the common case; only a miss checks
    # whether the sample users still need seeding.
    raw = store.get(key(user_id))
    if raw is None:
        seed(store)
        raw = store.get(key(user_id))
    if raw is None:
        return not_found(user_id)
    return respond(200, load(raw))


def create(headers, body, store):
    user_id, name = user_input(headers, body)
    if user_id is not None:
        if not insert(store, user_id, name):
            return error(409, f"user {user_id} already exists")
    else:
        # Ids a client chose may lie ahead of the counter: skip them. The
        # bound keeps a corrupted counter from looping until the deadline.
        for _ in range(1000):
            candidate = store.increment(COUNTER, 1)
            if store.insert(key(candidate), encode({"id": candidate, "name": name})):
                user_id = candidate
                break
        else:
            return error(503, "could not allocate a free id; try again")
    return respond(
        201, {"id": user_id, "name": name}, ("location", f"/users/{user_id}")
    )


def delete(user_id, store):
    if not store.remove(key(user_id)):
        return not_found(user_id)
    return 204, [], b""
