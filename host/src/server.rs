//! The HTTP front: accept connections on an already-bound listener, turn
//! each request into a component call, enforce the host-wide limits, and
//! drain in-flight requests on shutdown.

use crate::accept::{Body, ConnectionLimits, accept_loop};
use crate::bindings::{Header, Request as WitRequest, Response as WitResponse};
use crate::dispatch::{self, InvokeError};
use crate::executor::Executor;
use crate::mesh::Mesh;
use crate::metrics::{Metrics, RequestLabels, metrics};
use crate::wasi_http::HttpComponent;
use crate::wasi_http::front::StreamLimits;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Largest request body; larger ones get 413 (the rest of the body is
    /// read and discarded, within bounds, so the client sees the answer).
    pub max_body_bytes: usize,
    /// Longest wait for the next piece of a request body; the whole body
    /// must also arrive at an average of `body::MIN_BYTES_PER_SEC`. Bodies
    /// are read before a request takes an in-flight slot.
    pub body_timeout: Duration,
    /// Longest a response waits for a client that reads nothing before the
    /// connection is dropped.
    pub write_timeout: Duration,
    /// Largest request line plus headers; larger ones get 431. Past twice
    /// this, the parser stops reading and answers 431 itself.
    pub max_header_bytes: usize,
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
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// What the server serves: nothing but its own paths while starting up,
/// then the services. The port opens before start-up, so an orchestrator
/// sees a live process whose `/readyz` says what it is waiting for.
#[derive(Default)]
pub struct Startup {
    services: OnceLock<Arc<Mesh>>,
    stage: Mutex<String>,
}

impl Startup {
    pub fn new() -> Arc<Startup> {
        Arc::new(Startup::default())
    }

    /// Record what start-up is doing now, for `/readyz` to report.
    pub fn stage(&self, what: impl Into<String>) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = what.into();
    }

    /// Start serving `mesh`: from now on `/readyz` answers 200.
    pub fn ready(&self, mesh: Arc<Mesh>) {
        let _ = self.services.set(mesh);
    }

    fn services(&self) -> Option<&Arc<Mesh>> {
        self.services.get()
    }

    fn waiting_for(&self) -> String {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serve on `listener` until `shutdown` resolves, then stop accepting, let
/// in-flight requests finish for up to the drain timeout, and return.
/// Requests for components get 503 until `startup` is ready.
pub async fn serve(
    listener: TcpListener,
    startup: Arc<Startup>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        // Between the limit and twice it, the request still arrives here
        // and gets a JSON 431; past that the parser refuses to buffer it.
        max_header_bytes: config.max_header_bytes.saturating_mul(2),
        write_timeout: config.write_timeout,
        drain_timeout: config.drain_timeout,
    };
    let front = Arc::new(Front {
        startup,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        draining: AtomicBool::new(false),
        config,
    });
    // Once signalled, /readyz turns 503 at once, but the listener keeps
    // accepting for the shutdown delay; only then does the drain begin.
    let unready = front.clone();
    let shutdown = async move {
        shutdown.await;
        unready.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown signalled: /readyz now answers 503");
        tokio::time::sleep(unready.config.shutdown_delay).await;
    };
    let handler = move |req| {
        let front = front.clone();
        async move { handle(&front, req).await }
    };
    accept_loop("http", listener, &limits, handler, shutdown).await
}

/// The state every request of the service listener shares.
struct Front {
    startup: Arc<Startup>,
    config: ServerConfig,
    /// Host-wide cap on requests being handled; shared, because a streamed
    /// response holds its slot until its body is sent.
    in_flight: Arc<Semaphore>,
    /// Set once shutdown begins, so /readyz turns away new traffic.
    draining: AtomicBool,
}

/// Answer one request, then count it and log one line about it. A failed
/// request's details ride on its response as a [`Failure`] and go into that
/// same line, so each request logs exactly one.
async fn handle(front: &Front, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let request_id = request_id(&req);
    let (mut response, component) = answer(front, req, &request_id).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    if let Some(component) = &component {
        let m = metrics();
        m.requests
            .get_or_create(&RequestLabels {
                component: component.to_string(),
                method: crate::metrics::method_label(method.as_str()),
                status,
            })
            .inc();
        m.request_seconds
            .get_or_create(&Metrics::component(component))
            .observe(took.as_secs_f64());
    }
    let failure = response.extensions_mut().remove::<Failure>();
    crate::logging::request(&crate::logging::RequestLine {
        method: method.as_str(),
        path: &path,
        component: component.as_deref(),
        status,
        duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        request_id: &request_id,
        failure: failure.as_ref().map(|f| (f.level, f.message.as_str())),
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Why a request failed, for its log line: whoever builds a failed response
/// attaches one, and [`handle`] takes it off and logs it with the request.
#[derive(Clone)]
struct Failure {
    level: tracing::Level,
    message: String,
}

/// `response`, carrying `message` for the request's log line at `level`.
fn failed(mut response: Response<Body>, level: tracing::Level, message: String) -> Response<Body> {
    response.extensions_mut().insert(Failure { level, message });
    response
}

/// The response, and the component that produced it if one did.
async fn answer(
    front: &Front,
    req: Request<Incoming>,
    request_id: &Arc<str>,
) -> (Response<Body>, Option<Arc<str>>) {
    let config = &front.config;
    if let Some(response) = check_header_size(&req, config.max_header_bytes) {
        return (response, None);
    }
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
    let services = front.startup.services();
    match req.uri().path() {
        "/healthz" => {
            return (
                json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
                None,
            );
        }
        "/readyz" if front.draining.load(Ordering::Relaxed) => {
            let response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining: the server is shutting down",
            );
            return (response, None);
        }
        "/readyz" if services.is_none() => {
            let message = format!("starting: {}", front.startup.waiting_for());
            return (error(StatusCode::SERVICE_UNAVAILABLE, &message), None);
        }
        "/readyz" => {
            // Ready means able to serve writes: not while commits fail.
            if let Some(why) = services.and_then(|mesh| mesh.app.store.write_failure()) {
                let message = format!("the store cannot commit writes: {why}");
                return (error(StatusCode::SERVICE_UNAVAILABLE, &message), None);
            }
            // A broker that is away does not stop writes (their events wait
            // in the outbox), so the replica stays ready and says so.
            let mut body = serde_json::json!({ "status": "ready" });
            if let Some(broker) = services.and_then(|mesh| mesh.broker.as_ref()) {
                body["broker"] = match broker.unavailable() {
                    None => serde_json::json!("connected"),
                    Some(why) => serde_json::json!(format!(
                        "down: {why}; events wait in the outbox until it is back"
                    )),
                };
            }
            return (json(StatusCode::OK, body), None);
        }
        // Until loaded, what is served is not known: 503 like any route.
        "/openapi.json" => {
            if let Some(mesh) = services {
                return (openapi(mesh.app.openapi()), None);
            }
        }
        "/metrics" => return (metrics_text(), None),
        _ => {}
    }
    let Some(mesh) = services else {
        let message = format!(
            "the server is starting ({}); retry shortly",
            front.startup.waiting_for()
        );
        return (busy(&message), None);
    };
    let Some((component, strip)) = mesh.app.route(req.uri().path()) else {
        let message = format!("no service is routed at {}", req.uri().path());
        return (error(StatusCode::NOT_FOUND, &message), None);
    };
    let name = component.name().clone();
    let mut req = req;
    if let Some(prefix) = strip {
        strip_prefix(&mut req, &prefix);
    }
    if let Executor::Http(http) = &*component {
        let response = serve_http(front, mesh, http, req, request_id).await;
        return (response, Some(name));
    }
    // The whole body first, under its deadline: a client that stalls holds
    // only its connection, never an in-flight slot or a component's.
    let head = req.method() == hyper::Method::HEAD;
    let read = {
        let _reading = crate::accept::reading_body(&req);
        read_request(req, config).await
    };
    let mut request = match read {
        Ok(request) => request,
        Err(response) => return (response, Some(name)),
    };
    let Ok(_permit) = front.in_flight.try_acquire() else {
        let response = busy("the server is at its request limit; retry shortly");
        return (response, Some(name));
    };
    let _counted = InFlight::enter();
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
    let response = if head {
        without_body(response)
    } else {
        response
    };
    (response, Some(name))
}

/// Take the matched route `prefix` off the request's path (`/hello/x`
/// under `/hello` becomes `/x`, and `/hello` becomes `/`), keeping the query.
fn strip_prefix(req: &mut Request<Incoming>, prefix: &str) {
    if prefix == "/" {
        return;
    }
    let uri = req.uri();
    let rest = uri.path().strip_prefix(prefix).unwrap_or(uri.path());
    let path = if rest.is_empty() { "/" } else { rest };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    if let Ok(stripped) = target.parse() {
        *req.uri_mut() = stripped;
    }
}

/// A request through a `wasi:http` component: the body streams in and the
/// response streams out, so the request's slots are held by the response
/// body until it is sent (or the client goes).
async fn serve_http(
    front: &Front,
    mesh: &Arc<Mesh>,
    component: &HttpComponent,
    mut req: Request<Incoming>,
    request_id: &Arc<str>,
) -> Response<Body> {
    let config = &front.config;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        // As for a whole body: refused before the guest runs, and the rest
        // discarded (within bounds) so the client reads the 413.
        let (parts, body) = req.into_parts();
        let too_large = crate::body::BodyError::TooLarge {
            max: config.max_body_bytes,
            rest: Some(body),
        };
        return body_error(too_large, &parts.headers, |max| {
            format!("request body exceeds the limit of {max} bytes")
        });
    }
    let Ok(in_flight) = front.in_flight.clone().try_acquire_owned() else {
        return busy("the server is at its request limit; retry shortly");
    };
    let counted = InFlight::enter();
    let Ok(running) = component.limits().concurrency.clone().try_acquire_owned() else {
        return busy(&format!(
            "component `{}` is running as many requests as its max_concurrency allows; retry shortly",
            component.name()
        ));
    };
    let headers = req.headers_mut();
    headers.remove("x-berth-caller");
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    let env = mesh.env(request_id.clone(), Instant::now() + MAX_REQUEST_TIME);
    let limits = StreamLimits {
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
        max_response_bytes: config.max_response_bytes,
    };
    let hold = Box::new((in_flight, counted, running));
    match crate::wasi_http::front::serve(component, env, req, limits, hold).await {
        Ok(response) => response,
        Err(e) => invoke_error(component.name(), e.into()),
    }
}

/// A 431 if the request line and headers exceed `max` bytes, counted as
/// they arrived on the wire.
fn check_header_size(req: &Request<Incoming>, max: usize) -> Option<Response<Body>> {
    // "METHOD TARGET HTTP/1.1\r\n", then "name: value\r\n" per header.
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let mut size = req.method().as_str().len() + target + 11;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
    }
    (size > max).then(|| {
        error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("the request line and headers take {size} bytes; the limit is {max} bytes"),
        )
    })
}

