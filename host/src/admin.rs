//! The admin API, on its own listener: list components with their versions,
//! upload a new version (validated, then swapped in while serving), and roll
//! back. Every request needs `Authorization: Bearer <token>`.

use crate::accept::{Body, ConnectionLimits, accept_loop};
use crate::app::{App, ComponentInfo, Following, SwapError, VersionInfo};
use crate::events::{DeadLetters, RetryError};
use crate::store::versions::LiveVersion;
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// Limits and credentials of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub token: AdminToken,
    /// Largest wasm upload; larger ones get 413, before reading if declared.
    pub max_wasm_bytes: usize,
    /// Open admin connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of an upload (see `ServerConfig`).
    pub body_timeout: Duration,
    /// Longest a response waits for a client that reads nothing.
    pub write_timeout: Duration,
    /// How long shutdown waits for admin requests (an upload compiling).
    pub drain_timeout: Duration,
}

impl AdminConfig {
    pub fn new(token: AdminToken) -> AdminConfig {
        AdminConfig {
            token,
            max_wasm_bytes: 64 * 1024 * 1024,
            max_connections: 16,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// The admin bearer token. Only its SHA-256 is kept, so comparing takes the
/// same time whatever the length or content of what a client sends.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token from its secret text; surrounding whitespace (a file's final
    /// newline) is not part of it.
    pub fn new(secret: &str) -> anyhow::Result<AdminToken> {
        let secret = secret.trim();
        if secret.is_empty() {
            anyhow::bail!("the admin token is empty; use a long random string");
        }
        Ok(AdminToken(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether `presented` is the token, in time independent of where
    /// they differ: equal-length digests, every byte compared.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let diff = digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Serve the admin API for `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    dead_letters: DeadLetters,
    config: AdminConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: ADMIN_MAX_HEADER_BYTES,
        write_timeout: config.write_timeout,
        drain_timeout: config.drain_timeout,
    };
    let config = Arc::new(config);
    let dead_letters = Arc::new(dead_letters);
    let handler = move |req| {
        let app = app.clone();
        let config = config.clone();
        let dead_letters = dead_letters.clone();
        async move { handle(&app, &dead_letters, &config, req).await }
    };
    accept_loop("admin", listener, &limits, handler, shutdown).await
}

/// Request line and headers of an admin request: a token and a few more.
const ADMIN_MAX_HEADER_BYTES: usize = 16 * 1024;

async fn handle(
    app: &App,
    dead_letters: &DeadLetters,
    config: &AdminConfig,
    req: Request<Incoming>,
) -> Response<Body> {
    if !authorized(&config.token, &req) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "the admin API needs `Authorization: Bearer <token>` with the token berth was started with",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["components"] => match *req.method() {
            Method::GET => list(app).await,
            _ => method_not_allowed(req.method(), "GET"),
        },
        ["components", name] if !name.is_empty() => match *req.method() {
            Method::PUT => upload(app, config, name, req).await,
            _ => method_not_allowed(req.method(), "PUT"),
        },
        ["components", name, "rollback"] if !name.is_empty() => match *req.method() {
            Method::POST => match app.rollback(name).await {
                Ok(version) => {
                    tracing::info!(component = *name, version = %version.sha256, "rolled back");
                    component_reply(app, name, true).await
                }
                Err(e) => swap_error(&e),
            },
            _ => method_not_allowed(req.method(), "POST"),
        },
        ["dead-letters"] => match *req.method() {
            Method::GET => match dead_letters.list().await {
                Ok(dead) => json(StatusCode::OK, Value::Array(dead)),
                Err(e) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("cannot read the dead letters: {e:#}"),
                ),
            },
            _ => method_not_allowed(req.method(), "GET"),
        },
        // A broker's ids (`component/event-id`) hold a slash.
        ["dead-letters", id @ .., "retry"] if !id.is_empty() => match *req.method() {
            Method::POST => retry_dead_letter(dead_letters, &id.join("/")).await,
            _ => method_not_allowed(req.method(), "POST"),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no admin route at {path}; see GET /components"),
        ),
    }
}

/// `POST /dead-letters/{id}/retry`.
async fn retry_dead_letter(dead_letters: &DeadLetters, id: &str) -> Response<Body> {
    match dead_letters.retry(id).await {
        Ok(()) => {
            tracing::info!(dead_letter = id, "dead letter queued again");
            json(StatusCode::OK, json!({ "id": id, "queued": true }))
        }
        Err(e @ RetryError::NotFound(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ RetryError::Invalid { .. }) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(RetryError::Failed(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot retry the dead letter: {e:#}"),
        ),
    }
}

fn authorized(token: &AdminToken, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, presented)) if scheme.eq_ignore_ascii_case("bearer") => {
            token.matches(presented.trim())
        }
        _ => false,
    }
}

/// `GET /components`: every component as this replica serves it, each in
/// the shape a `PUT` or a rollback answers with.
async fn list(app: &App) -> Response<Body> {
    match components_json(app, None).await {
        Ok(components) => json(StatusCode::OK, Value::Array(components)),
        Err(response) => response,
    }
}

/// What a successful `PUT` or rollback answers: the component as
/// `GET /components` lists it, and whether the live version changed.
async fn component_reply(app: &App, name: &str, swapped: bool) -> Response<Body> {
    match components_json(app, Some(name)).await {
        Ok(mut found) if !found.is_empty() => {
            let mut component = found.swap_remove(0);
            component["swapped"] = Value::Bool(swapped);
            json(StatusCode::OK, component)
        }
        Ok(_) => swap_error(&SwapError::UnknownComponent(name.to_string())),
        Err(response) => response,
    }
}

/// Every component, or the one named `only`, as JSON objects; with a shared
/// store, each also with the store's live version and how this replica
/// stands to it.
async fn components_json(app: &App, only: Option<&str>) -> Result<Vec<Value>, Response<Body>> {
    let shared = match app.shared_live().await {
        None => None,
        Some(Ok(live)) => Some(live),
        Some(Err(e)) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the shared store's versions: {e}"),
            ));
        }
    };
    Ok(app
        .components()
        .iter()
        .filter(|c| only.is_none_or(|name| c.name == name))
        .map(|c| {
            let live = shared
                .as_ref()
                .map(|all| all.iter().find(|l| l.component == c.name));
            component_json(c, live)
        })
        .collect())
}

