//! How components reach each other: the manifest's grants (who may call
//! whom, who may publish what, who subscribes to what) over the loaded
//! [`App`]. Every request, call and delivery gets its [`CallEnv`] here.

use crate::app::App;
use crate::bindings::berth::service::services::CallError;
use crate::bindings::{Header, Request, Response};
use crate::broker::{Broker, RELAYED};
use crate::capabilities::services::{Caller, Services};
use crate::dispatch::{self, InvokeError};
use crate::manifest::Manifest;
use crate::metrics::{CallLabels, metrics};
use crate::runtime::CallEnv;
use crate::wasi_http::outbound::Origin;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_config::WasiConfigVariables;

/// Calls deeper than this fail with `too-deep` unless configured otherwise.
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;

/// The components of an [`App`] and the settings of this process that
/// reach across them. What each component may reach is the app's live
/// [`Grants`], read at each check, so a manifest reload changes them.
pub struct Mesh {
    pub app: Arc<App>,
    max_depth: u32,
    /// The broker events go through, if any; without one they are
    /// delivered in-process.
    pub broker: Option<Arc<Broker>>,
    /// Signalled when a request commits events, so the delivery worker or
    /// relay moves them on at once instead of at its next poll.
    pub events_waiting: tokio::sync::Notify,
}

/// What each component of one manifest may reach, and its `config`.
/// Built once per manifest (at load and at each reload) and swapped in
/// with the route table, never changed in place.
#[derive(Default)]
pub struct Grants {
    /// Component to the components it may call.
    calls: HashMap<String, HashSet<String>>,
    /// Component to the topics it may publish on.
    publishes: HashMap<String, HashSet<String>>,
    /// Component to the origins it may send HTTP requests to.
    outbound: HashMap<String, Vec<Origin>>,
    /// Component to its `wasi:config` values, shared by its requests.
    config: HashMap<String, Arc<WasiConfigVariables>>,
    /// Topic to its subscribers, in name order.
    subscribers: HashMap<String, Vec<String>>,
}

