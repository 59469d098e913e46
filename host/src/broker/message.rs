//! An event as an AMQP message: the payload is the body, as published; the
//! event's id is the message id; its topic, publisher, failed attempts and
//! last error travel in `x-berth-*` headers, so they survive the retry and
//! dead-letter queues, whose routing keys are queue names, not topics.

use super::topology::short;
use crate::store::Delivery;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

const TOPIC: &str = "x-berth-topic";
const SOURCE: &str = "x-berth-source";
const ATTEMPTS: &str = "x-berth-attempts";
const LAST_ERROR: &str = "x-berth-last-error";

/// Longest last error a message carries; the rest is cut.
const MAX_ERROR: usize = 2048;

/// One event on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    pub event_id: String,
    pub topic: String,
    /// JSON text, as published.
    pub payload: String,
    pub source: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl EventMessage {
    /// The message for an outbox row.
    pub fn from_row(row: &Delivery) -> EventMessage {
        EventMessage {
            event_id: row.event_id.clone(),
            topic: row.topic.clone(),
            payload: row.payload.clone(),
            source: row.source.clone(),
            attempts: 0,
            last_error: None,
        }
    }

    /// Read a message berth published; an error says what is missing, for
    /// a message something else put in a berth queue.
    pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<EventMessage, String> {
        let event_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_string())
            .filter(|id| !id.is_empty())
            .ok_or("the message has no message id")?;
        let payload = std::str::from_utf8(body)
            .map_err(|_| "the message body is not UTF-8 text")?
            .to_string();
        let headers = properties.headers().clone().unwrap_or_default();
        let text = |name: &str| match headers.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
            _ => None,
        };
        let topic = text(TOPIC).ok_or(format!("the message has no {TOPIC} header"))?;
        let source = text(SOURCE).unwrap_or_default();
        let attempts = match headers.inner().get(ATTEMPTS) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            _ => 0,
        };
        Ok(EventMessage {
            event_id,
            topic,
            payload,
            source,
            attempts,
            last_error: text(LAST_ERROR),
        })
    }

    /// Persistent JSON with the event's headers.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(short(TOPIC), text(&self.topic));
        headers.insert(short(SOURCE), text(&self.source));
        headers.insert(
            short(ATTEMPTS),
            AMQPValue::LongLongInt(i64::from(self.attempts)),
        );
        if let Some(error) = &self.last_error {
            headers.insert(short(LAST_ERROR), text(cut(error, MAX_ERROR)));
        }
        BasicProperties::default()
            .with_message_id(self.event_id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers)
    }

    /// The same event after one more failed attempt.
    pub fn failed(&self, error: &str) -> EventMessage {
        EventMessage {
            attempts: self.attempts.saturating_add(1),
            last_error: Some(error.to_string()),
            ..self.clone()
        }
    }

    /// The delivery of this event to `recipient`, as subscribers get it.
    pub fn delivery(&self, recipient: &str) -> Delivery {
        Delivery {
            // Broker deliveries have no outbox row.
            id: 0,
            event_id: self.event_id.clone(),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            source: self.source.clone(),
            recipient: recipient.to_string(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_round_trip() {
        let event = EventMessage {
            event_id: "evt-1".into(),
            topic: "user.deleted".into(),
            payload: r#"{"id":3,"name":"Zoë"}"#.into(),
            source: "users".into(),
            attempts: 0,
            last_error: None,
        }
        .failed("trapped: boom");
        let decoded = EventMessage::decode(&event.properties(), event.payload.as_bytes()).unwrap();
        assert_eq!(decoded, event);
        assert_eq!(decoded.attempts, 1);
    }

    #[test]
    fn a_foreign_message_is_refused_with_a_reason() {
        let e = EventMessage::decode(&BasicProperties::default(), b"{}").unwrap_err();
        assert!(e.contains("message id"), "{e}");
        let e = EventMessage::decode(
            &BasicProperties::default().with_message_id("x".into()),
            b"{}",
        )
        .unwrap_err();
        assert!(e.contains(TOPIC), "{e}");
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("abc", 10), "abc");
    }
}
