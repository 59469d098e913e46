//! Event delivery: a background task takes due deliveries from the store's
//! outbox, hands each to its subscriber, and on failure schedules a retry
//! with exponential backoff, dead-lettering it after the configured number
//! of attempts. Delivery is at least once; a subscriber's effect is applied
//! once because its writes commit with the acknowledgement.

use crate::dispatch;
use crate::mesh::Mesh;
use crate::metrics::{DeliveryLabels, metrics};
use crate::store::{Delivery, Outbox, Retry, now_ms};
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

/// Deliver events until `shutdown` resolves. Events still pending then stay
/// in the store and are delivered after the next start.
pub async fn run(mesh: Arc<Mesh>, config: DeliveryConfig, shutdown: impl Future<Output = ()>) {
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
            idle |= !deliver(&mesh, &config, delivery).await;
        }
        if idle {
            tokio::select! {
                () = tokio::time::sleep(config.poll) => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// Store errors of the delivery worker, logged at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY): a failing store
/// fails every delivery.
static STORE_ERRORS: crate::logging::Throttle = crate::logging::Throttle::new();

/// Deliver one event and record the outcome; false if the store could not
/// record a failure.
async fn deliver(mesh: &Arc<Mesh>, config: &DeliveryConfig, delivery: Delivery) -> bool {
    let recipient = delivery.recipient.clone();
    let failure = match mesh.app.component(&recipient) {
        None => Some(format!("no component is named `{recipient}`")),
        Some(component) => {
            let request_id: Arc<str> = format!("event-{}", delivery.event_id).into();
            // The component's own timeout bounds the call; this is only a ceiling.
            let env = mesh.env(request_id, Instant::now() + Duration::from_secs(600));
            match dispatch::deliver(&component, env, &delivery).await {
                Ok(Ok(())) => None,
                Ok(Err(refusal)) => Some(refusal),
                // A trap's details (the guest's panic message) are logged
                // nowhere else.
                Err(dispatch::InvokeError::Trap(trap)) => {
                    Some(format!("trapped: {}", trap.details))
                }
                Err(e) => Some(e.to_string()),
            }
        }
    };
    let outcome = match (&failure, delivery.attempts + 1 >= config.max_attempts) {
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
    let Some(error) = failure else {
        tracing::debug!(component = %recipient, event = %delivery.event_id, "event delivered");
        return true;
    };
    let attempts = delivery.attempts + 1;
    let retry = if attempts >= config.max_attempts {
        tracing::warn!(component = %recipient, event = %delivery.event_id, attempts, "event dead-lettered: {error}");
        Retry::DeadLetter
    } else {
        let wait = config
            .backoff
            .saturating_mul(1 << (attempts - 1).min(20))
            .min(config.max_backoff);
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

/// `berth dead-letters list`: print the dead letters of `outbox`.
pub async fn print_dead_letters(outbox: &dyn Outbox) -> anyhow::Result<()> {
    let dead: Vec<_> = outbox
        .dead_letters()
        .await?
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "event_id": d.event_id,
                "topic": d.topic,
                "payload": d.payload,
                "source": d.source,
                "recipient": d.recipient,
                "attempts": d.attempts,
                "last_error": d.last_error,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&dead)?);
    Ok(())
}

/// `berth dead-letters retry ID`: queue a dead letter again.
pub async fn retry_dead_letter(outbox: &dyn Outbox, id: i64) -> anyhow::Result<()> {
    if !outbox.retry_dead_letter(id).await? {
        anyhow::bail!("no dead letter has id {id}; `berth dead-letters list` shows them");
    }
    println!("delivery {id} queued again");
    Ok(())
}