impl Grants {
    pub fn new(manifest: &Manifest) -> Grants {
        let mut subscribers: HashMap<String, Vec<String>> = HashMap::new();
        for (name, spec) in &manifest.components {
            for topic in &spec.subscribes {
                subscribers
                    .entry(topic.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        let grant = |pick: fn(&crate::manifest::ComponentSpec) -> &Vec<String>| {
            manifest
                .components
                .iter()
                .map(|(name, spec)| (name.clone(), pick(spec).iter().cloned().collect()))
                .collect()
        };
        let calls: HashMap<String, HashSet<String>> = grant(|spec| &spec.calls);
        for (caller, callees) in &calls {
            for callee in callees {
                metrics().call_granted(caller, callee);
            }
        }
        Grants {
            calls,
            publishes: grant(|spec| &spec.publishes),
            outbound: manifest
                .components
                .iter()
                .map(|(name, spec)| (name.clone(), spec.outbound.clone()))
                .collect(),
            config: manifest
                .components
                .iter()
                .map(|(name, spec)| (name.clone(), Arc::new(spec.config.iter().collect())))
                .collect(),
            subscribers,
        }
    }

    fn may_call(&self, caller: &str, callee: &str) -> bool {
        self.calls
            .get(caller)
            .is_some_and(|allowed| allowed.contains(callee))
    }
}

impl Mesh {
    pub fn new(app: Arc<App>, max_depth: u32, broker: Option<Arc<Broker>>) -> Arc<Mesh> {
        Arc::new(Mesh {
            app,
            max_depth,
            broker,
            events_waiting: tokio::sync::Notify::new(),
        })
    }

    /// The environment of a request arriving from outside.
    pub fn env(self: &Arc<Self>, request_id: Arc<str>, deadline: Instant) -> CallEnv {
        CallEnv {
            store: self.app.store.clone(),
            log_sink: None,
            services: Some(self.clone()),
            request_id,
            depth: 0,
            deadline,
        }
    }

    /// Every subscribing component, with the topics it subscribes to.
    pub fn subscriptions(&self) -> BTreeMap<String, Vec<String>> {
        let grants = self.app.grants();
        let mut subscriptions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (topic, components) in &grants.subscribers {
            for component in components {
                subscriptions
                    .entry(component.clone())
                    .or_default()
                    .push(topic.clone());
            }
        }
        for topics in subscriptions.values_mut() {
            topics.sort();
        }
        subscriptions
    }

    /// The components subscribed to `topic`, each owed its own delivery
    /// when this process delivers events itself.
    pub fn subscribers_in_process(&self, topic: &str) -> Vec<String> {
        self.app
            .grants()
            .subscribers
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }
}

impl Services for Mesh {
    fn call(
        self: Arc<Self>,
        caller: Caller,
        service: String,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        Box::pin(async move {
            let started = Instant::now();
            let path = request.path.clone();
            let result = self.run_call(&caller, &service, request).await;
            record_call(&self, &caller, &service, &path, &result, started);
            result.map_err(|(e, _)| e)
        })
    }

    fn may_reach(&self, component: &str, uri: &hyper::Uri) -> bool {
        self.app
            .grants()
            .outbound
            .get(component)
            .is_some_and(|origins| origins.iter().any(|o| o.allows(uri)))
    }

    fn config(&self, component: &str) -> Option<Arc<WasiConfigVariables>> {
        self.app.grants().config.get(component).cloned()
    }

    fn may_publish(&self, component: &str, topic: &str) -> bool {
        self.app
            .grants()
            .publishes
            .get(component)
            .is_some_and(|allowed| allowed.contains(topic))
    }

    /// The recipients an event on `topic` is written to the outbox for:
    /// each subscriber, or with a broker one row that the broker fans out.
    fn events_committed(&self) {
        // A permit is kept if nobody waits, so a wake-up is never lost.
        self.events_waiting.notify_one();
    }

    fn subscribers(&self, topic: &str) -> Vec<String> {
        let subscribers = self.subscribers_in_process(topic);
        if self.broker.is_some() && !subscribers.is_empty() {
            return vec![RELAYED.to_string()];
        }
        subscribers
    }
}

/// Count one call and log one line about it, with the request's id so the
/// call can be found from the request's line and the other way round.
fn record_call(
    mesh: &Mesh,
    caller: &Caller,
    service: &str,
    path: &str,
    result: &Result<Response, (CallError, String)>,
    started: Instant,
) {
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let (outcome, detail) = match result {
        Ok(_) => ("ok", None),
        Err((e, detail)) => (
            match e {
                CallError::NotAllowed(_) => "not_allowed",
                CallError::UnknownService(_) => "unknown",
                CallError::TooDeep(_) => "too_deep",
                CallError::Timeout(_) => "timeout",
                CallError::Failed(_) => "failed",
                CallError::Unavailable(_) => "unavailable",
            },
            Some(detail.as_str()),
        ),
    };
    // The callee is named by the guest: only a loaded component's name
    // becomes a label, so the series stay bounded.
    let callee = if mesh.app.component(service).is_some() {
        service
    } else {
        "other"
    };
    metrics()
        .calls
        .get_or_create(&CallLabels {
            caller: caller.component.to_string(),
            callee: callee.to_string(),
            outcome,
        })
        .inc();
    let caller_name = &*caller.component;
    let request_id = &*caller.request_id;
    match (result, detail) {
        (Ok(response), _) => tracing::info!(
            target: "call",
            caller = caller_name,
            callee = service,
            path,
            outcome,
            status = response.status,
            duration_us,
            request_id,
            "call"
        ),
        (Err(_), detail) => tracing::warn!(
            target: "call",
            caller = caller_name,
            callee = service,
            path,
            outcome,
            duration_us,
            request_id,
            error = detail,
            "call"
        ),
    }
}

impl Mesh {
    /// Check a call against the grants, depth and deadline, then run it.
    /// An error comes with what the call's log line should say: the same
    /// message, or for a trap its details, which the caller is not shown.
    async fn run_call(
        self: &Arc<Self>,
        caller: &Caller,
        service: &str,
        request: Request,
    ) -> Result<Response, (CallError, String)> {
        let checked = self.check_call(caller, service);
        let callee = checked.map_err(|e| {
            let detail = call_error_message(&e).to_string();
            (e, detail)
        })?;
        let request = with_call_headers(request, caller);
        let env = CallEnv {
            depth: caller.depth + 1,
            deadline: caller.deadline,
            ..self.env(caller.request_id.clone(), caller.deadline)
        };
        dispatch::invoke(&callee, env, &request).await.map_err(|e| {
            let detail = match &e {
                InvokeError::Trap(trap) => format!("`{service}` trapped: {}", trap.details),
                _ => format!("`{service}` {e}"),
            };
            let e = match e {
                InvokeError::Timeout(_) => CallError::Timeout(format!("`{service}` {e}")),
                InvokeError::Trap(_) => CallError::Failed(format!("`{service}` {e}")),
                InvokeError::Store(_) | InvokeError::Contention(_) | InvokeError::Busy(_) => {
                    CallError::Unavailable(format!("`{service}` {e}"))
                }
            };
            (e, detail)
        })
    }

    /// The callee, if `caller` may call `service` now.
    fn check_call(
        &self,
        caller: &Caller,
        service: &str,
    ) -> Result<Arc<crate::executor::Executor>, CallError> {
        if !self.app.grants().may_call(&caller.component, service) {
            return Err(call_not_allowed(&caller.component, service));
        }
        let Some(callee) = self.app.component(service) else {
            return Err(CallError::UnknownService(format!(
                "no component is named `{service}`"
            )));
        };
        if caller.depth + 1 > self.max_depth {
            return Err(CallError::TooDeep(format!(
                "calling `{service}` from `{}` would nest {} calls; the limit is {}",
                caller.component,
                caller.depth + 1,
                self.max_depth
            )));
        }
        if Instant::now() >= caller.deadline {
            return Err(CallError::Timeout(format!(
                "no time left to call `{service}`"
            )));
        }
        Ok(callee)
    }
}

/// `request` carrying the request id and the caller's name, whatever the
/// caller set itself.
fn with_call_headers(mut request: Request, caller: &Caller) -> Request {
    request
        .headers
        .retain(|h| h.name != "x-request-id" && h.name != "x-berth-caller");
    request.headers.push(Header {
        name: "x-request-id".into(),
        value: caller.request_id.to_string(),
    });
    request.headers.push(Header {
        name: "x-berth-caller".into(),
        value: caller.component.to_string(),
    });
    request
}

fn call_error_message(e: &CallError) -> &str {
    match e {
        CallError::NotAllowed(m)
        | CallError::UnknownService(m)
        | CallError::TooDeep(m)
        | CallError::Timeout(m)
        | CallError::Failed(m)
        | CallError::Unavailable(m) => m,
    }
}

/// What a component gets for calling a service its manifest entry does not
/// grant it, here and in `berth-test`'s harness alike.
pub fn call_not_allowed(caller: &str, service: &str) -> CallError {
    CallError::NotAllowed(format!(
        "component `{caller}` may not call `{service}`; add it to `calls` in the manifest"
    ))
}
