//! Outbox messages as the store keeps them, and the [`OutboxStore`] trait.
//!
//! A turn's messages are inserted in its commit, each in the lane of its
//! sender and destination. A dispatcher claims due lanes with a lease,
//! delivers each lane's messages in order, and deletes the delivered ones
//! (in batches, with its next claim); a failed delivery holds its lane
//! until its retry, and after the last attempt the message is dead (kept,
//! with its error, until retried or purged) and the lane moves on.

use async_trait::async_trait;

pub use quark_core::outbox::*;

use crate::StoreError;


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
        self.enabled.load(std::sync::atomic::Ordering::Acquire).then(|| (quark_core::jobs::new_lease(), now_ms + lease_ms))
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
