//! Outbox messages as the store keeps them, and the [`OutboxStore`] trait.
//!
//! A turn's messages are inserted in its commit. A dispatcher claims due
//! messages with a lease, delivers them, and deletes them once delivered
//! (in batches, with its next claim); a failed delivery waits for its
//! retry, and after the last attempt the message is dead (kept, with its
//! error, until retried or purged). Only the oldest pending message of each
//! sender and destination is claimable, so a pair's messages arrive in the
//! order they were sent.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Destination {
    /// A method of an actor.
    Actor {
        /// The receiving actor, `type/key`.
        actor: String,
        /// The method its turn calls.
        method: String,
    },
    /// A sink named in the host's config.
    Sink {
        /// The sink's name.
        name: String,
    },
}

impl Destination {
    /// The stored kind and target (`actor`, `type/key` or `sink`, name).
    pub fn kind_and_target(&self) -> (&'static str, &str) {
        match self {
            Destination::Actor { actor, .. } => ("actor", actor),
            Destination::Sink { name } => ("sink", name),
        }
    }
}

/// A message a turn sent, as it is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Its id: the receiver's inbox (or an external receiver) dedups by it.
    pub id: String,
    /// The sending actor.
    pub sender: String,
    /// Where it goes.
    pub destination: Destination,
    /// The body (JSON for SDK actors).
    #[serde(with = "super::json_or_base64")]
    pub payload: Vec<u8>,
    /// The CloudEvents `type` for sinks.
    pub event_type: Option<String>,
    /// When the turn sent it.
    pub created_at_ms: i64,
}

/// A stored message and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The message.
    #[serde(flatten)]
    pub message: OutboxMessage,
    /// `pending` (waiting or in flight) or `dead`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it is (next) due.
    pub next_at_ms: i64,
    /// Leased to a dispatcher until then: in flight.
    pub lease_until_ms: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A claimed message: deliver it, then ack or fail it quoting `lease`.
#[derive(Debug, Clone)]
pub struct MessageClaim {
    /// The message, with `attempts` counting this one.
    pub record: OutboxRecord,
    /// The lease token.
    pub lease: String,
}

/// Durable outbox storage.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Deletes `delivered` messages, then claims up to `max` due ones (the
    /// oldest pending message of each sender and destination whose lease,
    /// if any, expired), leasing them until `now_ms + lease_ms`. One write.
    async fn claim_messages(&self, now_ms: i64, max: usize, lease_ms: i64, delivered: &[String]) -> Result<Vec<MessageClaim>, StoreError>;

    /// Records a failed delivery: due again at `retry_at_ms`, or dead when
    /// `None`. False when the lease was lost.
    async fn fail_message(&self, id: &str, lease: &str, error: &str, retry_at_ms: Option<i64>) -> Result<bool, StoreError>;

    /// Messages, oldest first: `pending` (including in flight) or `dead`, or all.
    async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Makes a dead message due now with fresh attempts; false if it is not dead.
    async fn retry_message(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Deletes dead messages; returns how many.
    async fn purge_dead_messages(&self) -> Result<u64, StoreError>;

    /// When the next pending message is due (or its lease expires), if any.
    async fn next_message_due(&self) -> Result<Option<i64>, StoreError>;
}
