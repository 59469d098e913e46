//! `berth:service/log`: component log lines go to the host's tracing output,
//! tagged with the component's name so no component can pose as another.

use crate::bindings::berth::service::log::{Host, Level};
use crate::invocation::Invocation;

/// Longest log message kept, in bytes; longer ones are cut at a char boundary.
const MAX_MESSAGE: usize = 8 * 1024;

impl Host for Invocation {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate(&message, MAX_MESSAGE);
        let component = &*self.component;
        // The request's id, so a component's lines can be found from the
        // request's own line (and a delivery's, whose id names the event).
        let request_id = &*self.env.request_id;
        match level {
            Level::Trace => {
                tracing::trace!(target: "component", component, request_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "component", component, request_id, "{message}")
            }
            Level::Info => tracing::info!(target: "component", component, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "component", component, request_id, "{message}"),
            Level::Error => {
                tracing::error!(target: "component", component, request_id, "{message}")
            }
        }
        if let Some(sink) = &self.env.log_sink {
            sink.record(&self.component, level, message);
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Somewhere besides tracing that wants a component's log lines, such as a
/// test harness asserting on them.
pub trait LogSink: Send + Sync {
    fn record(&self, component: &str, level: Level, message: &str);
}
