//! The HTTP front: accept connections on an already-bound listener, turn
//! each request into a component call, enforce the host-wide limits, and
//! drain in-flight requests on shutdown.

use crate::bindings::{Header, Request as WitRequest, Response as WitResponse};
use crate::dispatch::{self, InvokeError};
use crate::mesh::Mesh;
use crate::metrics::{Metrics, RequestLabels, metrics};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Host-wide limits of the HTTP front.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Open connections at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests being handled at once; further ones get 503 at once.
    pub max_in_flight: usize,
    /// Largest request body; larger ones get 413 before being read.
    pub max_body_bytes: usize,
    /// Largest response body a component may return; larger ones become 500.
    pub max_response_bytes: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long to keep serving, unready, between the shutdown signal and
    /// the drain.
    pub shutdown_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_in_flight: 256,
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            shutdown_delay: Duration::ZERO,
        }
    }
}

type Body = Full<Bytes>;

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting,
/// let in-flight requests finish for up to the drain timeout, and return.
pub async fn serve(
    listener: TcpListener,
    mesh: Arc<Mesh>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    // Set once shutdown begins, so /readyz turns away new traffic.
    let draining = Arc::new(AtomicBool::new(false));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    // Once signalled, /readyz turns 503 at once, but the listener keeps
    // accepting for the shutdown delay; only then does the drain begin.
    let unready = draining.clone();
    let delay = config.shutdown_delay;
    let shutdown = async move {
        shutdown.await;
        unready.store(true, Ordering::Relaxed);
        tracing::info!("shutdown signalled: /readyz now answers 503");
        tokio::time::sleep(delay).await;
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mesh = mesh.clone();
        let config = config.clone();
        let in_flight = in_flight.clone();
        let draining = draining.clone();
        let service = service_fn(move |req| {
            let mesh = mesh.clone();
            let config = config.clone();
            let in_flight = in_flight.clone();
            let draining = draining.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    handle(&mesh, &config, &in_flight, &draining, req).await,
                )
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    draining.store(true, Ordering::Relaxed);
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed with requests still running; exiting anyway");
    }
    Ok(())
}

/// Answer one request, then count it and log one line about it.
async fn handle(
    mesh: &Arc<Mesh>,
    config: &ServerConfig,
    in_flight: &Semaphore,
    draining: &AtomicBool,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let request_id = request_id(&req);
    let (mut response, component) =
        answer(mesh, config, in_flight, draining, req, &request_id).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    if let Some(component) = &component {
        let m = metrics();
        m.requests
            .get_or_create(&RequestLabels {
                component: component.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        m.request_seconds
            .get_or_create(&Metrics::component(component))
            .observe(took.as_secs_f64());
    }
    tracing::info!(
        target: "request",
        %method,
        path,
        component = component.as_deref().unwrap_or("-"),
        status,
        duration_ms = took.as_secs_f64() * 1000.0,
        request_id = &*request_id,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The response, and the component that produced it if one did.
async fn answer(
    mesh: &Arc<Mesh>,
    config: &ServerConfig,
    in_flight: &Semaphore,
    draining: &AtomicBool,
    req: Request<Incoming>,
    request_id: &Arc<str>,
) -> (Response<Body>, Option<Arc<str>>) {
    let host_path = matches!(
        req.uri().path(),
        "/healthz" | "/readyz" | "/openapi.json" | "/metrics"
    );
    if host_path && req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} is not allowed here; allowed: GET", req.method()),
        );
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return (response, None);
    }
    match req.uri().path() {
        "/healthz" => {
            return (
                json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
                None,
            );
        }
        // Everything is loaded before the port opens, so the only time the
        // server is up but not ready is while it drains.
        "/readyz" if draining.load(Ordering::Relaxed) => {
            let response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining: the server is shutting down",
            );
            return (response, None);
        }
        "/readyz" => {
            return (
                json(StatusCode::OK, serde_json::json!({ "status": "ready" })),
                None,
            );
        }
        "/openapi.json" => return (openapi(), None),
        "/metrics" => return (metrics_text(), None),
        _ => {}
    }
    let Some(component) = mesh.app.component_for(req.uri().path()) else {
        let message = format!("no service is routed at {}", req.uri().path());
        return (error(StatusCode::NOT_FOUND, &message), None);
    };
    let name = component.name().clone();
    let Ok(_permit) = in_flight.try_acquire() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its request limit; retry shortly",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return (response, Some(name));
    };
    let _counted = InFlight::enter();
    let mut request = match read_request(req, config.max_body_bytes).await {
        Ok(request) => request,
        Err(response) => return (response, Some(name)),
    };
    request
        .headers
        .retain(|h| h.name != "x-request-id" && h.name != "x-berth-caller");
    request.headers.push(Header {
        name: "x-request-id".into(),
        value: request_id.to_string(),
    });
    // The component's own timeout decides; this only caps calls it makes.
    let env = mesh.env(request_id.clone(), Instant::now() + MAX_REQUEST_TIME);
    let response = match dispatch::invoke(&component, env, &request).await {
        Ok(response) => write_response(&name, response, config.max_response_bytes),
        Err(e) => invoke_error(&name, e),
    };
    (response, Some(name))
}

