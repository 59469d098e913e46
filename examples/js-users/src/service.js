// The `service` variant: a component of Berth's own world (`wit/service.wit`,
// world `service`). Berth calls `handler.handle` once per request with the
// whole request; the store is `berth:service/kv`, whose writes commit
// together when the handler returns.

import * as kv from 'berth:service/kv@0.1.0';
import { handle, StoreError } from './users.js';

/// `kv` behind the few methods users.js needs. A store error arrives as a
/// thrown value whose `payload` is the WIT `error` variant.
const store = {
  get: (key) => call(() => kv.get(key)),
  insert: (key, value) => call(() => kv.insert(key, value)),
  delete: (key) => call(() => kv['delete'](key)),
  increment: (key, delta) => BigInt(call(() => kv.increment(key, delta))),
  scan: (prefix, startAfter, limit) => call(() => kv.scan(prefix, startAfter, limit)),
};

function call(op) {
  try {
    return op();
  } catch (e) {
    const err = e.payload ?? e;
    if (err.tag === 'invalid') {
      throw new StoreError(400, err.val);
    }
    if (err.tag === 'unavailable') {
      throw new StoreError(503, `store unavailable: ${err.val}`);
    }
    throw e;
  }
}

export const handler = {
  handle(request) {
    const contentType = request.headers.find((h) => h.name === 'content-type')?.value ?? '';
    const response = handle(
      {
        method: request.method,
        path: request.path,
        query: request.query,
        contentType,
        body: request.body,
      },
      store,
    );
    return {
      status: response.status,
      headers: response.headers.map(([name, value]) => ({ name, value })),
      body: response.body,
    };
  },
};
