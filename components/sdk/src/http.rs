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

/// Parse a path segment as a positive 64-bit id, answering 400 otherwise.
pub fn parse_id(what: &str, raw: &str) -> Result<u64> {
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(error(
            400,
            &format!("invalid {what} id `{raw}`: expected a positive integer below 2^64"),
        )),
    }
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
