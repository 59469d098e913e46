//! Event delivery: a background task takes due deliveries from the store's
//! outbox, hands each to its subscriber, and on failure schedules a retry
//! with exponential backoff, dead-lettering it after the configured number
//! of attempts. Delivery is at least once; a subscriber's effect is applied
//! once because its writes commit with the acknowledgement.

use crate::broker::{Broker, RELAYED};
use crate::dispatch::{self, Ack, Delivered};
use crate::mesh::Mesh;
use crate::metrics::{DeliveryLabels, metrics};
use crate::store::{Delivery, NewEvent, Outbox, Retry, WriteBatch, now_ms};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How often to look for due deliveries when nothing wakes the worker.
    pub poll: Duration,
}

impl DeliveryConfig {
    /// The wait before the next attempt of a delivery that has failed
    /// `failed` times (at least once): the backoff, doubled for each
    /// failure after the first, up to the longest wait.
    pub fn backoff_after(&self, failed: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << failed.saturating_sub(1).min(20))
            .min(self.max_backoff)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_millis(100),
        }
    }
}

/// Deliveries taken from the store per pass.
const BATCH: usize = 64;
/// How often the outbox backlog gauge is refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Deliver events until `shutdown` resolves. Events still pending then stay
/// in the store and are delivered after the next start.
pub async fn run(mesh: Arc<Mesh>, config: DeliveryConfig, shutdown: impl Future<Output = ()>) {
    // The gauge never ends; the worker ends at shutdown, between deliveries.
    let gauge = report_backlog(mesh.app.outbox.clone());
    tokio::select! {
        () = deliver_due(&mesh, &config, shutdown) => {}
        () = gauge => {}
    }
}

/// Keep `berth_outbox_backlog` up to date, once a second, for ever.
pub(crate) async fn report_backlog(outbox: Arc<dyn Outbox>) {
    loop {
        if let Ok(waiting) = outbox.backlog().await {
            metrics()
                .outbox_backlog
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        }
        tokio::time::sleep(BACKLOG_EVERY).await;
    }
}

