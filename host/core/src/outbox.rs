//! Outbox records: messages a turn sends, delivered after its commit, in
//! lanes (one sender's messages to one destination, in order).

use serde::{Deserialize, Serialize};

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
    /// The actor method it calls; none for a sink.
    pub fn method(&self) -> Option<&str> {
        match self {
            Destination::Actor { method, .. } => Some(method),
            Destination::Sink { .. } => None,
        }
    }

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
    #[serde(with = "crate::journal::json_or_base64")]
    pub payload: Vec<u8>,
    /// The CloudEvents `type` for sinks.
    pub event_type: Option<String>,
    /// When the turn sent it.
    pub created_at_ms: i64,
}

impl OutboxMessage {
    /// The message's key in the store: ids are unique per sender, so the
    /// key is the pair, joined by a newline (which no actor id contains).
    pub fn key(&self) -> String {
        message_key(&self.sender, &self.id)
    }
}

/// The store key of `sender`'s message `id` (see [`OutboxMessage::key`]).
pub fn message_key(sender: &str, id: &str) -> String {
    format!("{sender}\n{id}")
}

/// Splits a key made by [`message_key`] into sender and id.
pub fn split_message_key(key: &str) -> (&str, &str) {
    key.split_once('\n').unwrap_or(("", key))
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
    /// Its lane is leased to a dispatcher until then: in flight.
    pub lease_until_ms: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A claimed lane: one sender's pending messages to one destination,
/// oldest first. Deliver them in order, stop at the first failure, then
/// release the lane quoting `lease`.
#[derive(Debug, Clone)]
pub struct LaneClaim {
    /// The lane (an id the store gives it).
    pub lane: String,
    /// The lease token.
    pub lease: String,
    /// The lane's last lease had expired (its host died): some of these
    /// messages may have been delivered already.
    pub taken_over: bool,
    /// Its first pending messages, in the order they were sent.
    pub messages: Vec<OutboxRecord>,
}

/// A lane given back after its deliveries.
#[derive(Debug, Clone)]
pub struct LaneRelease {
    /// The lane.
    pub lane: String,
    /// The lease it was claimed with (a lane taken over since is left alone).
    pub lease: String,
    /// When it is due again: a failed message's retry time; `None` for now.
    pub next_at_ms: Option<i64>,
}

/// How long a leased lane is its host's before another may take it over.
pub const LANE_LEASE_MS: i64 = 30_000;
