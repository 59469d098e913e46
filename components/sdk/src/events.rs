//! Events: [`publish`] stages an event that commits with the request's
//! key-value writes (both happen, or neither does) and is then delivered at
//! least once to every component that subscribes to its topic.

use crate::bindings::berth::service::events as raw;

/// Why an event was not published. Its [`Display`](std::fmt::Display) is
/// the host's message, one readable sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The manifest does not let this component publish on that topic.
    NotAllowed(String),
    /// The topic or payload is not acceptable; the message says why.
    Invalid(String),
}

impl PublishError {
    /// The host's message: what went wrong and what to do.
    pub fn message(&self) -> &str {
        match self {
            PublishError::NotAllowed(m) | PublishError::Invalid(m) => m,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PublishError {}

impl From<raw::PublishError> for PublishError {
    fn from(e: raw::PublishError) -> PublishError {
        match e {
            raw::PublishError::NotAllowed(m) => PublishError::NotAllowed(m),
            raw::PublishError::Invalid(m) => PublishError::Invalid(m),
        }
    }
}

/// Publish `payload`, JSON text, on `topic`. Nothing is sent until the
/// request's writes commit: a request that traps or runs out of time
/// publishes nothing, while a response the handler returns, an error
/// response too, commits what it staged, this event included.
pub fn publish(topic: &str, payload: &str) -> Result<(), PublishError> {
    raw::publish(topic, payload).map_err(PublishError::from)
}
