// The {{name}} service: JSON records {"id": 1, "name": "..."} under
// /{{name}}, kept in the component's own key-value namespace.
//
//   GET  /{{name}}       the records, in id order
//   POST /{{name}}       create one from {"name": "..."}; 201 with it
//   GET  /{{name}}/ID    one record, or 404
//
// Berth calls `handler.handle` once per request, in a fresh instance, and
// commits the request's key-value writes together after it returns.

import * as kv from 'berth:service/kv@0.1.0';

const PREFIX = '/{{name}}';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const handler = {
  handle(request) {
    let status, body;
    try {
      [status, body] = route(request);
    } catch (e) {
      // A store error arrives as a thrown value whose `payload` is the WIT
      // `error` variant: `invalid` is the request's fault, `unavailable`
      // the store's.
      const err = e.payload ?? e;
      if (err.tag === 'invalid') {
        [status, body] = [400, { error: err.val }];
      } else if (err.tag === 'unavailable') {
        [status, body] = [503, { error: 'store unavailable: ' + err.val }];
      } else {
        throw e;
      }
    }
    return {
      status,
      headers: [{ name: 'content-type', value: 'application/json' }],
      body: encoder.encode(JSON.stringify(body)),
    };
  },
};

function route(request) {
  const path = request.path.replace(/\/+$/, '');
  if (path === PREFIX) {
    if (request.method === 'GET') return [200, listRecords()];
    if (request.method === 'POST') return create(request.body);
    return [405, { error: 'method ' + request.method + ' is not allowed on ' + PREFIX }];
  }
  if (path.startsWith(PREFIX + '/')) {
    const raw = path.slice(PREFIX.length + 1);
    if (!/^[0-9]{1,15}$/.test(raw)) {
      return [400, { error: 'the id must be a positive integer, got `' + raw + '`' }];
    }
    if (request.method !== 'GET') {
      return [405, { error: 'method ' + request.method + ' is not allowed on ' + path }];
    }
    const value = kv.get(key(Number(raw)));
    if (value === undefined) {
      return [404, { error: '{{name}} record ' + Number(raw) + ' does not exist' }];
    }
    return [200, JSON.parse(decoder.decode(value))];
  }
  return [404, { error: 'no such resource: ' + request.path }];
}

// Zero-padded, so the keys sort in id order.
function key(id) {
  return 'item/' + String(id).padStart(20, '0');
}

function listRecords() {
  const records = [];
  let after;
  for (;;) {
    // A page may end early at the host's byte cap; only an empty one ends
    // the range.
    const page = kv.scan('item/', after, 1000);
    if (page.length === 0) return records;
    for (const entry of page) records.push(JSON.parse(decoder.decode(entry.value)));
    after = page[page.length - 1].key;
  }
}

function create(body) {
  let data;
  try {
    data = JSON.parse(decoder.decode(body));
  } catch {
    return [400, { error: 'the body is not JSON' }];
  }
  const name = data !== null && typeof data === 'object' ? data.name : undefined;
  if (typeof name !== 'string' || name.trim() === '') {
    return [400, { error: 'field `name` must be a non-empty string' }];
  }
  const id = Number(kv.increment('next-id', 1n));
  const record = { id, name: name.trim() };
  kv.insert(key(id), encoder.encode(JSON.stringify(record)));
  return [201, record];
}
