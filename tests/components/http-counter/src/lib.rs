//! A standard `wasi:http/proxy` component that counts in `wasi:keyvalue`
//! (0.2.0-draft), for the tests of Berth's durable keyvalue:
//!
//! - `GET /count`: reads `count` from the default bucket, adds one, writes
//!   it back, and answers the new count (a staged write, committed before
//!   the headers go out)
//! - `GET /hits`: `atomics.increment` of `hits` by one, answered
//! - `GET /late`: sends its headers, then writes `late` = `written` and
//!   ends the body (a write committed when the handler returns)
//! - `GET /get?key=K`: the value of K, or 404
//! - `GET /open?bucket=B`: opens bucket B and answers `opened`, or 404 and
//!   the error's name (`no-such-store`)
//! - `GET /keys`: every key, one per line, paged through `list-keys`
//! - `GET /trap`: writes `count` = `trapped`, then panics before answering

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

/// `wasi:keyvalue`, which the `wasi` crate does not cover; in a module of
/// its own so its `wasi` does not shadow the crate's.
mod kv {
    wit_bindgen::generate!({
        inline: "
            package wasi:keyvalue@0.2.0-draft;

            interface store {
                variant error {
                    no-such-store,
                    access-denied,
                    other(string),
                }
                record key-response {
                    keys: list<string>,
                    cursor: option<u64>,
                }
                open: func(identifier: string) -> result<bucket, error>;
                resource bucket {
                    get: func(key: string) -> result<option<list<u8>>, error>;
                    set: func(key: string, value: list<u8>) -> result<_, error>;
                    delete: func(key: string) -> result<_, error>;
                    exists: func(key: string) -> result<bool, error>;
                    list-keys: func(cursor: option<u64>) -> result<key-response, error>;
                }
            }

            interface atomics {
                use store.{bucket, error};
                increment: func(bucket: borrow<bucket>, key: string, delta: u64) -> result<u64, error>;
            }

            world imports {
                import store;
                import atomics;
            }
        ",
    });

    pub use self::wasi::keyvalue::atomics::increment;
    pub use self::wasi::keyvalue::store::{Bucket, Error, open};
}

struct Counter;

impl Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if !matches!(request.method(), Method::Get) {
            return whole(out, 405, b"GET only");
        }
        match path {
            "/count" => {
                let bucket = default_bucket();
                let count = bucket
                    .get("count")
                    .expect("reading count")
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                bucket
                    .set("count", count.to_string().as_bytes())
                    .expect("writing count");
                whole(out, 200, count.to_string().as_bytes())
            }
            "/hits" => {
                let hits = kv::increment(&default_bucket(), "hits", 1).expect("incrementing hits");
                whole(out, 200, hits.to_string().as_bytes())
            }
            "/late" => {
                let bucket = default_bucket();
                let (stream, body) = start(out, 200, None);
                write(&stream, b"headers sent; ");
                bucket.set("late", b"written").expect("writing late");
                write(&stream, b"written");
                drop(stream);
                OutgoingBody::finish(body, None).expect("finishing the body");
            }
            "/get" => {
                let key = param(query, "key").unwrap_or_default();
                match default_bucket().get(key).expect("reading a key") {
                    Some(value) => whole(out, 200, &value),
                    None => whole(out, 404, b"no such key"),
                }
            }
            "/open" => match kv::open(param(query, "bucket").unwrap_or_default()) {
                Ok(_) => whole(out, 200, b"opened"),
                Err(kv::Error::NoSuchStore) => whole(out, 404, b"no-such-store"),
                Err(kv::Error::AccessDenied) => whole(out, 403, b"access-denied"),
                Err(kv::Error::Other(e)) => whole(out, 500, e.as_bytes()),
            },
            "/keys" => {
                let bucket = default_bucket();
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let page = bucket.list_keys(cursor).expect("listing keys");
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                whole(out, 200, keys.join("\n").as_bytes())
            }
            "/trap" => {
                default_bucket()
                    .set("count", b"trapped")
                    .expect("writing count");
                panic!("asked to trap after a write")
            }
            _ => whole(out, 404, b"no such path"),
        }
    }
}

fn default_bucket() -> kv::Bucket {
    kv::open("").expect("opening the default bucket")
}

/// The value of `name` in a query string (no percent-decoding needed here).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// A whole response: status and plain-text body, its length declared so
/// the tests read it without dechunking.
fn whole(out: ResponseOutparam, status: u16, body: &[u8]) {
    let length = body.len().to_string().into_bytes();
    let (stream, handle) = start(out, status, Some(length));
    write(&stream, body);
    drop(stream);
    OutgoingBody::finish(handle, None).expect("finishing the body");
}

/// Send the status and headers; the body follows through the stream.
fn start(
    out: ResponseOutparam,
    status: u16,
    length: Option<Vec<u8>>,
) -> (OutputStream, OutgoingBody) {
    let mut headers = vec![("content-type".to_string(), b"text/plain".to_vec())];
    if let Some(length) = length {
        headers.push(("content-length".to_string(), length));
    }
    let fields = Fields::from_list(&headers).expect("valid headers");
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the stream is taken once");
    (stream, body)
}

fn write(stream: &OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .expect("writing the body");
    }
}

wasi::http::proxy::export!(Counter with_types_in wasi);
