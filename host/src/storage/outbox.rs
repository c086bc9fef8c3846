//! Outbox messages as the store keeps them, and the [`OutboxStore`] trait.
//!
//! A turn's messages are inserted in its commit, each in the lane of its
//! sender and destination. A dispatcher claims due lanes with a lease,
//! delivers each lane's messages in order, and deletes the delivered ones
//! (in batches, with its next claim); a failed delivery holds its lane
//! until its retry, and after the last attempt the message is dead (kept,
//! with its error, until retried or purged) and the lane moves on.

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
    #[serde(with = "super::json_or_base64")]
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

/// Lanes that commits opened already leased to this store's host, waiting
/// for its dispatcher: a lane a commit creates has no older messages, so it
/// needs no claim (its lease is in the store; if this host dies, the lease
/// expires and another host takes the lane over). Also the messages
/// commits added to lanes that existed, with those lanes' leases: the
/// dispatcher hands them to the lane's delivery if it runs here, under that
/// lease, with every earlier message; otherwise they wait for a claim.
#[derive(Default)]
pub struct NewLanes {
    enabled: std::sync::atomic::AtomicBool,
    lanes: parking_lot::Mutex<(Vec<LaneClaim>, Vec<LaneClaim>)>,
}

impl NewLanes {
    /// From now on, commits lease the lanes they open (the dispatcher runs).
    pub fn enable(&self) {
        self.enabled.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The lease a commit starting now gives the lanes it opens, and its
    /// expiry, or `None` when no dispatcher takes them.
    pub fn lease_for_commit(&self, now_ms: i64, lease_ms: i64) -> Option<(String, i64)> {
        self.enabled.load(std::sync::atomic::Ordering::Acquire).then(|| (super::jobs::new_lease(), now_ms + lease_ms))
    }

    /// Adds the lanes a commit opened and the messages it added to lanes
    /// that existed (call once it is durable, in commit order).
    pub fn push(&self, opened: Vec<LaneClaim>, added: Vec<LaneClaim>) {
        if !opened.is_empty() || !added.is_empty() {
            let mut lanes = self.lanes.lock();
            lanes.0.extend(opened);
            lanes.1.extend(added);
        }
    }

    /// Takes every waiting lane and every added message.
    pub fn take(&self) -> (Vec<LaneClaim>, Vec<LaneClaim>) {
        std::mem::take(&mut *self.lanes.lock())
    }
}

/// How long a leased lane is its host's before another may take it over.
pub const LANE_LEASE_MS: i64 = 30_000;

/// Durable outbox storage.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// From now on, lanes that commits create are leased to this store's
    /// host at commit and handed over by [`OutboxStore::take_new_lanes`]
    /// instead of waiting for a claim. False (and nothing changes) for a
    /// store without it: every commit that sends then calls for a claim.
    fn deliver_new_lanes_here(&self) -> bool {
        false
    }

    /// Lanes commits created and leased since the last call, with their
    /// messages in order; and the messages commits added to lanes that
    /// existed, per lane with its lease at the time (empty if none), in
    /// commit order. Those go to the lane's delivery if it runs on this
    /// host under that lease; otherwise a claim is due.
    fn take_new_lanes(&self) -> (Vec<LaneClaim>, Vec<LaneClaim>) {
        (Vec::new(), Vec::new())
    }

    /// In one write: deletes `delivered` messages (by
    /// [`OutboxMessage::key`]), releases `released`
    /// lanes (deleting those left empty), then claims up to `max_lanes` due
    /// lanes with up to `per_lane` messages each, leased until
    /// `now_ms + lease_ms`.
    async fn claim_lanes(
        &self,
        now_ms: i64,
        max_lanes: usize,
        per_lane: usize,
        lease_ms: i64,
        delivered: &[String],
        released: &[LaneRelease],
    ) -> Result<Vec<LaneClaim>, StoreError>;

    /// Records a failed delivery of the message with `key`
    /// ([`OutboxMessage::key`]): it is due again at `retry_at_ms` (its lane
    /// waits for it), or dead when `None`.
    async fn fail_message(&self, key: &str, error: &str, retry_at_ms: Option<i64>) -> Result<(), StoreError>;

    /// Messages, oldest first: `pending` (including in flight) or `dead`, or all.
    async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Makes the dead messages with `id` (of `sender`, or of any sender)
    /// due now with fresh attempts; returns how many there were.
    async fn retry_message(&self, id: &str, sender: Option<&str>, now_ms: i64) -> Result<u64, StoreError>;

    /// Deletes dead messages; returns how many.
    async fn purge_dead_messages(&self) -> Result<u64, StoreError>;

    /// When the next lane is due (or its lease expires), if any.
    async fn next_message_due(&self) -> Result<Option<i64>, StoreError>;

    /// A stream that yields whenever a commit on any host sent messages,
    /// where the backend can push (PostgreSQL LISTEN, Redis SUBSCRIBE);
    /// `None` means poll.
    async fn message_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        None
    }
}
