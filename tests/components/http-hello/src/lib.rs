//! A standard `wasi:http/proxy` component, written against the `wasi`
//! crate as for `wasmtime serve`, that the wasi:http tests run in Berth:
//!
//! - any path not below: 200 `hello from wasi:http`, with `x-seen-path`
//!   (the path and query it was given) and `x-seen-request-id`
//! - `POST /echo`: streams the request body back as it arrives
//! - `GET /big?bytes=N`: streams N bytes of `x`
//! - `GET /slow`: sends its headers, then a line every 100 ms, forever
//! - `GET /trap`: panics before answering
//! - `GET /fetch?url=URL`: fetches URL and answers `status CODE` and the
//!   body, or 502 with the `wasi:http` error code
//! - `GET /config?key=K`: the value of K from `wasi:config/store`, or 404

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

/// `wasi:config/store`, which the `wasi` crate does not cover; in a module
/// of its own so its `wasi` does not shadow the crate's.
mod config {
    wit_bindgen::generate!({
        inline: "
            package wasi:config@0.2.0-rc.1;

            interface store {
                variant error {
                    upstream(string),
                    io(string),
                }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }

            world imports {
                import store;
            }
        ",
    });

    pub use self::wasi::config::store::get;
}

/// Most bytes `blocking-write-and-flush` takes at once.
const CHUNK: usize = 4096;

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match (request.method(), path) {
            (Method::Post, "/echo") => echo(request, out),
            (Method::Get, "/big") => {
                let bytes = param(query, "bytes")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                big(bytes, out)
            }
            (Method::Get, "/slow") => slow(out),
            (Method::Get, "/trap") => panic!("asked to trap"),
            (Method::Get, "/fetch") => fetch(param(query, "url").unwrap_or_default(), out),
            (Method::Get, "/config") => {
                let key = param(query, "key").unwrap_or_default();
                let plain = [("content-type", b"text/plain".to_vec())];
                match config::get(&key) {
                    Ok(Some(value)) => whole(out, 200, &plain, value.as_bytes()),
                    Ok(None) => whole(out, 404, &plain, b"no such key"),
                    Err(e) => whole(out, 500, &plain, format!("{e:?}").as_bytes()),
                }
            }
            _ => {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let headers = [
                    ("content-type", b"text/plain".to_vec()),
                    ("x-seen-path", target.clone().into_bytes()),
                    ("x-seen-request-id", id),
                ];
                whole(out, 200, &headers, b"hello from wasi:http")
            }
        }
    }
}

/// Answer `status` with `headers` and all of `body`.
fn whole(out: ResponseOutparam, status: u16, headers: &[(&str, Vec<u8>)], body: &[u8]) {
    let (stream, body_handle) = start(out, status, headers);
    write_all(&stream, body);
    drop(stream);
    OutgoingBody::finish(body_handle, None).expect("finishing the body");
}

/// Send the status and headers; the body follows through the stream.
fn start(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, Vec<u8>)],
) -> (OutputStream, OutgoingBody) {
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    let fields = Fields::from_list(&entries).expect("valid headers");
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the stream is taken once");
    (stream, body)
}

fn write_all(stream: &OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .expect("writing the body");
    }
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().expect("the body is taken once");
    let input = incoming.stream().expect("the stream is taken once");
    let (stream, body) = start(
        out,
        200,
        &[("content-type", b"application/octet-stream".to_vec())],
    );
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(bytes) => write_all(&stream, &bytes),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                panic!("reading the body: {}", e.to_debug_string())
            }
        }
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finishing the body");
}

fn big(bytes: usize, out: ResponseOutparam) {
    let (stream, body) = start(out, 200, &[("content-type", b"text/plain".to_vec())]);
    let block = [b'x'; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len());
        write_all(&stream, &block[..n]);
        left -= n;
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finishing the body");
}

fn slow(out: ResponseOutparam) -> ! {
    let (stream, _body) = start(out, 200, &[("content-type", b"text/plain".to_vec())]);
    let mut tick = 0u64;
    loop {
        write_all(&stream, format!("tick {tick}\n").as_bytes());
        tick += 1;
        wasi::clocks::monotonic_clock::subscribe_duration(100_000_000).block();
    }
}

fn fetch(url: String, out: ResponseOutparam) {
    match get(&url) {
        Ok((status, body)) => {
            let mut text = format!("status {status}\n").into_bytes();
            text.extend_from_slice(&body);
            whole(out, 200, &[("content-type", b"text/plain".to_vec())], &text)
        }
        Err(code) => whole(
            out,
            502,
            &[("content-type", b"text/plain".to_vec())],
            format!("error {code:?}").as_bytes(),
        ),
    }
}

/// GET `url` (`http://host[:port]/path` or `https://...`), whole.
fn get(url: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).expect("a valid scheme");
    request
        .set_authority(Some(authority))
        .expect("a valid authority");
    request
        .set_path_with_query(Some(path))
        .expect("a valid path");
    let future = outgoing_handler::handle(request, None)?;
    future.subscribe().block();
    let response = future
        .get()
        .expect("the response is ready")
        .expect("the response is taken once")?;
    let status = response.status();
    let body = response.consume().expect("the body is taken once");
    let input = body.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    // Any error, the end included, ends the body.
    while let Ok(chunk) = input.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, bytes))
}

/// The value of `name` in a query string, undecoded but for `%3A` and `%2F`.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.replace("%3A", ":").replace("%2F", "/"))
    })
}

wasi::http::proxy::export!(Hello with_types_in wasi);