/// Counts a request in the in-flight gauge for as long as it lives.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        metrics().in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

fn metrics_text() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(metrics().render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The longest any request may take, whatever its components' timeouts.
const MAX_REQUEST_TIME: Duration = Duration::from_secs(600);

/// The client's `X-Request-Id` if it is short, printable ASCII; else a new one.
fn request_id(req: &Request<Incoming>) -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.into(),
        None => {
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("{started:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed)).into()
        }
    }
}

/// Buffer the request into the WIT shape, refusing oversized bodies early.
async fn read_request(
    req: Request<Incoming>,
    max_body: usize,
) -> Result<WitRequest, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds the limit of {max_body} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("header `{name}` is not valid UTF-8"),
            ));
        };
        headers.push(Header {
            name: name.as_str().to_string(),
            value: value.to_string(),
        });
    }
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large());
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            ));
        }
    };
    Ok(WitRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
    })
}

/// Turn the component's answer into HTTP, checking what it returned.
fn write_response(component: &str, response: WitResponse, max_bytes: usize) -> Response<Body> {
    let bad = |what: String| {
        tracing::error!(component, "{what}");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("component `{component}` {what}"),
        )
    };
    if response.body.len() > max_bytes {
        return bad(format!(
            "returned a {} byte body; the limit is {max_bytes}",
            response.body.len()
        ));
    }
    let Ok(status) = StatusCode::from_u16(response.status) else {
        return bad(format!("returned invalid status {}", response.status));
    };
    let has_body = !response.body.is_empty();
    let mut out = Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = status;
    for Header { name, value } in response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return bad(format!("returned an invalid header `{name}`"));
        };
        // The host owns framing; a component cannot set it.
        if is_hop_by_hop(&name) {
            continue;
        }
        out.headers_mut().append(name, value);
    }
    if has_body && !out.headers().contains_key(CONTENT_TYPE) {
        out.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    out
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

fn invoke_error(component: &str, e: InvokeError) -> Response<Body> {
    match e {
        InvokeError::Timeout(limit) => {
            tracing::warn!(component, "request stopped after {} ms", limit.as_millis());
            error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "component `{component}` did not answer within {} ms",
                    limit.as_millis()
                ),
            )
        }
        InvokeError::Trap(trap) => {
            tracing::error!(component, "component trapped: {}", trap.details);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("component `{component}` failed: {}", trap.reason),
            )
        }
        InvokeError::Store(e) => {
            tracing::error!(component, "store failure: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is unavailable: {e}"),
            )
        }
        InvokeError::Contention(e) => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("too much contention: {e}; retry"),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// The OpenAPI document of the built-in users and orders API.
fn openapi() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let body = value.to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
