//! The HTTP side: a `wasi:http` request read whole into a [`Request`], and
//! [`Reply`]s (JSON bodies, `{"error": "..."}` errors) written back through
//! the response outparam.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// A handler step: an early `Err` is already the reply to send.
pub type Result<T> = std::result::Result<T, Reply>;

/// The largest id in a path or a cursor: 2^63 - 1, the top of the store's
/// counter range (and of Berth's own users service).
pub const MAX_ID: u64 = i64::MAX as u64;

/// Bytes read from the body per call; the host bounds the whole body
/// (`--max-body-bytes`, 1 MiB by default) before it reaches the component.
const READ_CHUNK: u64 = 64 * 1024;

/// Bytes per write: `blocking-write-and-flush` takes at most 4096.
const WRITE_CHUNK: usize = 4096;

/// What the service looks at in a request, read whole.
pub struct Request {
    /// `GET`, `POST`, ...; a `HEAD` is answered as a `GET` (the host drops
    /// the body), as Berth does for its own components.
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The query as sent, without the `?`.
    pub query: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Request {
    /// Read the method, target, content type and body of `request`.
    pub fn read(request: &IncomingRequest) -> Result<Request> {
        let method = match request.method() {
            Method::Get | Method::Head => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Other(other) => other,
        };
        let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (target, String::new()),
        };
        let content_type = request
            .headers()
            .get("content-type")
            .into_iter()
            .next()
            .map(|value| String::from_utf8_lossy(&value).into_owned());
        // Only a write has a body worth reading.
        let body = if method == "POST" {
            read_body(request)?
        } else {
            Vec::new()
        };
        Ok(Request {
            method,
            path,
            query,
            content_type,
            body,
        })
    }

    /// The path split on `/`, without the empty leading segment.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }

    /// The first value of query parameter `name`, as sent (not decoded).
    fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Query parameter `name` as an integer in `range`, `None` when absent,
    /// a 400 naming the parameter and the range when it is anything else.
    pub fn query_int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>> {
        let Some(raw) = self.query_param(name) else {
            return Ok(None);
        };
        match percent_decode(raw).as_deref().and_then(parse_digits) {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(error(
                400,
                &format!(
                    "invalid query parameter `{name}={raw}`: expected an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// The body as JSON of type `T`: 415 when the content type is not JSON,
    /// 400 when the body does not parse or does not have `T`'s shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let content_type = self.content_type.as_deref().unwrap_or("");
        if !is_json(content_type) {
            let shown = if content_type.is_empty() {
                "none".to_string()
            } else {
                format!("`{content_type}`")
            };
            return Err(error(
                415,
                &format!("expected content-type application/json, got {shown}"),
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| error(400, &format!("invalid JSON body: {e}")))
    }

    /// [`json`](Self::json) for a body that must be one JSON object: serde
    /// also fills a struct from an array of its fields in order
    /// (`[5, "Ann"]`), which no client of a JSON API means to send, so that
    /// is answered 400 as well (in the same words as Berth's SDK).
    pub fn json_object<T: DeserializeOwned>(&self) -> Result<T> {
        let value = self.json()?;
        match self.body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(value),
            _ => Err(error(
                400,
                "invalid JSON body: expected a JSON object, got an array",
            )),
        }
    }
}

/// The whole request body. A body the host cut off (over its limit, or
/// stalled) fails the read: that is answered 400, though the client has
/// usually been answered by the host already.
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>> {
    let unreadable = || error(400, "could not read the request body");
    let body = request.consume().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| unreadable())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
            }
        }
        // The stream is a child of the body: it goes first.
    }
    drop(body);
    Ok(bytes)
}

/// `application/json` or any `application/...+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decimal digits only (no sign, no spaces), as a `u64`.
fn parse_digits(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Percent-decode a query value; `None` when an escape is broken or the
/// result is not UTF-8. A `+` stays a `+`: it is not a space in a URI.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path segment as a positive id of at most [`MAX_ID`], or 400.
pub fn parse_id(what: &str, raw: &str) -> Result<u64> {
    match parse_digits(raw) {
        Some(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        _ => Err(error(
            400,
            &format!("invalid {what} id `{raw}`: expected a positive integer below 2^63"),
        )),
    }
}

/// For `#[serde(default, deserialize_with = "http::present")]`: an optional
/// field may be left out, but not sent as `null`, which is not a value of
/// its type.
pub fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A response, built whole before it is sent.
pub struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    /// Add a header, builder style.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers
            .push((name.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// Send the status, the headers (with `content-length`, so the client
    /// gets a plain, not chunked, body) and the body.
    pub fn send(mut self, out: ResponseOutparam) {
        if !self.body.is_empty() {
            self.headers.push((
                "content-length".to_string(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        // Headers and status come from this file and are valid; if the host
        // refused them anyway, the trap is a 500 with the reason in its log.
        let fields = Fields::from_list(&self.headers).expect("valid response headers");
        let response = OutgoingResponse::new(fields);
        response
            .set_status_code(self.status)
            .expect("a valid status code");
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(out, Ok(response));
        {
            let stream = body.write().expect("the body stream is taken once");
            for chunk in self.body.chunks(WRITE_CHUNK) {
                // A client that went away fails the write: nothing is left
                // to tell it, and every write to the store is already staged.
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// A JSON reply of `value`.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => error(500, &format!("could not encode the response: {e}")),
    }
}

/// A reply whose body is already JSON.
pub fn json_bytes(status: u16, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".to_string(), b"application/json".to_vec())],
        body,
    }
}

/// A JSON error: `{"error": message}`.
pub fn error(status: u16, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

/// 204 No Content.
pub fn no_content() -> Reply {
    Reply {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// 405 with an `allow` header listing what the resource accepts.
pub fn method_not_allowed(method: &str, allow: &[&str]) -> Reply {
    let allow = allow.join(", ");
    error(
        405,
        &format!("method {method} is not allowed here; allowed: {allow}"),
    )
    .with_header("allow", &allow)
}
