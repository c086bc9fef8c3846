//! The outbox: messages a turn sends, committed with it and delivered after
//! it commits. To an actor, a message runs as a turn of the receiver under
//! the message id, so the receiver's inbox (see [`crate::inbox`]) makes a
//! redelivery a no-op: exactly one effect. Delivered messages are deleted;
//! failed ones are retried with backoff and end in the dead-letter list.

pub mod dispatcher;
pub mod sinks;

use crate::error::ActorError;
use crate::runtime::Host;
use crate::storage::outbox::{OutboxRecord, OutboxStore};

impl Host {
    fn outbox_store_or_err(&self) -> Result<&dyn OutboxStore, ActorError> {
        self.store().outbox_store().ok_or_else(|| {
            ActorError::unavailable(format!("the outbox is not available on the {} store yet", self.store().backend_name()))
        })
    }

    /// Messages waiting (or in flight) and dead ones, oldest first.
    pub async fn outbox_messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, ActorError> {
        if let Some(s) = status
            && s != "pending"
            && s != "dead"
        {
            return Err(ActorError::bad_request(format!("unknown message status {s:?}: pending or dead")));
        }
        Ok(self.outbox_store_or_err()?.messages(status, limit.clamp(1, 10_000)).await?)
    }

    /// Makes a dead message due now with fresh attempts.
    pub async fn retry_message(&self, id: &str) -> Result<(), ActorError> {
        if !self.outbox_store_or_err()?.retry_message(id, crate::storage::now_ms()).await? {
            return Err(ActorError::rejected(format!("message {id} is not in the dead-letter list")));
        }
        self.wake_outbox();
        Ok(())
    }

    /// Deletes dead messages; returns how many.
    pub async fn purge_dead_messages(&self) -> Result<u64, ActorError> {
        Ok(self.outbox_store_or_err()?.purge_dead_messages().await?)
    }
}
