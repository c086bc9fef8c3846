//! Each actor's inbox: message ids and idempotency keys it handled, with
//! their replies, written in the same commit as the turn. A repeat within
//! the retention window gets the first reply without running the turn
//! again: `POST /v1/actors/{type}/{key}/{method}` with an `Idempotency-Key`
//! header, and (with the outbox) redelivered messages.

use crate::error::ActorError;
use crate::id::ActorId;
use crate::{Control, Host, InboxTurn};

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
