//! Calls to other components: [`call`] sends a request to a component by
//! name, in process, under the manifest's `calls` grants, and passes on the
//! caller's request id and remaining deadline.

use crate::bindings::berth::service::services as raw;
use crate::{Request, Response};

/// Why a call produced no response. Its [`Display`](std::fmt::Display) is
/// the host's message, one readable sentence fit for a log line or a
/// client's `{"error": ...}`; [`CallError::status`] is the HTTP status a
/// service usually answers with when it cannot do without the callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The manifest does not let this component call that service.
    NotAllowed(String),
    /// No component of that name is loaded.
    UnknownService(String),
    /// The callee trapped.
    Failed(String),
    /// The callee did not answer before the deadline.
    Timeout(String),
    /// The chain of calls is deeper than the host allows.
    TooDeep(String),
    /// The callee is overloaded or could not commit its writes.
    Unavailable(String),
}

impl CallError {
    /// The host's message: what went wrong and, where it can, what to do.
    pub fn message(&self) -> &str {
        match self {
            CallError::NotAllowed(m)
            | CallError::UnknownService(m)
            | CallError::Failed(m)
            | CallError::Timeout(m)
            | CallError::TooDeep(m)
            | CallError::Unavailable(m) => m,
        }
    }

    /// The status to answer a client with when the call was needed: 500 for
    /// a missing grant (the deployment is wrong, not the request), 502 for
    /// a callee that is missing or failed, 503 when it is busy, 504 past the
    /// deadline, 508 for a loop of calls.
    pub fn status(&self) -> u16 {
        match self {
            CallError::NotAllowed(_) => 500,
            CallError::UnknownService(_) | CallError::Failed(_) => 502,
            CallError::Unavailable(_) => 503,
            CallError::Timeout(_) => 504,
            CallError::TooDeep(_) => 508,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CallError {}

impl From<raw::CallError> for CallError {
    fn from(e: raw::CallError) -> CallError {
        match e {
            raw::CallError::NotAllowed(m) => CallError::NotAllowed(m),
            raw::CallError::UnknownService(m) => CallError::UnknownService(m),
            raw::CallError::Failed(m) => CallError::Failed(m),
            raw::CallError::Timeout(m) => CallError::Timeout(m),
            raw::CallError::TooDeep(m) => CallError::TooDeep(m),
            raw::CallError::Unavailable(m) => CallError::Unavailable(m),
        }
    }
}

/// Send `request` to the component named `service` and return its response
/// (any status: a 404 from the callee is an `Ok`). The callee runs in an
/// instance of its own and commits its own writes, whatever the caller
/// does afterwards.
pub fn call(service: &str, request: &Request) -> Result<Response, CallError> {
    raw::call(service, request).map_err(CallError::from)
}
