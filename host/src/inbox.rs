//! Each actor's inbox: message ids and idempotency keys it handled, with
//! their replies, written in the same commit as the turn. A repeat within
//! the retention window gets the first reply without running the turn
//! again: `POST /v1/actors/{type}/{key}/{method}` with an `Idempotency-Key`
//! header, and (with the outbox) redelivered messages.

use std::time::Duration;

use crate::error::ActorError;
use crate::id::ActorId;
use crate::runtime::{Control, Host, InboxTurn};

/// How long an inbox entry is kept unless configured (`--inbox-retention`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Longest idempotency key or message id accepted.
pub const MAX_KEY_BYTES: usize = 255;

impl Host {
    /// Like [`Host::ask`], but at most once per `key` for this actor
    /// within the inbox retention (HTTP callers' keys are their own
    /// namespace: an actor's message with the same id is another message): a repeat returns the first successful
    /// reply without running the turn. A failed turn stores nothing, so a
    /// retry after an error runs again.
    pub async fn ask_idempotent(&self, target: ActorId, method: &str, payload: Vec<u8>, key: &str) -> Result<Vec<u8>, ActorError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(ActorError::bad_request(format!("an idempotency key must be 1 to {MAX_KEY_BYTES} bytes, not {}", key.len())));
        }
        let control = Control::Inbox(InboxTurn { sender: String::new(), message_id: key.to_string(), check: true, lane: None });
        self.ask_request(self.outside_request(target, method, payload, Some(control))).await
    }
}

/// Forgets inbox entries past the retention, every tenth of it (at most
/// once a minute), for as long as the host lives.
pub(crate) fn spawn_expiry(host: &Host) {
    let retention = host.config().inbox_retention;
    host.spawn_sweep(retention, Duration::from_secs(60), move |host: Host| async move {
        let before = crate::storage::now_ms() - retention.as_millis() as i64;
        match host.store().expire_inbox(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "forgot inbox entries past their retention"),
            Err(e) => tracing::warn!(error = %e, "expiring inbox entries failed; retrying later"),
        }
    });
}
