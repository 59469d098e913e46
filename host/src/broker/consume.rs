//! Consuming: every replica consumes every subscriber's queue (competing
//! consumers, at most `prefetch` unacknowledged events each). An event runs
//! in a fresh instance of its subscriber; the subscriber's writes commit
//! with a record that it applied the event, and only then is the message
//! acknowledged. A redelivered event whose record exists is acknowledged
//! without running again, so its effect is applied once.
//!
//! A failed attempt is republished, with its count and error, to the retry
//! queue of its delay (or, after the last attempt, to the dead-letter
//! queue), confirmed, and only then acknowledged: the queue never blocks
//! behind a failing event, and no event is lost between the two.

use super::message::EventMessage;
use super::{BrokerConfig, topology};
use crate::dispatch::Ack;
use crate::events;
use crate::mesh::Mesh;
use crate::metrics::{DeliveryLabels, metrics};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long to hold an event back when the store cannot be reached, before
/// handing it back to the queue; such an attempt does not count.
const STORE_PAUSE: Duration = Duration::from_secs(1);

/// Consume every subscriber's queue until the connection fails.
pub async fn run(
    connection: &Connection,
    mesh: &Arc<Mesh>,
    subscriptions: &BTreeMap<String, Vec<String>>,
    config: &BrokerConfig,
) -> anyhow::Result<()> {
    let mut streams = Vec::new();
    for component in subscriptions.keys() {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                topology::queue(component).into(),
                format!("berth {} {component}", config.replica).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let component: Arc<str> = component.as_str().into();
        streams.push(consumer.map(move |delivery| (component.clone(), channel.clone(), delivery)));
    }
    if streams.is_empty() {
        // Nothing subscribes: only the relay has work.
        return std::future::pending().await;
    }
    let mut incoming = futures_util::stream::select_all(streams);
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some((component, channel, Ok(delivery))) => {
                    running.push(handle(mesh, config, component, channel, delivery));
                }
                Some((_, _, Err(e))) => return Err(e.into()),
                None => anyhow::bail!("the broker cancelled berth's consumers"),
            },
            Some(handled) = running.next(), if !running.is_empty() => handled?,
        }
    }
}

/// Apply one event, or pass it on to its retry or dead-letter queue.
async fn handle(
    mesh: &Arc<Mesh>,
    config: &BrokerConfig,
    component: Arc<str>,
    channel: Channel,
    delivery: lapin::message::Delivery,
) -> anyhow::Result<()> {
    let event = match EventMessage::decode(&delivery.properties, &delivery.data) {
        Ok(event) => event,
        Err(why) => {
            // Not berth's: kept, untouched, where an operator looks.
            tracing::warn!(component = %component, "moving a message berth cannot read to the dead-letter queue: {why}");
            let dead = topology::dead_queue(&component);
            let confirmed =
                republish(&channel, &dead, &delivery.data, delivery.properties.clone()).await?;
            return finish(&delivery, confirmed).await;
        }
    };
    match mesh.app.outbox.applied(&component, &event.event_id).await {
        Ok(true) => {
            count(&component, "duplicate");
            tracing::debug!(component = %component, event = %event.event_id, "event already applied");
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => return hand_back(&delivery, &component, &e.to_string()).await,
    }
    let outcome = events::attempt(mesh, &event.delivery(&component), Ack::Event).await;
    let failure = match outcome {
        Ok(applied) => {
            count(&component, if applied { "delivered" } else { "duplicate" });
            tracing::debug!(component = %component, event = %event.event_id, "event applied");
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        Err(failure) if failure.store => {
            return hand_back(&delivery, &component, &failure.reason).await;
        }
        Err(failure) => failure.reason,
    };
    let next = event.failed(&failure);
    let max = config.delivery.max_attempts;
    let (queue, outcome) = if next.attempts >= max {
        tracing::warn!(component = %component, event = %event.event_id, attempts = next.attempts, "event dead-lettered: {failure}");
        (topology::dead_queue(&component), "dead_lettered")
    } else {
        let wait = config.delivery.backoff_after(next.attempts);
        tracing::info!(component = %component, event = %event.event_id, attempts = next.attempts, "delivery failed, retrying in {} ms: {failure}", wait.as_millis());
        (topology::retry_queue(&component, wait), "retried")
    };
    let confirmed = republish(&channel, &queue, next.payload.as_bytes(), next.properties()).await?;
    if confirmed {
        count(&component, outcome);
    }
    finish(&delivery, confirmed).await
}

/// Publish to a queue through the default exchange and wait for the
/// broker's confirm; false if it refused the message.
async fn republish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> anyhow::Result<bool> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    Ok(matches!(confirm, lapin::Confirmation::Ack(None)))
}

/// Acknowledge a message passed on, or, if the broker did not take the
/// copy, give the original back to the queue.
async fn finish(delivery: &lapin::message::Delivery, passed_on: bool) -> anyhow::Result<()> {
    if passed_on {
        delivery.ack(BasicAckOptions::default()).await?;
    } else {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// The store failed, not the subscriber: pause, then give the event back
/// to the queue without counting an attempt.
async fn hand_back(
    delivery: &lapin::message::Delivery,
    component: &str,
    why: &str,
) -> anyhow::Result<()> {
    if let Some(suppressed) = STORE_ERRORS.allow() {
        tracing::error!(
            component,
            suppressed,
            "cannot apply events while the store fails: {why}"
        );
    }
    tokio::time::sleep(STORE_PAUSE).await;
    finish(delivery, false).await
}

fn count(component: &str, outcome: &'static str) {
    metrics()
        .deliveries
        .get_or_create(&DeliveryLabels {
            component: component.to_string(),
            outcome,
        })
        .inc();
}

/// Store errors met while consuming, logged at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY).
static STORE_ERRORS: crate::logging::Throttle = crate::logging::Throttle::new();
