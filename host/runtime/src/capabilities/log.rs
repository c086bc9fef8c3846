//! `quark:actor/log`: guest log lines into the host's `tracing` output.

use super::bindings::quark::actor::log::{Host, Level};
use crate::turn::InstanceState;

/// Longest log line kept; the rest is cut so a guest cannot flood the log.
const MAX_LOG_LINE: usize = 4096;

impl Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        let mut end = message.len().min(MAX_LOG_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let actor = self.actor.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "quark::guest", actor, "{message}"),
            Level::Debug => tracing::debug!(target: "quark::guest", actor, "{message}"),
            Level::Info => tracing::info!(target: "quark::guest", actor, "{message}"),
            Level::Warn => tracing::warn!(target: "quark::guest", actor, "{message}"),
            Level::Error => tracing::error!(target: "quark::guest", actor, "{message}"),
        }
    }
}
