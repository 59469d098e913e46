//! Helpers for JSON-over-HTTP handlers: reading requests, building responses
//! and the `{"error": "..."}` bodies every Berth service answers with.

use crate::{Header, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The result of a handler step: an early `Err` is already the response to send.
pub type Result<T> = std::result::Result<T, Response>;

/// A JSON response with the given status.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response {
            status,
            headers: vec![header("content-type", "application/json")],
            body,
        },
        Err(e) => error(500, &format!("could not encode the response: {e}")),
    }
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({ "error": message })
        .to_string()
        .into_bytes();
    Response {
        status,
        headers: vec![header("content-type", "application/json")],
        body,
    }
}

/// 204 No Content.
pub fn no_content() -> Response {
    Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// 405 with an `Allow` header listing what the resource accepts.
pub fn method_not_allowed(method: &str, allow: &[&str]) -> Response {
    let allow = allow.join(", ");
    let mut response = error(
        405,
        &format!("method {method} is not allowed here; allowed: {allow}"),
    );
    response.headers.push(header("allow", &allow));
    response
}

/// The query parameters of a listing: `limit` (1 to [`MAX_LIMIT`], default
/// [`DEFAULT_LIMIT`]) and the cursor `after` (an id; the page starts past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Most records on the page.
    pub limit: usize,
    /// The page holds records with ids greater than this (0: from the start).
    pub after: u64,
}

/// Records per page when the client does not say.
pub const DEFAULT_LIMIT: u64 = 100;
/// The most records a client may ask for in one page.
pub const MAX_LIMIT: u64 = 1000;

impl Paging {
    /// Read `limit` and `after` from the query, answering 400 when either
    /// is not an integer in its range.
    pub fn from_query(request: &Request) -> Result<Paging> {
        let limit = request
            .query_int("limit", 1..=MAX_LIMIT)?
            .unwrap_or(DEFAULT_LIMIT);
        let after = request.query_int("after", 0..=MAX_ID)?.unwrap_or(0);
        Ok(Paging {
            limit: limit as usize,
            after,
        })
    }
}

/// A 200 listing: the records as a JSON array and, when there is a next
/// page, `Link: <next>; rel="next"`, where `next` is the path and query to
/// fetch it (`link` builds it from the cursor).
pub fn listing<T: Serialize>(
    page: &crate::store::Page<T>,
    link: impl Fn(u64) -> String,
) -> Response {
    let response = json(200, &page.records);
    match page.next {
        Some(after) => with_header(
            response,
            "link",
            &format!("<{}>; rel=\"next\"", link(after)),
        ),
        None => response,
    }
}

/// Add a header to a response, builder style.
pub fn with_header(mut response: Response, name: &str, value: &str) -> Response {
    response.headers.push(header(name, value));
    response
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_string(),
        value: value.to_string(),
    }
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The path split on `/`, without the empty leading segment.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }

    /// The first value of query parameter `name`, as sent (not decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Parse the body as JSON into `T`, answering 415 when the content type
    /// is not JSON and 400 when the body does not parse or has the wrong shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let content_type = self.header("content-type").unwrap_or("");
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

    /// [`json`](Self::json) for a body that must be one JSON object, as a
    /// struct's fields are sent. serde also fills a struct from an array of
    /// its fields in order (`[5, "Ann"]`), which no client of a JSON API
    /// means to send: that is answered 400 too.
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

/// The largest id the services accept or assign: 2^63 - 1, the top of the
/// `int64` range the OpenAPI document declares and of the id counters.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Parse a path segment as a positive id (at most [`MAX_ID`]), answering 400
/// otherwise.
pub fn parse_id(what: &str, raw: &str) -> Result<u64> {
    match parse_digits(raw) {
        Some(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        _ => Err(error(
            400,
            &format!("invalid {what} id `{raw}`: expected a positive integer below 2^63"),
        )),
    }
}

/// Check a body field that holds an id: positive and at most [`MAX_ID`].
pub fn check_id_field(field: &str, id: u64) -> Result<u64> {
    if (1..=MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(error(
            400,
            &format!("field `{field}` must be a positive integer below 2^63"),
        ))
    }
}

/// Decimal digits only (no sign, no spaces), as a `u64`.
fn parse_digits(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Percent-decode a query value; `None` if an escape is broken or the
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

impl Request {
    /// Query parameter `name` as an integer in `range`, `None` when absent;
    /// 400 naming the parameter and the range otherwise.
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
}

/// For `#[serde(default, deserialize_with = "berth_sdk::http::present")]`:
/// an optional field may be left out, but not sent as `null`, which is not
/// a value of its type.
pub fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl Request {
    /// A request with no headers and no body, for calling another service.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}