/// A 503 asking the client to come back in a second.
fn busy(message: &str) -> Response<Body> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
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
    let mut response = Response::new(Body::new(metrics().render()));
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
            // The process's start time, then a counter: unique across restarts.
            static STARTED: OnceLock<u64> = OnceLock::new();
            let started = STARTED.get_or_init(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
            format!("{started:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed)).into()
        }
    }
}

/// Buffer the request into the WIT shape, refusing oversized bodies early
/// and slow ones at their deadline. HEAD is served as GET: the component
/// sees GET, and the client gets the headers without the body.
async fn read_request(
    req: Request<Incoming>,
    config: &ServerConfig,
) -> Result<WitRequest, Response<Body>> {
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
    let body = match crate::body::read(body, config.max_body_bytes, config.body_timeout).await {
        Ok(body) => body.to_vec(),
        Err(e) => {
            return Err(body_error(e, &parts.headers, |max| {
                format!("request body exceeds the limit of {max} bytes")
            }));
        }
    };
    let method = match parts.method {
        hyper::Method::HEAD => "GET".to_string(),
        method => method.as_str().to_string(),
    };
    Ok(WitRequest {
        method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
    })
}

/// The answer to a body that could not be read. The connection closes
/// after it; the rest of a body over the limit is discarded first (within
/// bounds) so a client still sending it reads the 413 rather than a reset.
/// `too_large` words the 413 for a limit of so many bytes.
pub fn body_error(
    e: crate::body::BodyError,
    headers: &hyper::HeaderMap,
    too_large: impl FnOnce(usize) -> String,
) -> Response<Body> {
    use crate::body::BodyError;
    let mut response = match e {
        BodyError::TooLarge { max, rest } => {
            if !crate::body::expects_continue(headers) {
                crate::body::discard_rest(rest);
            }
            error(StatusCode::PAYLOAD_TOO_LARGE, &too_large(max))
        }
        BodyError::TimedOut { gap } => error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive in time (at most {} s between pieces, at least {} KiB/s); send it without pausing",
                gap.as_secs(),
                crate::body::MIN_BYTES_PER_SEC / 1024
            ),
        ),
        BodyError::Broken(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("could not read the request body: {e}"),
        ),
    };
    response
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The response to a HEAD request: the GET's status and headers, with the
/// length its body would have, and no body.
fn without_body(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let length = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, Body::new(Bytes::new()))
}

