//! The relay: outbox rows to the broker. Every replica runs one; claims are
//! leased (with `SKIP LOCKED` on PostgreSQL), so replicas relay different
//! rows in the normal case. A row is removed only after the broker confirms
//! its message; a crash between the confirm and the removal publishes it
//! again, and the consumer's applied-event record absorbs the duplicate.

use super::message::EventMessage;
use super::{BrokerConfig, RELAYED, topology};
use crate::mesh::Mesh;
use crate::metrics::metrics;
use crate::store::{Delivery, Retry, now_ms};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, Connection};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows taken from the outbox per pass.
const BATCH: usize = 256;
/// How long a subscriber's record that it applied an event is kept. A
/// broker redelivers within minutes (a consumer's connection dropped); a
/// week covers a dead letter retried days later, since retrying it
/// republishes the same event id.
const APPLIED_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// How often old applied-event records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How soon a row whose publication failed is tried again.
const REPUBLISH_AFTER_MS: i64 = 1_000;

/// Relay until the connection fails.
pub async fn run(
    connection: &Connection,
    mesh: &Arc<Mesh>,
    config: &BrokerConfig,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let outbox = &mesh.app.outbox;
    let mut pruned_at = Instant::now() - PRUNE_EVERY;
    loop {
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = Instant::now();
            match outbox.prune_applied(now_ms() - APPLIED_RETENTION_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(records = n, "pruned old applied-event records"),
                Err(e) => tracing::warn!(error = %e, "cannot prune applied-event records"),
            }
        }
        let due = match outbox.claim_due(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                if let Some(suppressed) = STORE_ERRORS.allow() {
                    tracing::error!(error = %e, suppressed, "cannot read the outbox");
                }
                Vec::new()
            }
        };
        if due.is_empty() {
            // Woken by this replica's commits; other replicas' rows are
            // found at the next poll (or relayed by their own replica).
            tokio::select! {
                () = tokio::time::sleep(config.delivery.poll) => {}
                () = mesh.events_waiting.notified() => {}
            }
            continue;
        }
        // Publish the whole batch, then wait for its confirms: the broker
        // confirms in groups, so a batch costs about one round trip.
        let mut pending = Vec::with_capacity(due.len());
        let mut failed = None;
        for row in due {
            if failed.is_some() {
                pending.push((row, None));
                continue;
            }
            match publish(&channel, &row).await {
                Ok(confirm) => pending.push((row, Some(confirm))),
                Err(e) => {
                    failed = Some(e);
                    pending.push((row, None));
                }
            }
        }
        for (row, confirm) in pending {
            let outcome = match confirm {
                Some(confirm) => confirm.await.map_err(anyhow::Error::from),
                None => Err(anyhow::anyhow!("not published: the channel failed")),
            };
            settle(mesh, &row, outcome).await;
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
}

/// Publish one row: an event for the broker to fan out goes to the
/// exchange under its topic; a row owed to one subscriber (written before
/// `--broker` was turned on) goes straight to that subscriber's queue.
async fn publish(
    channel: &lapin::Channel,
    row: &Delivery,
) -> lapin::Result<lapin::PublisherConfirm> {
    let message = EventMessage::from_row(row);
    let (exchange, routing_key, mandatory) = if row.recipient == RELAYED {
        (topology::EXCHANGE.to_string(), row.topic.clone(), false)
    } else {
        (String::new(), topology::queue(&row.recipient), true)
    };
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            message.payload.as_bytes(),
            message.properties(),
        )
        .await
}

/// Remove a confirmed row; hand an unconfirmed one back for a later pass.
async fn settle(mesh: &Arc<Mesh>, row: &Delivery, outcome: anyhow::Result<Confirmation>) {
    let outbox = &mesh.app.outbox;
    let result = match outcome {
        // Returned: the row named a subscriber with no queue (it no longer
        // subscribes). Nothing will take it, so it is dead-lettered where
        // `berth dead-letters` shows it.
        Ok(Confirmation::Ack(Some(_))) => {
            let why = format!(
                "no queue for `{}`: it no longer subscribes to `{}`",
                row.recipient, row.topic
            );
            tracing::warn!(event = %row.event_id, "{why}");
            outbox.fail_delivery(row.id, &why, Retry::DeadLetter).await
        }
        Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {
            metrics().events_published.inc();
            outbox.complete(row.id).await.map(drop)
        }
        Ok(Confirmation::Nack(_)) => {
            retry_later(outbox.as_ref(), row, "the broker refused the message").await
        }
        Err(e) => retry_later(outbox.as_ref(), row, &format!("{e:#}")).await,
    };
    if let Err(e) = result
        && let Some(suppressed) = STORE_ERRORS.allow()
    {
        tracing::error!(error = %e, suppressed, "cannot record a relayed event");
    }
}

/// End a row's lease early, so it is published again soon rather than when
/// the lease runs out.
async fn retry_later(
    outbox: &dyn crate::store::Outbox,
    row: &Delivery,
    why: &str,
) -> Result<(), crate::store::StoreError> {
    outbox
        .fail_delivery(row.id, why, Retry::At(now_ms() + REPUBLISH_AFTER_MS))
        .await
}

/// Store errors of the relay, logged at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY).
static STORE_ERRORS: crate::logging::Throttle = crate::logging::Throttle::new();
