//! What one turn did that must be durable, as the store commits it.

use crate::id::ActorId;
use crate::journal::{CheckpointAdvance, JournalAppend};
use crate::{jobs, outbox};

/// One state write of a turn: `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The state key.
    pub key: String,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Everything durable one successful turn did, committed atomically.
///
/// Later capabilities (jobs, outbox messages, the inbox entry) add fields
/// here, so they commit in the same transaction.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    /// The actor whose turn this was.
    pub actor: ActorId,
    /// State writes, in the order the turn made them (last write of a key wins).
    pub state: Vec<StateWrite>,
    /// Events the turn appended to the actor's journal.
    pub journal: Option<JournalAppend>,
    /// The projection checkpoint this turn advances (projection turns only).
    pub checkpoint: Option<CheckpointAdvance>,
    /// Jobs the turn scheduled.
    pub jobs: Vec<jobs::JobRecord>,
    /// Jobs the turn cancelled.
    pub cancels: Vec<String>,
    /// The job this turn ran, completed with it (job turns only).
    pub job_done: Option<jobs::JobCompletion>,
    /// The message (or idempotency key) this turn handled, with its reply:
    /// a repeat gets the reply without running again.
    pub inbox: Option<InboxEntry>,
    /// Messages the turn sent (the outbox), delivered after this commit.
    pub messages: Vec<outbox::OutboxMessage>,
    /// In a cluster, the epoch under which this host owns the actor: the
    /// commit is refused once the directory holds another (the actor moved
    /// to another host). `None` on a single host. Not an effect: a commit
    /// with only a fence is empty.
    pub fence: Option<u64>,
}

impl TurnCommit {
    /// A commit of state writes only.
    pub fn state_only(actor: ActorId, state: Vec<StateWrite>) -> Self {
        TurnCommit {
            actor,
            state,
            journal: None,
            checkpoint: None,
            jobs: Vec::new(),
            cancels: Vec::new(),
            job_done: None,
            inbox: None,
            messages: Vec::new(),
            fence: None,
        }
    }

    /// True when the turn wrote nothing durable, so it can skip the store.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.state.is_empty() && self.journal.is_none() && self.checkpoint.is_none() && !self.has_job_effects() && self.inbox.is_none() && self.messages.is_empty()
    }

    /// True when the turn scheduled, cancelled or completed a job.
    #[inline]
    pub fn has_job_effects(&self) -> bool {
        !self.jobs.is_empty() || !self.cancels.is_empty() || self.job_done.is_some()
    }
}

/// A message an actor handled, kept in its inbox for the retention window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Who sent it: the sending actor, or `""` for an HTTP caller's
    /// idempotency key. Ids are unique per (receiver, sender).
    pub sender: String,
    /// The message id (or the caller's idempotency key).
    pub message_id: String,
    /// The reply the turn gave.
    pub reply: Vec<u8>,
    /// When the turn ran, ms since the epoch.
    pub at_ms: i64,
}

impl InboxEntry {
    /// The sender for a person: the actor, or "an HTTP caller".
    pub fn sender_name(&self) -> &str {
        if self.sender.is_empty() { "an HTTP caller" } else { &self.sender }
    }
}