/// Turn the component's answer into HTTP, checking what it returned.
fn write_response(component: &str, response: WitResponse, max_bytes: usize) -> Response<Body> {
    let bad = |what: String| {
        let response = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("component `{component}` {what}"),
        );
        failed(response, tracing::Level::ERROR, what)
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
    let mut out = Response::new(Body::new(response.body));
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

/// The response to a failed call. Nothing is logged here: the details go
/// into the request's own line (see [`Failure`]); a failing store also logs
/// its own error, rate-limited, where the commit failed.
fn invoke_error(component: &str, e: InvokeError) -> Response<Body> {
    match e {
        InvokeError::Timeout(limit) => failed(
            error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "component `{component}` did not answer within {} ms",
                    limit.as_millis()
                ),
            ),
            tracing::Level::WARN,
            format!("request stopped after {} ms", limit.as_millis()),
        ),
        InvokeError::Trap(trap) => failed(
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("component `{component}` failed: {}", trap.reason),
            ),
            tracing::Level::ERROR,
            format!("component trapped: {}", trap.details),
        ),
        InvokeError::Store(e) => failed(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is unavailable: {e}"),
            ),
            tracing::Level::WARN,
            format!("store failure: {e}"),
        ),
        InvokeError::Contention(e) => busy(&format!("too much contention: {e}; retry")),
        InvokeError::Busy(e) => busy(&format!("{e}; retry shortly")),
    }
}

/// The OpenAPI document of what the live manifest serves, merged when it
/// was loaded (see `openapi.rs`).
fn openapi(document: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(document));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let body = value.to_string();
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
