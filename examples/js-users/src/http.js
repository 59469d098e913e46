// The `http` variant: a standard wasi:http component. componentize-js's
// built-in `fetch` event handler exports wasi:http/incoming-handler; the
// store is wasi:keyvalue (`store` and `atomics`), which Berth maps onto the
// component's own durable namespace, staging the writes of a request and
// committing them before the response headers go out.

import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';
import { handle, StoreError } from './users.js';

/// Most `list-keys` pages one listing reads: 1,000 keys a page, so a
/// million keys, far past what this example holds, and a bound on a loop.
const MAX_KEY_PAGES = 1000;

/// The default bucket behind the few methods users.js needs. wasi:keyvalue
/// has no insert-if-absent, delete-if-present or range scan, so those are
/// built from `exists`, `set`, `delete` and `list-keys`: see README.md for
/// what that costs.
function bucketStore() {
  // Opened on first use, inside the request: the module's top level runs
  // when the component is built (Wizer), where there is no store.
  let bucket;
  const b = () => (bucket ??= call(() => open('')));
  const store = {
    get: (key) => call(() => b().get(key)),
    insert: (key, value) => {
      if (call(() => b().exists(key))) {
        return false;
      }
      call(() => b().set(key, value));
      return true;
    },
    delete: (key) => {
      if (!call(() => b().exists(key))) {
        return false;
      }
      call(() => b().delete(key));
      return true;
    },
    increment: (key, delta) => {
      if (delta < 0n) {
        throw new StoreError(500, 'wasi:keyvalue counters only go up');
      }
      return BigInt(call(() => increment(b(), key, delta)));
    },
    // Up to `limit` entries whose keys start with `prefix` and sort after
    // `startAfter`, in key order (Berth lists keys in byte order).
    scan: (prefix, startAfter, limit) => {
      const keys = [];
      let cursor;
      for (let pages = 0; keys.length < limit; pages++) {
        if (pages === MAX_KEY_PAGES) {
          throw new StoreError(503, 'too many keys to list in one request');
        }
        const page = call(() => b().listKeys(cursor));
        if (page.keys.length === 0) {
          break;
        }
        for (const key of page.keys) {
          if (key.startsWith(prefix) && key > startAfter && keys.length < limit) {
            keys.push(key);
          }
        }
        if (page.cursor === undefined) {
          break;
        }
        cursor = page.cursor;
      }
      const entries = [];
      for (const key of keys) {
        const value = store.get(key);
        if (value !== undefined) {
          entries.push({ key, value });
        }
      }
      return entries;
    },
  };
  return store;
}

/// A wasi:keyvalue error arrives as a thrown value whose `payload` is the
/// WIT `error` variant.
function call(op) {
  try {
    return op();
  } catch (e) {
    const err = e.payload ?? e;
    if (typeof err.tag === 'string') {
      const detail = err.tag === 'other' ? err.val : err.tag;
      throw new StoreError(503, `store unavailable: ${detail}`);
    }
    throw e;
  }
}

/// The raw path and query of a request URL (`scheme://authority/path?query`),
/// still percent-encoded, as Berth's own world hands them over.
function pathAndQuery(url) {
  const start = url.indexOf('/', url.indexOf('://') + 3);
  const rest = start < 0 ? '/' : url.slice(start);
  const q = rest.indexOf('?');
  return q < 0 ? [rest, ''] : [rest.slice(0, q), rest.slice(q + 1)];
}

async function serve(request) {
  const [path, query] = pathAndQuery(request.url);
  const body = new Uint8Array(await request.arrayBuffer());
  const response = handle(
    {
      method: request.method,
      path,
      query,
      contentType: request.headers.get('content-type') ?? '',
      body,
    },
    bucketStore(),
  );
  const headers = new Headers();
  for (const [name, value] of response.headers) {
    headers.append(name, value);
  }
  const hasBody = response.status !== 204;
  return new Response(hasBody ? response.body : null, { status: response.status, headers });
}

addEventListener('fetch', (event) => event.respondWith(serve(event.request)));
