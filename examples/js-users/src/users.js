// The users service, written once for both variants: routing, validation,
// JSON and the record layout. Each variant hands `handle` a store (its own
// key-value import behind a few methods) and turns the plain response it
// returns into its ABI's response.
//
// Records live under `user/<id, zero-padded to 20 digits>`, so that key
// order is id order, as JSON text `{"id":N,"name":"..."}`; the id counter
// is `meta/user/next-id` and `meta/user/seeded` remembers that John and
// Jane were stored once. That is the layout of Berth's Rust users service.

const MAX_ID = (1n << 63n) - 1n; // ids are positive and below 2^63
const MAX_CLIENT_ID = 2 ** 53 - 1; // the most a client may pick: exact in every JSON parser
const DEFAULT_LIMIT = 100n;
const MAX_LIMIT = 1000n;
const COUNTER = 'meta/user/next-id';
const SEEDED = 'meta/user/seeded';
const SEEDS = [
  { id: 1, name: 'John' },
  { id: 2, name: 'Jane' },
];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/// An early answer: thrown by any step, caught by `handle`.
class Reply {
  constructor(status, body, headers = []) {
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/// A failure of the store, thrown by a variant's store methods.
export class StoreError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Serve one request.
 * @param {{method: string, path: string, query: string,
 *          contentType: string, body: Uint8Array}} request
 *   the path still percent-encoded and the query without its `?`
 * @param store the variant's key-value store (see service.js and http.js)
 * @returns {{status: number, headers: [string, string][], body: Uint8Array}}
 */
export function handle(request, store) {
  let reply;
  try {
    reply = route(request, store);
  } catch (e) {
    if (e instanceof Reply) {
      reply = e;
    } else if (e instanceof StoreError) {
      reply = error(e.status, e.message);
    } else {
      throw e; // a bug: let the host answer 500 and log the trap
    }
  }
  const headers = [...reply.headers];
  let body = new Uint8Array(0);
  if (reply.body !== undefined) {
    headers.unshift(['content-type', 'application/json']);
    body = encoder.encode(reply.body);
  }
  return { status: reply.status, headers, body };
}

function route(request, store) {
  const { method, path } = request;
  const segments = path.replace(/^\/+/, '').split('/');
  if (segments[0] === 'users' && (segments.length === 1 || (segments.length === 2 && segments[1] === ''))) {
    switch (method) {
      case 'GET':
        seed(store);
        return list(request, store);
      case 'POST':
        seed(store);
        return create(request, store);
      default:
        return methodNotAllowed(method, ['GET', 'POST']);
    }
  }
  if (segments[0] === 'users' && segments.length === 2) {
    const id = parseId(segments[1]);
    switch (method) {
      case 'GET':
        return get(id, store);
      case 'DELETE':
        seed(store);
        return remove(id, store);
      default:
        return methodNotAllowed(method, ['GET', 'DELETE']);
    }
  }
  return error(404, `no such resource: ${path}`);
}

/// One page of users in id order, with a `link` to the next page if any.
function list(request, store) {
  const limit = queryInt(request.query, 'limit', 1n, MAX_LIMIT) ?? DEFAULT_LIMIT;
  const after = queryInt(request.query, 'after', 0n, MAX_ID) ?? 0n;
  // One record past the page tells whether there is a next one.
  const entries = store.scan('user/', key(after), Number(limit) + 1);
  const page = entries.slice(0, Number(limit));
  const body = `[${page.map((e) => decoder.decode(e.value)).join(',')}]`;
  const headers = [];
  if (entries.length > page.length) {
    const last = idOf(page[page.length - 1].key);
    headers.push(['link', `</users?limit=${limit}&after=${last}>; rel="next"`]);
  }
  return new Reply(200, body, headers);
}

/// The stored record as it is: one read when the user exists, the common
/// case; only a miss checks whether John and Jane still need seeding.
function get(id, store) {
  let value = store.get(key(id));
  if (value === undefined) {
    seed(store);
    value = store.get(key(id));
  }
  if (value === undefined) {
    return notFound(id);
  }
  return new Reply(200, decoder.decode(value));
}

function create(request, store) {
  const input = readUser(request);
  if (input.id !== undefined) {
    const user = { id: input.id, name: input.name };
    if (!insert(store, BigInt(input.id), user)) {
      return error(409, `user ${input.id} already exists`);
    }
    return created(user);
  }
  // A client may have taken ids ahead of the counter: skip those. The bound
  // keeps a corrupted counter from looping until the deadline.
  for (let i = 0; i < 1000; i++) {
    const id = store.increment(COUNTER, 1n);
    const user = { id: Number(id), name: input.name };
    if (store.insert(key(id), encoder.encode(JSON.stringify(user)))) {
      return created(user);
    }
  }
  return error(503, 'could not allocate a free id; try again');
}

function created(user) {
  return new Reply(201, JSON.stringify(user), [['location', `/users/${user.id}`]]);
}

function remove(id, store) {
  if (!store.delete(key(id))) {
    return notFound(id);
  }
  return new Reply(204);
}

/// Store John and Jane once, the first time a request needs them. A marker
/// remembers it, so a deleted sample user stays deleted.
function seed(store) {
  if (store.get(SEEDED) !== undefined) {
    return;
  }
  if (store.insert(SEEDED, encoder.encode('1'))) {
    for (const user of SEEDS) {
      insert(store, BigInt(user.id), user);
    }
  }
}

/// Store `user` under `id` unless the id is taken, and make sure the
/// counter never hands that id out.
function insert(store, id, user) {
  if (!store.insert(key(id), encoder.encode(JSON.stringify(user)))) {
    return false;
  }
  const current = store.increment(COUNTER, 0n);
  if (current < id) {
    store.increment(COUNTER, id - current);
  }
  return true;
}

/// The body of POST /users: `name` (a non-empty string, trimmed) and an
/// optional `id`; nothing else.
function readUser(request) {
  const essence = request.contentType.split(';')[0].trim().toLowerCase();
  if (!(essence === 'application/json' || (essence.startsWith('application/') && essence.endsWith('+json')))) {
    const shown = request.contentType === '' ? 'none' : `\`${request.contentType}\``;
    throw error(415, `expected content-type application/json, got ${shown}`);
  }
  let input;
  try {
    input = JSON.parse(decoder.decode(request.body));
  } catch (e) {
    throw error(400, `invalid JSON body: ${e.message}`);
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw error(400, 'invalid JSON body: expected an object such as {"name": "Ann"}');
  }
  for (const field of Object.keys(input)) {
    if (field !== 'id' && field !== 'name') {
      throw error(400, `invalid JSON body: unknown field \`${field}\`, expected \`id\` or \`name\``);
    }
  }
  if (input.name === undefined) {
    throw error(400, 'missing field `name`');
  }
  if (typeof input.name !== 'string') {
    throw error(400, 'field `name` must be a string');
  }
  const name = input.name.trim();
  if (name === '') {
    throw error(400, 'field `name` must not be empty');
  }
  if ('id' in input) {
    const id = input.id;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1) {
      throw error(400, 'field `id` must be a positive integer');
    }
    if (id > MAX_CLIENT_ID) {
      throw error(400, `field \`id\` must be at most ${MAX_CLIENT_ID}`);
    }
    return { id, name };
  }
  return { name };
}

/// A path segment as an id: decimal digits only, from 1 to 2^63 - 1.
function parseId(raw) {
  if (/^[0-9]+$/.test(raw)) {
    const id = BigInt(raw);
    if (id >= 1n && id <= MAX_ID) {
      return id;
    }
  }
  throw error(400, `invalid user id \`${raw}\`: expected a positive integer below 2^63`);
}

/// Query parameter `name` as an integer from `min` to `max`; undefined when
/// absent. The first occurrence counts, as in the Rust service.
function queryInt(query, name, min, max) {
  const pair = query
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
    })
    .find(([k]) => k === name);
  if (pair === undefined) {
    return undefined;
  }
  const raw = pair[1];
  let decoded;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    decoded = undefined;
  }
  if (decoded !== undefined && /^[0-9]+$/.test(decoded)) {
    const n = BigInt(decoded);
    if (n >= min && n <= max) {
      return n;
    }
  }
  throw error(400, `invalid query parameter \`${name}=${raw}\`: expected an integer from ${min} to ${max}`);
}

function key(id) {
  return `user/${id.toString().padStart(20, '0')}`;
}

function idOf(k) {
  return BigInt(k.slice('user/'.length));
}

function notFound(id) {
  return error(404, `user ${id} does not exist`);
}

function methodNotAllowed(method, allow) {
  const allowed = allow.join(', ');
  const reply = error(405, `method ${method} is not allowed here; allowed: ${allowed}`);
  reply.headers.push(['allow', allowed]);
  return reply;
}

function error(status, message) {
  return new Reply(status, JSON.stringify({ error: message }), []);
}
