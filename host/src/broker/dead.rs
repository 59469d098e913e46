//! The dead-letter queues, read and retried for `berth dead-letters` and the
//! admin API. Reading takes each message without acknowledging it and
//! closes the channel afterwards, which puts every one back: a listing
//! changes nothing. Dead-letter queues are classic queues for that reason:
//! a quorum queue would count each look as a delivery.

use super::message::EventMessage;
use super::{Broker, topology};
use crate::store::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};

/// Most dead letters one listing returns, across every queue.
pub const MAX_LISTED: usize = 1000;

/// A dead letter's id in listings: `component/event-id`.
pub fn id(component: &str, event_id: &str) -> String {
    format!("{component}/{event_id}")
}

/// The dead letters of `components`, oldest first per component. A message
/// berth cannot read is listed with what could be read of it.
pub async fn list(broker: &Broker, components: &[String]) -> anyhow::Result<Vec<Delivery>> {
    let connection = broker.connect().await?;
    let mut dead = Vec::new();
    for component in components {
        let channel = connection.create_channel().await?;
        while dead.len() < MAX_LISTED {
            let Some(message) = take(&channel, component).await? else {
                break;
            };
            let event = EventMessage::decode(&message.properties, &message.data)
                .unwrap_or_else(|why| unreadable(&message.data, &why));
            dead.push(event.delivery(component));
        }
        // Unacknowledged: closing hands every message back, in order. (A
        // channel the broker closed over a missing queue is closed already.)
        if channel.status().connected() {
            channel.close(200, "listed".into()).await?;
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(dead)
}

/// Move the dead letter `event_id` of `component` back to the component's
/// queue with a fresh attempt count. Returns whether it was there.
pub async fn retry(broker: &Broker, component: &str, event_id: &str) -> anyhow::Result<bool> {
    let connection = broker.connect().await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut found = false;
    // Every message looked at stays unacknowledged, so the channel's
    // prefetch is no limit: basic.get ignores it.
    for _ in 0..MAX_LISTED {
        let Some(message) = take(&channel, component).await? else {
            break;
        };
        let Ok(event) = EventMessage::decode(&message.properties, &message.data) else {
            continue;
        };
        if event.event_id != event_id {
            continue;
        }
        let fresh = EventMessage {
            attempts: 0,
            ..event
        };
        let confirm = channel
            .basic_publish(
                "".into(),
                topology::queue(component).into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                fresh.payload.as_bytes(),
                fresh.properties(),
            )
            .await?
            .await?;
        if !matches!(confirm, lapin::Confirmation::Ack(None)) {
            anyhow::bail!(
                "the broker did not take the event back into {}",
                topology::queue(component)
            );
        }
        message.ack(BasicAckOptions::default()).await?;
        found = true;
        break;
    }
    if channel.status().connected() {
        channel.close(200, "retried".into()).await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(found)
}

/// The next message of `component`'s dead-letter queue, taken without
/// acknowledging it: it goes back when the channel closes. A queue that
/// does not exist yet (no server has declared it) holds nothing; the broker
/// closes the channel over it, which ends the caller's loop on this
/// component too.
async fn take(
    channel: &lapin::Channel,
    component: &str,
) -> lapin::Result<Option<lapin::message::BasicGetMessage>> {
    let taken = channel
        .basic_get(
            topology::dead_queue(component).into(),
            BasicGetOptions { no_ack: false },
        )
        .await;
    match taken {
        Err(e) if not_found(&e) => Ok(None),
        other => other,
    }
}

/// Whether the broker answered that the queue does not exist.
fn not_found(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::NOTFOUND)
            )
    )
}

/// What a listing shows of a message berth cannot read.
fn unreadable(body: &[u8], why: &str) -> EventMessage {
    EventMessage {
        event_id: String::new(),
        topic: String::new(),
        payload: String::from_utf8_lossy(body).into_owned(),
        source: String::new(),
        attempts: 0,
        last_error: Some(format!("not a berth event: {why}")),
    }
}
