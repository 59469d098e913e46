//! One request through one component, transport aside: run the handler,
//! commit its writes durably, and run it again if a concurrent request won a
//! race on a key it relied on. Both the HTTP server and the test harness call
//! [`invoke`], so a component behaves the same under both.

use crate::bindings::{Request, Response};
use crate::capabilities::log::LogSink;
use crate::runtime::{CallError, LoadedComponent, TrapInfo};
use crate::store::{Commit, Store};
use std::sync::Arc;
use std::time::Duration;

/// Runs of one request before a write conflict is reported to the client.
pub const MAX_ATTEMPTS: usize = 8;

/// Why a request got no response from its component.
#[derive(Debug)]
pub enum InvokeError {
    /// The component ran past its deadline (504).
    Timeout(Duration),
    /// The component trapped (500).
    Trap(TrapInfo),
    /// The writes could not be committed (503).
    Store(String),
    /// Other requests kept changing the same keys (503, retry later).
    Contention(String),
}

impl From<CallError> for InvokeError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(t) => InvokeError::Timeout(t),
            CallError::Trap(t) => InvokeError::Trap(t),
        }
    }
}

/// Run `request` through `component` and return its response once every
/// write it made is durable.
///
/// The guest runs as a future that yields at every epoch tick, bounded by the
/// component's deadline; the commit is awaited without blocking.
pub async fn invoke(
    component: &LoadedComponent,
    store: &Arc<dyn Store>,
    log_sink: Option<&Arc<dyn LogSink>>,
    request: &Request,
) -> Result<Response, InvokeError> {
    let mut last_conflict = String::new();
    for _ in 0..MAX_ATTEMPTS {
        let (response, batch) = component
            .call(store.clone(), log_sink.cloned(), request)
            .await?;
        if batch.is_empty() {
            return Ok(response);
        }
        match store.commit(component.name(), batch).await {
            Ok(Commit::Done) => return Ok(response),
            Ok(Commit::Conflict(key)) => last_conflict = key,
            Err(e) => return Err(InvokeError::Store(e.0)),
        }
    }
    Err(InvokeError::Contention(format!(
        "key `{last_conflict}` kept changing under concurrent requests"
    )))
}