/// Deliver due rows until `shutdown` resolves; a claimed batch is finished
/// first, so no claim is left leased behind.
async fn deliver_due(
    mesh: &Arc<Mesh>,
    config: &DeliveryConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let due = match mesh.app.outbox.claim_due(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                if let Some(suppressed) = STORE_ERRORS.allow() {
                    tracing::error!(error = %e, suppressed, "cannot read due deliveries");
                }
                Vec::new()
            }
        };
        let mut idle = due.is_empty();
        for delivery in due {
            // A delivery whose failure could not be recorded is due again at
            // once: pause rather than spin on a failing store.
            idle |= !deliver(mesh, config, delivery).await;
        }
        if idle {
            tokio::select! {
                () = tokio::time::sleep(config.poll) => {}
                () = mesh.events_waiting.notified() => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// Store errors of the delivery worker, logged at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY): a failing store
/// fails every delivery.
static STORE_ERRORS: crate::logging::Throttle = crate::logging::Throttle::new();

/// Deliver one outbox row and record the outcome; false if the store could
/// not record a failure.
async fn deliver(mesh: &Arc<Mesh>, config: &DeliveryConfig, delivery: Delivery) -> bool {
    if delivery.recipient == RELAYED {
        return fan_out(mesh, delivery).await;
    }
    let recipient = delivery.recipient.clone();
    let result = attempt(mesh, &delivery, Ack::Row(delivery.id)).await;
    let duplicate = matches!(result, Ok(false));
    let failure = result.err();
    let outcome = match (&failure, delivery.attempts + 1 >= config.max_attempts) {
        (None, _) if duplicate => "duplicate",
        (None, _) => "delivered",
        (Some(_), false) => "retried",
        (Some(_), true) => "dead_lettered",
    };
    metrics()
        .deliveries
        .get_or_create(&DeliveryLabels {
            component: recipient.clone(),
            outcome,
        })
        .inc();
    let Some(Failed { reason: error, .. }) = failure else {
        tracing::debug!(component = %recipient, event = %delivery.event_id, "event delivered");
        return true;
    };
    let attempts = delivery.attempts + 1;
    let retry = if attempts >= config.max_attempts {
        tracing::warn!(component = %recipient, event = %delivery.event_id, attempts, "event dead-lettered: {error}");
        Retry::DeadLetter
    } else {
        let wait = config.backoff_after(attempts);
        tracing::info!(component = %recipient, event = %delivery.event_id, attempts, "delivery failed, retrying in {} ms: {error}", wait.as_millis());
        Retry::At(now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    };
    if let Err(e) = mesh
        .app
        .outbox
        .fail_delivery(delivery.id, &error, retry)
        .await
    {
        if let Some(suppressed) = STORE_ERRORS.allow() {
            tracing::error!(error = %e, suppressed, "cannot record a failed delivery");
        }
        return false;
    }
    true
}

/// A row written for a broker while this process delivers in-process (the
/// server ran with `--broker` before): replace it, in one commit, with one
/// row per current subscriber, as if it had been published now.
async fn fan_out(mesh: &Arc<Mesh>, row: Delivery) -> bool {
    let recipients = mesh.subscribers_in_process(&row.topic);
    let batch = WriteBatch {
        events: vec![NewEvent {
            id: row.event_id,
            topic: row.topic,
            payload: row.payload,
            source: row.source,
            recipients,
        }],
        completes: Some(row.id),
        ..WriteBatch::default()
    };
    match mesh
        .app
        .store
        .commit(crate::broker::topology::NAMESPACE, batch)
        .await
    {
        Ok(_) => true,
        Err(e) => {
            if let Some(suppressed) = STORE_ERRORS.allow() {
                tracing::error!(error = %e, suppressed, "cannot fan out an event relayed for a broker");
            }
            false
        }
    }
}

/// Why an attempt to deliver an event failed.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong, for the log and the dead letter.
    pub reason: String,
    /// The store failed, not the subscriber: the attempt says nothing about
    /// the event, and should not count against it.
    pub store: bool,
}

/// Run one event through its subscriber in a fresh instance and commit its
/// writes with the acknowledgement `ack`. `Ok(false)`: the subscriber ran,
/// but another delivery of the event had been acknowledged first, so this
/// one changed nothing.
pub async fn attempt(mesh: &Arc<Mesh>, delivery: &Delivery, ack: Ack) -> Result<bool, Failed> {
    let recipient = &delivery.recipient;
    let Some(component) = mesh.app.component(recipient) else {
        return Err(Failed {
            reason: format!("no component is named `{recipient}`"),
            store: false,
        });
    };
    let request_id: Arc<str> = format!("event-{}", delivery.event_id).into();
    // The component's own timeout bounds the call; this is only a ceiling.
    let env = mesh.env(request_id, Instant::now() + Duration::from_secs(600));
    let failed = |reason: String| Failed {
        reason,
        store: false,
    };
    match dispatch::deliver(&component, env, delivery, ack).await {
        Ok(Delivered::Applied) => Ok(true),
        Ok(Delivered::Duplicate) => Ok(false),
        Ok(Delivered::Refused(refusal)) => Err(failed(refusal)),
        // A trap's details (the guest's panic message) are logged nowhere
        // else.
        Err(dispatch::InvokeError::Trap(trap)) => Err(failed(format!("trapped: {}", trap.details))),
        Err(e @ dispatch::InvokeError::Store(_)) => Err(Failed {
            reason: e.to_string(),
            store: true,
        }),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Where dead letters are kept: the store's outbox (in-process delivery),
/// or the subscribers' dead-letter queues on the broker.
#[derive(Clone)]
pub enum DeadLetters {
    Store(Arc<dyn Outbox>),
    Broker {
        broker: Arc<Broker>,
        /// The subscribing components, whose queues to look in.
        components: Vec<String>,
    },
}

/// Why a dead letter could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No dead letter has that id (404).
    #[error(
        "no dead letter has id {0}; `berth dead-letters list` and the admin API's GET /dead-letters show them"
    )]
    NotFound(String),
    /// The id is not of the form this kind of dead letter has (400).
    #[error("`{id}` is not a dead letter id: {expected}")]
    Invalid { id: String, expected: &'static str },
    /// The store or broker failed (503).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl DeadLetters {
    /// Every dead letter (for the broker, up to
    /// [`MAX_LISTED`](crate::broker::dead::MAX_LISTED)), as JSON objects:
    /// id, event_id, topic, payload, source, recipient, attempts,
    /// last_error.
    pub async fn list(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let (dead, broker) = match self {
            DeadLetters::Store(outbox) => (outbox.dead_letters().await?, false),
            DeadLetters::Broker { broker, components } => {
                (crate::broker::dead::list(broker, components).await?, true)
            }
        };
        Ok(dead
            .into_iter()
            .map(|d| {
                let id = if broker {
                    serde_json::Value::from(crate::broker::dead::id(&d.recipient, &d.event_id))
                } else {
                    serde_json::Value::from(d.id)
                };
                serde_json::json!({
                    "id": id,
                    "event_id": d.event_id,
                    "topic": d.topic,
                    "payload": d.payload,
                    "source": d.source,
                    "recipient": d.recipient,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                })
            })
            .collect())
    }

    /// Queue the dead letter `id` (as [`list`](Self::list) shows it) again,
    /// with a fresh attempt count.
    pub async fn retry(&self, id: &str) -> Result<(), RetryError> {
        let found = match self {
            DeadLetters::Store(outbox) => {
                let row: i64 = id.parse().map_err(|_| RetryError::Invalid {
                    id: id.to_string(),
                    expected: "the store's dead letters have numeric ids",
                })?;
                outbox
                    .retry_dead_letter(row)
                    .await
                    .map_err(anyhow::Error::from)?
            }
            DeadLetters::Broker { broker, components } => {
                let invalid = || RetryError::Invalid {
                    id: id.to_string(),
                    expected: "the broker's dead letters have ids COMPONENT/EVENT-ID",
                };
                let (component, event_id) = id.split_once('/').ok_or_else(invalid)?;
                if !components.iter().any(|c| c == component) {
                    return Err(RetryError::NotFound(id.to_string()));
                }
                crate::broker::dead::retry(broker, component, event_id).await?
            }
        };
        if found {
            Ok(())
        } else {
            Err(RetryError::NotFound(id.to_string()))
        }
    }
}
