//! Unit tests for Berth components, in plain `cargo test`: load the compiled
//! component, send it requests, and inspect its responses, its key-value
//! namespace and its log lines. The component runs under the same wasmtime
//! runtime and the same request path as in `berth serve`; only the store is
//! in memory, fresh for each [`TestComponent`], so tests run in parallel.
//!
//! A component that sets `reuse` in its manifest should pass its tests with
//! instances reused too: [`TestComponent::with_reuse`] turns reuse on for one
//! component, and `BERTH_TEST_REUSE=N` in the environment for every
//! `berth:service` one a test run loads (`BERTH_TEST_REUSE=1000 cargo test`).
//!
//! ```no_run
//! use berth_test::TestComponent;
//! use serde_json::json;
//!
//! let users = TestComponent::builtin("users").unwrap();
//! let created = users.post("/users").json(&json!({"name": "Ann"})).send().unwrap();
//! assert_eq!(created.status, 201);
//! assert_eq!(created.json()["name"], "Ann");
//! ```

use berth::bindings::Response;
use berth::bindings::berth::service::log::Level;
use berth::bindings::berth::service::services::CallError;
use berth::bindings::{Header, Request};
use berth::capabilities::log::LogSink;
use berth::capabilities::services::{Caller, Services};
use berth::dispatch::{self, InvokeError};
use berth::executor::Executor;
use berth::reuse::Reuse;
use berth::runtime::CallEnv;
use berth::runtime::{CallLimits, Component, EngineConfig, Runtime};
use berth::store::{MemoryStore, NewEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The deadline a test component gets unless [`TestComponent::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MEMORY: usize = 64 * 1024 * 1024;
/// Calls of one component at once; the engine's instance pool caps it anyway.
const DEFAULT_CONCURRENCY: usize = 64;
/// Names the requests each instance serves, for every component a test
/// run loads; unset, each request gets a fresh instance.
pub const REUSE_ENV: &str = "BERTH_TEST_REUSE";

/// Why a request produced no response.
#[derive(Debug)]
pub enum Error {
    /// The component trapped. `details` holds its stderr (where a Rust panic
    /// message lands) and the wasm backtrace.
    Trap { reason: String, details: String },
    /// The component ran past its deadline and was stopped.
    Timeout(Duration),
    /// The writes could not be committed.
    Store(String),
    /// An event was delivered on a topic the component's manifest entry
    /// does not subscribe to (see [`TestComponent::with_manifest`]): the
    /// host would never deliver it.
    NotSubscribed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Trap { reason, details } => write!(f, "component trapped: {reason}\n{details}"),
            Error::Timeout(t) => write!(f, "component did not answer within {} ms", t.as_millis()),
            Error::Store(e) => write!(f, "store failure: {e}"),
            Error::NotSubscribed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

/// One log line a component wrote through `berth:service/log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// A component loaded for testing, with its own in-memory store and log.
pub struct TestComponent {
    name: String,
    component: Executor,
    store: Arc<MemoryStore>,
    logs: Arc<LogCapture>,
    wasm: Arc<Component>,
    timeout: Duration,
    /// Requests per instance, when instances are reused.
    reuse: Option<u32>,
    stubs: Arc<Stubs>,
    /// The grants of the manifest entry it was loaded under, if any.
    grants: Option<Arc<Grants>>,
    /// Numbers the deliveries [`TestComponent::deliver`] makes.
    deliveries: std::sync::atomic::AtomicI64,
    /// Drives the component's future and its commit.
    executor: tokio::runtime::Runtime,
}

impl TestComponent {
    /// The workspace's build of a built-in component: `users` or `orders`.
    pub fn builtin(name: &str) -> anyhow::Result<TestComponent> {
        let wasm = berth::builtin::wasm(name).ok_or_else(|| {
            anyhow::anyhow!(
                "no built-in component `{name}`; built-ins are: {}",
                berth::builtin::NAMES.join(", ")
            )
        })?;
        TestComponent::from_bytes(name, wasm)
    }

    /// A component from a `.wasm` file; its namespace is the file's stem.
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<TestComponent> {
        let path = path.as_ref();
        let wasm =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("component")
            .replace('_', "-");
        TestComponent::from_bytes(&name, &wasm)
    }

    /// One of Berth's own guest components, test-only ones included (such
    /// as `misbehave`), built on first use in this process. For Berth's own
    /// tests; a component author uses [`TestComponent::build`].
    #[doc(hidden)]
    pub fn workspace(name: &str) -> anyhow::Result<TestComponent> {
        TestComponent::from_file(berth::guest_build::test_guest(name)?)
    }

    /// Build the Rust component crate in `crate_dir` (`cargo build --release
    /// --target wasm32-wasip2`, into the crate's own target directory) and
    /// load the `.wasm` it produced, so a test never runs a stale build. A
    /// relative path is from the test's working directory, the directory of
    /// the package under test. A failed build is an error holding the
    /// command and the compiler's messages.
    ///
    /// ```no_run
    /// let products = berth_test::TestComponent::build("..").unwrap();
    /// assert_eq!(products.get("/products").send().unwrap().status, 200);
    /// ```
    pub fn build(crate_dir: impl AsRef<Path>) -> anyhow::Result<TestComponent> {
        TestComponent::from_file(berth::guest_build::cargo(crate_dir.as_ref(), None)?)
    }

    /// Run `command`, any build (componentize-py, componentize-js, a
    /// script), then load `output`, the `.wasm` it writes. A failed command
    /// is an error holding the command line and its output.
    ///
    /// ```no_run
    /// let cmd = std::process::Command::new("../build.sh");
    /// let svc = berth_test::TestComponent::build_with(cmd, "../build/products.wasm").unwrap();
    /// ```
    pub fn build_with(
        mut command: std::process::Command,
        output: impl AsRef<Path>,
    ) -> anyhow::Result<TestComponent> {
        TestComponent::from_file(berth::guest_build::command(&mut command, output.as_ref())?)
    }

    /// A component from wasm bytes, under the namespace `name`.
    pub fn from_bytes(name: &str, wasm: &[u8]) -> anyhow::Result<TestComponent> {
        let compiled = compiled(name, wasm)?;
        // Reuse is for berth:service components only, so the environment's
        // setting leaves a wasi:http one as it is.
        let reuse = match berth::shape::check(name, wasm) {
            Ok(berth::executor::Kind::WasiHttp) => None,
            _ => reuse_from_env()?,
        };
        TestComponent::link(name, compiled, DEFAULT_TIMEOUT, reuse, None)
    }

    fn link(
        name: &str,
        wasm: Arc<Component>,
        timeout: Duration,
        reuse: Option<u32>,
        grants: Option<Arc<Grants>>,
    ) -> anyhow::Result<TestComponent> {
        let limits = CallLimits::new(timeout, DEFAULT_MEMORY, DEFAULT_CONCURRENCY)
            .with_reuse(reuse.map(|max_uses| Reuse {
                max_uses,
                idle: Duration::from_secs(3600),
                max_idle: DEFAULT_CONCURRENCY,
            }))
            .with_subscriptions(grants.as_ref().is_some_and(|g| !g.subscribes.is_empty()));
        let component = runtime()?.link(name, &wasm, limits)?;
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(TestComponent {
            name: name.to_string(),
            component,
            store: Arc::new(MemoryStore::new()),
            logs: Arc::new(LogCapture::default()),
            wasm,
            timeout,
            reuse,
            stubs: Arc::new(Stubs {
                services: Mutex::default(),
                grants: grants.clone(),
            }),
            grants,
            deliveries: Default::default(),
            executor,
        })
    }

    /// The same component with a different deadline per request. The store
    /// and the captured log start empty.
    pub fn with_timeout(self, timeout: Duration) -> anyhow::Result<TestComponent> {
        TestComponent::link(&self.name, self.wasm, timeout, self.reuse, self.grants)
    }

    /// The same component under its entry in the manifest at `path` (the
    /// entry named as the component is), so that it runs with the grants it
    /// will be served with: a call to a service not in `calls` and a
    /// publish on a topic not in `publishes` fail as they fail when served,
    /// [`TestComponent::deliver`] refuses a topic not in `subscribes`, and a
    /// component with `subscribes` must export an event handler. The entry's
    /// `timeout_ms` applies too. The store and the captured log start empty.
    pub fn with_manifest(self, path: impl AsRef<Path>) -> anyhow::Result<TestComponent> {
        let path = path.as_ref();
        let manifest = berth::manifest::Manifest::from_file(path)?;
        let Some(spec) = manifest.components.get(&self.name) else {
            anyhow::bail!(
                "the manifest {} has no component `{}`; its components are: {}",
                path.display(),
                self.name,
                manifest
                    .components
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let grants = Grants {
            calls: spec.calls.clone(),
            publishes: spec.publishes.clone(),
            subscribes: spec.subscribes.clone(),
        };
        TestComponent::link(
            &self.name,
            self.wasm,
            spec.timeout,
            self.reuse,
            Some(Arc::new(grants)),
        )
    }

    /// The same component with each instance kept for up to `requests`
    /// requests, as `reuse = N` in a manifest does: memory and globals
    /// survive from one request to the next (never after a trap or a
    /// timeout). The store and the captured log start empty.
    pub fn with_reuse(self, requests: u32) -> anyhow::Result<TestComponent> {
        if requests == 0 {
            anyhow::bail!("reuse needs at least 1 request per instance");
        }
        TestComponent::link(
            &self.name,
            self.wasm,
            self.timeout,
            Some(requests),
            self.grants,
        )
    }

    /// Requests each instance serves, when instances are reused.
    pub fn reuse(&self) -> Option<u32> {
        self.reuse
    }

    /// Start a request; finish it with [`RequestBuilder::send`].
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder<'_> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        RequestBuilder {
            component: self,
            request: Request {
                method: method.to_ascii_uppercase(),
                path: path.to_string(),
                query: query.to_string(),
                headers: Vec::new(),
                body: Vec::new(),
            },
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder<'_> {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder<'_> {
        self.request("POST", path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder<'_> {
        self.request("PUT", path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder<'_> {
        self.request("PATCH", path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder<'_> {
        self.request("DELETE", path)
    }

    /// The committed value of `key` in the component's namespace.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.value(&self.name, key)
    }

    /// The committed value of `key`, parsed as JSON; panics if it is not JSON.
    pub fn kv_get_json(&self, key: &str) -> Option<Value> {
        self.kv_get(key).map(|raw| {
            serde_json::from_slice(&raw).unwrap_or_else(|e| {
                panic!(
                    "value of `{key}` is not JSON ({e}): {}",
                    String::from_utf8_lossy(&raw)
                )
            })
        })
    }

    /// Store `value` under `key` before the component runs.
    pub fn kv_set(&self, key: &str, value: impl AsRef<[u8]>) {
        self.store.put(&self.name, key, value.as_ref());
    }

    /// Remove `key`, between requests, as another writer might.
    pub fn kv_delete(&self, key: &str) {
        self.store.remove(&self.name, key);
    }

    /// Store `value` as JSON under `key`.
    pub fn kv_set_json(&self, key: &str, value: &impl Serialize) {
        self.kv_set(key, serde_json::to_vec(value).expect("serialisable value"));
    }

    /// Every key in the component's namespace, in order.
    pub fn kv_keys(&self) -> Vec<String> {
        self.store
            .entries(&self.name)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answer the component's calls to `service` with `stub` instead of a
    /// real component. Calls to services with no stub fail with
    /// `unknown-service`, as they would for a name the host does not know.
    pub fn stub_service(
        &self,
        service: &str,
        stub: impl Fn(&Request) -> StubResponse + Send + Sync + 'static,
    ) {
        self.stubs
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), Arc::new(stub));
    }

    /// Every event the component published in committed requests, oldest first.
    pub fn published(&self) -> Vec<PublishedEvent> {
        self.store
            .published()
            .into_iter()
            // Not the events `deliver` queued on the component's behalf.
            .filter(|e| e.source == self.name)
            .map(|e| PublishedEvent {
                id: e.id,
                topic: e.topic,
                payload: serde_json::from_str(&e.payload).unwrap_or(Value::Null),
            })
            .collect()
    }

    /// Deliver an event to the component's event handler, as the host's
    /// delivery worker would. `Ok(Err(reason))`: the component refused it.
    pub fn deliver(&self, topic: &str, payload: &Value) -> Result<Result<(), String>, Error> {
        if let Some(grants) = &self.grants
            && !grants.subscribes.iter().any(|t| t == topic)
        {
            return Err(Error::NotSubscribed(format!(
                "component `{}` does not subscribe to `{topic}`, so the host would never deliver it; add it to `subscribes` in the manifest",
                self.name
            )));
        }
        let id = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let delivery = self
            .store
            .enqueue(NewEvent {
                id: format!("test-event-{id}"),
                topic: topic.to_string(),
                payload: payload.to_string(),
                source: "test".to_string(),
                recipients: vec![self.name.clone()],
            })
            .remove(0);
        let ack = dispatch::Ack::Row(delivery.id);
        let outcome = self.executor.block_on(dispatch::deliver(
            &self.component,
            self.env(),
            &delivery,
            ack,
        ));
        match outcome.map_err(Error::from)? {
            dispatch::Delivered::Refused(reason) => Ok(Err(reason)),
            dispatch::Delivered::Applied | dispatch::Delivered::Duplicate => Ok(Ok(())),
        }
    }

    fn env(&self) -> CallEnv {
        CallEnv {
            store: self.store.clone(),
            log_sink: Some(self.logs.clone()),
            services: Some(self.stubs.clone()),
            request_id: "test-request".into(),
            depth: 0,
            deadline: Instant::now() + Duration::from_secs(3600),
        }
    }

    fn send(&self, request: &Request) -> Result<TestResponse, Error> {
        let outcome =
            self.executor
                .block_on(dispatch::invoke(&self.component, self.env(), request));
        match outcome {
            Ok(response) => Ok(TestResponse {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: response.body,
            }),
            Err(e) => Err(Error::from(e)),
        }
    }
}

impl From<InvokeError> for Error {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::Trap(trap) => Error::Trap {
                reason: trap.reason,
                details: trap.details,
            },
            InvokeError::Timeout(t) => Error::Timeout(t),
            InvokeError::Store(e) | InvokeError::Contention(e) | InvokeError::Busy(e) => {
                Error::Store(e)
            }
        }
    }
}

/// What a stubbed service answers: a status and a JSON body.
#[derive(Debug, Clone)]
pub struct StubResponse {
    pub status: u16,
    pub body: Value,
}

impl StubResponse {
    pub fn json(status: u16, body: Value) -> StubResponse {
        StubResponse { status, body }
    }
}

/// An event the component published.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEvent {
    pub id: String,
    pub topic: String,
    pub payload: Value,
}

type Stub = Arc<dyn Fn(&Request) -> StubResponse + Send + Sync>;

/// The harness's stand-in for other services: stubs by name, no
/// subscribers (published events are kept for inspection), and every call
/// and topic allowed unless the component was loaded under a manifest.
struct Stubs {
    services: Mutex<HashMap<String, Stub>>,
    grants: Option<Arc<Grants>>,
}

/// What a manifest entry lets a component do.
struct Grants {
    calls: Vec<String>,
    publishes: Vec<String>,
    subscribes: Vec<String>,
}

impl Services for Stubs {
    fn call(
        self: Arc<Self>,
        caller: Caller,
        service: String,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        if let Some(grants) = &self.grants
            && !grants.calls.contains(&service)
        {
            let refused = berth::mesh::call_not_allowed(&caller.component, &service);
            return Box::pin(std::future::ready(Err(refused)));
        }
        let stub = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&service)
            .cloned();
        let answer = match stub {
            None => Err(CallError::UnknownService(format!(
                "no stub for service `{service}`; add one with TestComponent::stub_service"
            ))),
            Some(stub) => {
                let reply = stub(&request);
                Ok(Response {
                    status: reply.status,
                    headers: vec![Header {
                        name: "content-type".into(),
                        value: "application/json".into(),
                    }],
                    body: reply.body.to_string().into_bytes(),
                })
            }
        };
        Box::pin(std::future::ready(answer))
    }

    fn may_publish(&self, _component: &str, topic: &str) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.publishes.iter().any(|t| t == topic))
    }

    fn subscribers(&self, _topic: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A request being put together.
pub struct RequestBuilder<'a> {
    component: &'a TestComponent,
    request: Request,
}

