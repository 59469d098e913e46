//! How components reach each other: the manifest's grants (who may call
//! whom, who may publish what, who subscribes to what) over the loaded
//! [`App`]. Every request, call and delivery gets its [`CallEnv`] here.

use crate::app::App;
use crate::bindings::berth::service::services::CallError;
use crate::bindings::{Header, Request, Response};
use crate::capabilities::services::{Caller, Services};
use crate::dispatch::{self, InvokeError};
use crate::manifest::Manifest;
use crate::runtime::CallEnv;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Calls deeper than this fail with `too-deep` unless configured otherwise.
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;

/// The components of an [`App`] and what each may reach.
pub struct Mesh {
    pub app: Arc<App>,
    /// Component to the components it may call.
    calls: HashMap<String, HashSet<String>>,
    /// Component to the topics it may publish on.
    publishes: HashMap<String, HashSet<String>>,
    /// Topic to its subscribers, in name order.
    subscribers: HashMap<String, Vec<String>>,
    max_depth: u32,
}

impl Mesh {
    pub fn new(app: Arc<App>, manifest: &Manifest, max_depth: u32) -> Arc<Mesh> {
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
        Arc::new(Mesh {
            app,
            calls: grant(|spec| &spec.calls),
            publishes: grant(|spec| &spec.publishes),
            subscribers,
            max_depth,
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

    fn may_call(&self, caller: &str, callee: &str) -> bool {
        self.calls
            .get(caller)
            .is_some_and(|allowed| allowed.contains(callee))
    }
}

impl Services for Mesh {
    fn call(
        self: Arc<Self>,
        caller: Caller,
        service: String,
        mut request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        Box::pin(async move {
            if !self.may_call(&caller.component, &service) {
                return Err(CallError::NotAllowed(format!(
                    "component `{}` may not call `{service}`; add it to `calls` in the manifest",
                    caller.component
                )));
            }
            let Some(callee) = self.app.component(&service) else {
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
            let env = CallEnv {
                depth: caller.depth + 1,
                deadline: caller.deadline,
                ..self.env(caller.request_id.clone(), caller.deadline)
            };
            dispatch::invoke(&callee, env, &request)
                .await
                .map_err(|e| match e {
                    InvokeError::Timeout(_) => CallError::Timeout(format!("`{service}` {e}")),
                    InvokeError::Trap(_) => CallError::Failed(format!("`{service}` {e}")),
                    InvokeError::Store(_) | InvokeError::Contention(_) | InvokeError::Busy(_) => {
                        CallError::Unavailable(format!("`{service}` {e}"))
                    }
                })
        })
    }

    fn may_publish(&self, component: &str, topic: &str) -> bool {
        self.publishes
            .get(component)
            .is_some_and(|allowed| allowed.contains(topic))
    }

    fn subscribers(&self, topic: &str) -> Vec<String> {
        self.subscribers.get(topic).cloned().unwrap_or_default()
    }
}
