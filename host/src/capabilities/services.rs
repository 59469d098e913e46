//! `berth:service/services` and `berth:service/events`: a component reaching
//! other components, always through the host and only as far as the
//! manifest grants. The [`Services`] trait is what the host offers; the
//! server's `App` implements it with real components, the test harness with
//! stubs.

use crate::bindings::berth::service::events::{self, PublishError};
use crate::bindings::berth::service::services::{self, CallError};
use crate::bindings::{Request, Response};
use crate::invocation::Invocation;
use crate::store::NewEvent;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most events one call may publish.
const MAX_EVENTS: usize = 100;
/// Largest event payload, in bytes.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Who is calling: enough to check grants and to carry the request along.
#[derive(Debug, Clone)]
pub struct Caller {
    pub component: Arc<str>,
    pub request_id: Arc<str>,
    /// Calls already on the stack above the one being made.
    pub depth: u32,
    pub deadline: Instant,
}

/// The other components a call may reach.
pub trait Services: Send + Sync {
    /// Run `request` through component `service` on behalf of `caller`.
    fn call(
        self: Arc<Self>,
        caller: Caller,
        service: String,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>>;

    /// Whether `component` may publish on `topic`.
    fn may_publish(&self, component: &str, topic: &str) -> bool;

    /// The components subscribed to `topic`.
    fn subscribers(&self, topic: &str) -> Vec<String>;

    /// Whether `component` may send an HTTP request to `uri` (a
    /// `wasi:http` component's outgoing request outside the mesh).
    fn may_reach(&self, component: &str, uri: &hyper::Uri) -> bool {
        let _ = (component, uri);
        false
    }

    /// The `wasi:config` values of `component`, from its manifest table.
    fn config(&self, component: &str) -> Option<Arc<wasmtime_wasi_config::WasiConfigVariables>> {
        let _ = component;
        None
    }

    /// Events were just committed to the outbox: whoever moves them on
    /// (the delivery worker, or the broker relay) may look now rather than
    /// at its next poll.
    fn events_committed(&self) {}
}

impl services::Host for Invocation {
    async fn call(&mut self, service: String, request: Request) -> Result<Response, CallError> {
        let Some(services) = self.env.services.clone() else {
            return Err(CallError::UnknownService(format!(
                "no service `{service}` is reachable from here"
            )));
        };
        let caller = Caller {
            component: self.component.clone(),
            request_id: self.env.request_id.clone(),
            depth: self.env.depth,
            deadline: self.deadline,
        };
        services.call(caller, service, request).await
    }
}

impl events::Host for Invocation {
    fn publish(&mut self, topic: String, payload: String) -> Result<(), PublishError> {
        check_topic(&topic).map_err(PublishError::Invalid)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(PublishError::Invalid(format!(
                "payload is {} bytes; the limit is {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&payload) {
            return Err(PublishError::Invalid(format!("payload is not JSON: {e}")));
        }
        if self.events.len() >= MAX_EVENTS {
            return Err(PublishError::Invalid(format!(
                "a call may publish at most {MAX_EVENTS} events"
            )));
        }
        let recipients = match &self.env.services {
            Some(services) if !services.may_publish(&self.component, &topic) => {
                return Err(PublishError::NotAllowed(format!(
                    "component `{}` may not publish on `{topic}`; add it to `publishes` in the manifest",
                    self.component
                )));
            }
            Some(services) => services.subscribers(&topic),
            None => Vec::new(),
        };
        self.events.push(NewEvent {
            id: new_event_id(),
            topic,
            payload,
            source: self.component.to_string(),
            recipients,
        });
        Ok(())
    }
}

/// Topics are dotted lower-case names such as `user.deleted`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 128
        && topic
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "topic `{topic}` is invalid: use 1 to 128 lower-case letters, digits and `._-`"
        ))
    }
}

/// An id unique across restarts and replicas: the time in nanoseconds, a
/// random tag drawn once per process (two replicas can read the same clock),
/// and a counter. Subscribers' applied-event records are keyed by it.
pub(crate) fn new_event_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let process = *PROCESS.get_or_init(|| {
        use std::hash::{BuildHasher as _, Hasher as _};
        // A randomly keyed hasher: std's source of per-process randomness.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "evt-{nanos:x}-{:08x}-{:x}",
        process & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