/// `shared`: `None` without a shared store, `Some(None)` when the store
/// has no record of the component yet.
fn component_json(c: &ComponentInfo, shared: Option<Option<&LiveVersion>>) -> Value {
    let mut value = json!({
        "name": c.name,
        "routes": c.routes,
        "kind": c.kind.as_str(),
        "version": c.live.sha256,
        "loaded_at": rfc3339(c.live.loaded_at),
        "can_roll_back": c.previous.is_some(),
        "previous": c.previous.as_ref().map(version_json),
    });
    if let Some(live) = shared {
        let (state, reason) = match &c.following {
            Following::Rejected { sha256, reason } => {
                ("rejected", Some(format!("version {sha256}: {reason}")))
            }
            Following::Compiling(_) => ("compiling", None),
            Following::Live if live.is_some_and(|l| l.sha256 != c.live.sha256) => ("behind", None),
            Following::Live => ("live", None),
        };
        value["here"] = json!({ "state": state, "reason": reason });
        value["shared"] = live.map_or(Value::Null, |l| {
            json!({
                "version": l.sha256,
                "previous": l.previous,
                "changed_at": rfc3339(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(l.changed_at_ms).unwrap_or(0))
                ),
                "changed_by": l.changed_by,
            })
        });
    }
    value
}

fn version_json(v: &VersionInfo) -> Value {
    json!({ "version": v.sha256, "loaded_at": rfc3339(v.loaded_at) })
}

/// `PUT /components/{name}`: read the wasm (bounded), validate, swap.
async fn upload(
    app: &App,
    config: &AdminConfig,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    if app.component(name).is_none() {
        return swap_error(&SwapError::UnknownComponent(name.to_string()));
    }
    // The whole upload first, under its deadline, before any work for it.
    let reading = crate::accept::reading_body(&req);
    let (parts, body) = req.into_parts();
    let wasm = match crate::body::read(body, config.max_wasm_bytes, config.body_timeout).await {
        Ok(wasm) => wasm.to_vec(),
        Err(e) => {
            return crate::server::body_error(e, &parts.headers, |max| {
                format!(
                    "the wasm exceeds the admin upload limit of {max} bytes (--admin-max-wasm-bytes)"
                )
            });
        }
    };
    drop(reading);
    match app.replace(name, wasm).await {
        Ok(replaced) => {
            if replaced.swapped {
                tracing::info!(component = name, version = %replaced.version.sha256, "swapped in an uploaded version");
            }
            component_reply(app, name, replaced.swapped).await
        }
        Err(e) => {
            tracing::warn!(
                component = name,
                "rejected an uploaded version; the old version keeps serving: {e}"
            );
            swap_error(&e)
        }
    }
}

fn swap_error(e: &SwapError) -> Response<Body> {
    let status = match e {
        SwapError::UnknownComponent(_) => StatusCode::NOT_FOUND,
        SwapError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SwapError::NoPrevious(_) => StatusCode::CONFLICT,
        SwapError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn method_not_allowed(method: &Method, allow: &'static str) -> Response<Body> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} is not allowed here; allowed: {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, json!({ "error": message }))
}

fn json(status: StatusCode, value: Value) -> Response<Body> {
    let mut response = Response::new(Body::new(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `time` as RFC 3339 in UTC, to the second, such as `2026-11-27T02:35:53Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let mut text = String::with_capacity(20);
    crate::logging::write_rfc3339(&mut text, time, false);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let check = |secs: u64, expected: &str| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(rfc3339(t), expected);
        };
        check(0, "1970-01-01T00:00:00Z");
        check(951_782_400, "2000-02-29T00:00:00Z");
        check(1_795_754_153, "2026-11-27T04:35:53Z");
        check(4_107_542_399, "2100-02-28T23:59:59Z");
    }

    #[test]
    fn token_matches_only_itself() {
        let token = AdminToken::new("s3cret\n").unwrap();
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret2"));
        assert!(!token.matches(""));
        assert!(AdminToken::new("  \n").is_err());
    }
}
