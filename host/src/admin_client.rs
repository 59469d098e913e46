//! The client side of the admin API, for `berth push` and `berth rollback`:
//! one HTTP/1.1 request to a running berth's admin listener, its JSON answer
//! read back (bounded), and every failure one line that says what to do.

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;

/// How long opening the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the whole exchange may take. A `PUT` is answered once the upload
/// is compiled, which for an interpreter's component (Python, JavaScript)
/// takes minutes on a small machine.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Most bytes of an answer read: the admin API's are small JSON documents.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A running berth's admin API, at a base URL such as
/// `http://127.0.0.1:9090`, with the bearer token it was started with.
#[derive(Debug)]
pub struct AdminClient {
    /// `host:port`, for the connection and the `Host` header.
    authority: String,
    token: String,
}

impl AdminClient {
    /// Check `url` (plain `http://HOST[:PORT]`, nothing after the authority
    /// but an optional `/`) and keep the token for the requests.
    pub fn new(url: &str, token: &str) -> anyhow::Result<AdminClient> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL; write it as http://HOST:PORT"))?;
        if uri.scheme_str() != Some("http") {
            bail!(
                "`{url}` is not an http:// URL: the admin API speaks plain HTTP, on loopback or a private network"
            );
        }
        let Some(authority) = uri.authority() else {
            bail!("`{url}` names no host; write it as http://HOST:PORT");
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("`{url}` has a path; give the admin listener's base URL, http://HOST:PORT");
        }
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let token = token.trim();
        if token.is_empty() {
            bail!("the admin token is empty");
        }
        Ok(AdminClient {
            authority,
            token: token.to_string(),
        })
    }

    /// Send one request and return the status and the JSON answer; a
    /// connection or protocol failure, or an answer that is not JSON, is an
    /// error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(method, path, body))
            .await
            .with_context(|| {
                format!(
                    "the admin API at {} did not answer within {} s",
                    self.authority,
                    EXCHANGE_TIMEOUT.as_secs()
                )
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let unreachable = || {
            format!(
                "cannot reach the admin API at {}: is berth running with --admin {}?",
                self.authority, self.authority
            )
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out"))
        .and_then(|connected| connected.map_err(anyhow::Error::from))
        .with_context(unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(unreachable)?;
        let driving = tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-length", body.len())
            .body(Full::new(Bytes::from(body)))
            .context("building the admin request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("the admin API at {} dropped the request", self.authority))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the admin API's answer: {e}"))?
            .to_bytes();
        driving.abort();
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the admin API answered {status} with something other than JSON: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })?;
        Ok((status, value))
    }
}

/// The message of an admin error answer (`{"error": "..."}`), or the whole
/// answer when it has none.
pub fn error_message(answer: &Value) -> String {
    match answer.get("error").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => answer.to_string(),
    }
}
