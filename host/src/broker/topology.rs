//! What berth declares on the broker, and under which names, so an operator
//! recognises it in the management UI:
//!
//! - `berth.events`: a durable topic exchange; every event is published to
//!   it with its topic as the routing key.
//! - `berth.<component>`: one durable queue per subscribing component (a
//!   quorum queue where the server has them), bound to `berth.events` by
//!   each topic the manifest lets the component subscribe to. Every replica
//!   consumes it: competing consumers.
//! - `berth.<component>.retry.<ms>ms`: one durable queue per retry delay,
//!   without consumers. A failed delivery waits there for its delay (the
//!   queue's message TTL), then dead-letters back into `berth.<component>`.
//! - `berth.<component>.dead`: the component's dead-letter queue, where an
//!   event lands after its last attempt, until an operator retries it.
//!
//! Declaring is idempotent, so every replica does it at every connection.
//! The topics bound last time are remembered in the store, so a topic the
//! manifest no longer subscribes to is unbound rather than left routing.

use super::BrokerConfig;
use crate::events::DeliveryConfig;
use crate::store::{MAX_SCAN_BYTES, Scan, Store, WriteBatch};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The exchange every event is published to.
pub const EXCHANGE: &str = "berth.events";

/// The store namespace where the broker's own records live; component
/// names start with a letter, so no component can reach it.
pub const NAMESPACE: &str = "@broker";
/// Key prefix, in [`NAMESPACE`], of the topics bound per component.
const BINDINGS: &str = "bindings/";

/// The queue a component's events are delivered from.
pub fn queue(component: &str) -> String {
    format!("berth.{component}")
}

/// The queue a component's events wait in before attempt `n + 1`.
pub fn retry_queue(component: &str, delay: Duration) -> String {
    format!("berth.{component}.retry.{}ms", delay.as_millis())
}

/// The component's dead-letter queue.
pub fn dead_queue(component: &str) -> String {
    format!("berth.{component}.dead")
}

/// Every distinct delay a retry can wait, in increasing order.
pub fn retry_delays(config: &DeliveryConfig) -> Vec<Duration> {
    let delays: BTreeSet<Duration> = (1..config.max_attempts)
        .map(|failed| config.backoff_after(failed))
        .collect();
    delays.into_iter().collect()
}

/// Declare the exchange and every subscriber's queues and bindings, and
/// unbind the topics a component no longer subscribes to.
/// `subscriptions` maps each subscribing component to its topics.
pub async fn declare(
    connection: &Connection,
    store: &Arc<dyn Store>,
    subscriptions: &BTreeMap<String, Vec<String>>,
    config: &BrokerConfig,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut bound = bound_before(store).await?;
    for (component, topics) in subscriptions {
        let main = queue(component);
        declare_main_queue(connection, &main).await?;
        declare_queue(&channel, &dead_queue(component), FieldTable::default()).await?;
        for delay in retry_delays(&config.delivery) {
            let mut arguments = FieldTable::default();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            arguments.insert("x-dead-letter-exchange".into(), long(""));
            arguments.insert("x-dead-letter-routing-key".into(), long(&main));
            declare_queue(&channel, &retry_queue(component, delay), arguments).await?;
        }
        for topic in topics {
            channel
                .queue_bind(
                    main.as_str().into(),
                    EXCHANGE.into(),
                    topic.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let before = bound.remove(component).unwrap_or_default();
        unbind(
            &channel,
            component,
            before.difference(&topics.iter().cloned().collect()),
        )
        .await?;
        record(store, component, Some(topics)).await?;
    }
    // Components that subscribed before and no longer do: their queues
    // stay (they may hold events), but nothing routes to them.
    for (component, before) in bound {
        unbind(&channel, &component, before.iter()).await?;
        record(store, &component, None).await?;
    }
    channel.close(200, "declared".into()).await?;
    Ok(())
}

/// Declare a subscriber's queue as a quorum queue, which keeps its events
/// through the loss of a broker node; fall back to a classic durable one
/// where the server has no quorum queues, or the queue already exists as
/// a classic one (the failed declaration closes its channel, hence one
/// channel each).
async fn declare_main_queue(connection: &Connection, name: &str) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), long("quorum"));
    match declare_queue(&channel, name, quorum).await {
        Ok(()) => {
            channel.close(200, "declared".into()).await?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(
                queue = name,
                "declared as a classic queue, not a quorum one: {e}"
            );
            let channel = connection.create_channel().await?;
            declare_queue(&channel, name, FieldTable::default()).await?;
            channel.close(200, "declared".into()).await?;
            Ok(())
        }
    }
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map(drop)
}

async fn unbind(
    channel: &Channel,
    component: &str,
    topics: impl Iterator<Item = &String>,
) -> anyhow::Result<()> {
    for topic in topics {
        tracing::info!(
            component,
            topic,
            "unbinding a topic the manifest no longer subscribes to"
        );
        channel
            .queue_unbind(
                queue(component).into(),
                EXCHANGE.into(),
                topic.as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The topics bound per component at the last declaration, from the store.
async fn bound_before(
    store: &Arc<dyn Store>,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let scan = Scan {
        prefix: BINDINGS,
        after: None,
        limit: 10_000,
        max_bytes: MAX_SCAN_BYTES,
        values: true,
    };
    let page = store.scan(NAMESPACE, &scan).await?;
    let mut bound = BTreeMap::new();
    for (key, value) in page.entries {
        let component = key.trim_start_matches(BINDINGS).to_string();
        // A record this version cannot read binds nothing it knows of.
        let topics: BTreeSet<String> = serde_json::from_slice(&value).unwrap_or_default();
        bound.insert(component, topics);
    }
    Ok(bound)
}

/// Remember the topics `component` is bound to (`None`: none).
async fn record(
    store: &Arc<dyn Store>,
    component: &str,
    topics: Option<&Vec<String>>,
) -> anyhow::Result<()> {
    let value = topics.map(|topics| serde_json::to_vec(topics).unwrap_or_default());
    let mut batch = WriteBatch::default();
    batch.writes.insert(format!("{BINDINGS}{component}"), value);
    store.commit(NAMESPACE, batch).await?;
    Ok(())
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// A header name, for the other modules.
pub(super) fn short(text: &str) -> ShortString {
    ShortString::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap_without_repeats() {
        let config = DeliveryConfig {
            max_attempts: 12,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        let ms: Vec<u128> = retry_delays(&config)
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [200, 400, 800, 1000]);
        let once = DeliveryConfig {
            max_attempts: 1,
            ..Default::default()
        };
        assert!(retry_delays(&once).is_empty());
    }

    #[test]
    fn names_say_whose_queue_it_is() {
        assert_eq!(queue("orders"), "berth.orders");
        assert_eq!(dead_queue("orders"), "berth.orders.dead");
        assert_eq!(
            retry_queue("orders", Duration::from_millis(400)),
            "berth.orders.retry.400ms"
        );
    }
}