impl RequestBuilder<'_> {
    /// Add a header (the name is lower-cased, as the host does).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.to_string(),
        });
        self
    }

    /// Set the raw query string (without `?`).
    pub fn query(mut self, query: &str) -> Self {
        self.request.query = query.to_string();
        self
    }

    /// Send `value` as a JSON body with `content-type: application/json`.
    pub fn json(self, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("serialisable value");
        self.header("content-type", "application/json").body(body)
    }

    /// Set the raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.request.body = body.into();
        self
    }

    /// Run the request through the component and commit its writes.
    pub fn send(self) -> Result<TestResponse, Error> {
        self.component.send(&self.request)
    }
}

/// What the component answered.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as a JSON value; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        self.json_as()
    }

    /// The body parsed into `T`; panics with the body if it does not parse.
    pub fn json_as<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not the expected JSON ({e}): {}",
                self.text()
            )
        })
    }

    /// The `error` message of a `{"error": "..."}` body.
    pub fn error(&self) -> String {
        let body = self.json();
        match body["error"].as_str() {
            Some(message) => message.to_string(),
            None => panic!("no `error` string in {body}"),
        }
    }
}

#[derive(Default)]
struct LogCapture {
    lines: Mutex<Vec<LogLine>>,
}

impl LogSink for LogCapture {
    fn record(&self, _component: &str, level: Level, message: &str) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LogLine {
                level,
                message: message.to_string(),
            });
    }
}

/// The reuse that [`REUSE_ENV`] asks for, if any.
fn reuse_from_env() -> anyhow::Result<Option<u32>> {
    let Ok(value) = std::env::var(REUSE_ENV) else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(_) => anyhow::bail!(
            "{REUSE_ENV}={value:?} is not a number of requests per instance; set it to a number such as 1000, or unset it"
        ),
    }
}

/// One engine for every test in the process: creating it is cheap, but
/// compiling a component is not, so compiled components are cached too.
fn runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let config = EngineConfig {
                max_instances: 64,
                max_memory_bytes: DEFAULT_MEMORY,
                cache_dir: None,
                ..EngineConfig::default()
            };
            Runtime::new(&config).map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn compiled(name: &str, wasm: &[u8]) -> anyhow::Result<Arc<Component>> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u8>, Arc<Component>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(wasm) {
        return Ok(hit.clone());
    }
    let sha256 = berth::app::sha256_hex(wasm);
    let component = Arc::new(runtime()?.compile(name, wasm, &sha256)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(wasm.to_vec(), component.clone());
    Ok(component)
}
