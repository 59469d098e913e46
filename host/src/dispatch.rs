//! One request (or one event delivery) through one component, transport
//! aside: run it, commit its writes durably, and run it again if a
//! concurrent request won a race on a key it relied on. The HTTP server, the
//! cross-service calls, the event worker and the test harness all come
//! through here, so a component behaves the same under each.

use crate::bindings::{Event, Request, Response};
use crate::executor::Executor;
use crate::runtime::{CallEnv, CallError, TrapInfo};
use crate::store::{Commit, Delivery, Store, WriteBatch};
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
    /// The component is running as many calls as it may (503, retry later).
    Busy(String),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            InvokeError::Trap(trap) => write!(f, "trapped: {}", trap.reason),
            InvokeError::Store(e) => write!(f, "store failure: {e}"),
            InvokeError::Contention(e) => write!(f, "write contention: {e}"),
            InvokeError::Busy(e) => f.write_str(e),
        }
    }
}

impl From<CallError> for InvokeError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(t) => InvokeError::Timeout(t),
            CallError::Trap(t) => InvokeError::Trap(t),
            CallError::PoolFull(e) => InvokeError::Busy(e),
            CallError::Store(e) => InvokeError::Store(e),
        }
    }
}

/// Run `request` through `component` and return its response once every
/// write it made is durable. Refused at once if the component is already
/// running its `max_concurrency` calls.
pub async fn invoke(
    component: &Executor,
    env: CallEnv,
    request: &Request,
) -> Result<Response, InvokeError> {
    let limits = component.limits();
    let Ok(_running) = limits.concurrency.try_acquire() else {
        return Err(InvokeError::Busy(format!(
            "component `{}` is running as many requests as its max_concurrency allows",
            component.name()
        )));
    };
    let store = env.store.clone();
    let (response, committed) = retry_on_conflict(
        &store,
        component.name(),
        || component.call(env.clone(), request),
        |batch| batch,
    )
    .await?;
    if let (Committed::Done { events: true }, Some(services)) = (committed, &env.services) {
        services.events_committed();
    }
    Ok(response)
}

/// How a delivered event's commit acknowledges it, so that its effect is
/// applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Remove this outbox row (in-process delivery).
    Row(i64),
    /// Record that the subscriber applied the event's id (broker delivery,
    /// where the event has no row).
    Event,
}

/// What became of a delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The subscriber accepted it and its writes committed with the
    /// acknowledgement.
    Applied,
    /// The subscriber accepted it, but another delivery of the same event
    /// had been acknowledged first: that one's effect stands, this one's
    /// writes were dropped.
    Duplicate,
    /// The subscriber refused it, with this reason; nothing was written.
    Refused(String),
}

/// Deliver one event to its subscriber. The subscriber's writes commit
/// together with the acknowledgement `ack`, so a successful delivery takes
/// effect exactly once.
pub async fn deliver(
    component: &Executor,
    env: CallEnv,
    delivery: &Delivery,
    ack: Ack,
) -> Result<Delivered, InvokeError> {
    let event = Event {
        id: delivery.event_id.clone(),
        topic: delivery.topic.clone(),
        payload: delivery.payload.clone(),
        source: delivery.source.clone(),
        attempt: delivery.attempts + 1,
    };
    let store = env.store.clone();
    let (outcome, committed) = retry_on_conflict(
        &store,
        component.name(),
        || component.on_event(env.clone(), &event),
        |mut batch| {
            match ack {
                Ack::Row(id) => batch.completes = Some(id),
                Ack::Event => batch.applies = Some(delivery.event_id.clone()),
            }
            batch
        },
    )
    .await?;
    Ok(match (outcome, committed) {
        (Err(reason), _) => Delivered::Refused(reason),
        (Ok(()), Committed::AlreadyDelivered) => Delivered::Duplicate,
        (Ok(()), Committed::Done { events }) => {
            if let (true, Some(services)) = (events, &env.services) {
                services.events_committed();
            }
            Delivered::Applied
        }
    })
}

/// How a run's writes ended.
enum Committed {
    /// Committed, or there was nothing to commit; `events`: the commit
    /// published events.
    Done { events: bool },
    /// Refused whole: the delivery they acknowledge was acknowledged first.
    AlreadyDelivered,
}

/// Run `attempt` and commit what it wrote; on a write conflict, run it again.
/// A refused event (`Err` from the subscriber) commits nothing.
async fn retry_on_conflict<R, F, Fut>(
    store: &Arc<dyn Store>,
    namespace: &str,
    attempt: F,
    finish: impl Fn(WriteBatch) -> WriteBatch,
) -> Result<(R, Committed), InvokeError>
where
    R: Outcome,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(R, WriteBatch), CallError>>,
{
    let mut last_conflict = String::new();
    for _ in 0..MAX_ATTEMPTS {
        let (outcome, batch) = attempt().await?;
        if !outcome.commits() {
            return Ok((outcome, Committed::Done { events: false }));
        }
        let batch = finish(batch);
        if batch.is_empty() {
            return Ok((outcome, Committed::Done { events: false }));
        }
        let events = !batch.events.is_empty();
        match store.commit(namespace, batch).await {
            Ok(Commit::Done) => return Ok((outcome, Committed::Done { events })),
            // Another delivery of the same event was acknowledged first: its
            // effect is in the store, and this one's writes are dropped.
            Ok(Commit::AlreadyDelivered) => return Ok((outcome, Committed::AlreadyDelivered)),
            Ok(Commit::Conflict(key)) => last_conflict = key,
            Err(e) => return Err(InvokeError::Store(e.to_string())),
        }
    }
    Err(InvokeError::Contention(format!(
        "key `{last_conflict}` kept changing under concurrent requests"
    )))
}

/// Whether a call's writes should be committed.
trait Outcome {
    fn commits(&self) -> bool;
}

impl Outcome for Response {
    fn commits(&self) -> bool {
        true
    }
}

impl Outcome for Result<(), String> {
    fn commits(&self) -> bool {
        self.is_ok()
    }
}
