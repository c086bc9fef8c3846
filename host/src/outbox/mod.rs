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

    /// Makes dead messages due now with fresh attempts: `sender`'s message
    /// `id`, or (without a sender) every dead message with that id, as ids
    /// are unique per sender. Returns how many.
    pub async fn retry_message(&self, id: &str, sender: Option<&str>) -> Result<u64, ActorError> {
        let retried = self.outbox_store_or_err()?.retry_message(id, sender, crate::storage::now_ms()).await?;
        if retried == 0 {
            let from = sender.map(|s| format!(" from {s}")).unwrap_or_default();
            return Err(ActorError::not_found(format!("no message {id}{from} is in the dead-letter list")));
        }
        self.wake_outbox();
        Ok(retried)
    }

    /// Deletes dead messages; returns how many.
    pub async fn purge_dead_messages(&self) -> Result<u64, ActorError> {
        Ok(self.outbox_store_or_err()?.purge_dead_messages().await?)
    }
}
