//! What a turn buffers until it commits.

use std::collections::BTreeMap;

use crate::Request;
use crate::id::ActorId;
use crate::storage::jobs::{JobCompletion, JobRecord};
use crate::storage::outbox::OutboxMessage;
use crate::storage::{CheckpointAdvance, EventRecord, InboxEntry, JournalAppend, StateWrite, TurnCommit};

/// What a turn did that takes effect only if it commits: state writes,
/// journal events, a projection checkpoint, and messages told to other
/// actors (sent after the commit). Later capabilities (jobs, outbox) add
/// their buffers here.
#[derive(Default)]
pub(crate) struct TurnEffects {
    pub(crate) writes: BTreeMap<String, Option<Vec<u8>>>,
    pub(crate) tells: Vec<Request>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) snapshot_requested: bool,
    pub(crate) checkpoint: Option<CheckpointAdvance>,
    pub(crate) jobs: Vec<JobRecord>,
    pub(crate) cancels: Vec<String>,
    pub(crate) job_done: Option<JobCompletion>,
    pub(crate) messages: Vec<OutboxMessage>,
    /// Bytes these effects hold in host memory, charged against
    /// [`crate::turn::MAX_TURN_BYTES`].
    pub(crate) bytes: usize,
}

impl TurnEffects {
    /// Splits the effects into their durable part, the one [`TurnCommit`]
    /// (`is_empty()` when the turn wrote nothing durable), and the messages
    /// told, which leave only once that commit is durable. Adding an effect
    /// is a field here and in `TurnCommit`, and its store code.
    pub(crate) fn into_commit(self, actor: ActorId, expected_version: u64, inbox: Option<InboxEntry>, fence: Option<u64>) -> (TurnCommit, Vec<Request>) {
        let TurnEffects { writes, tells, events, snapshot_requested: _, checkpoint, jobs, cancels, job_done, messages, bytes: _ } = self;
        let state = writes.into_iter().map(|(key, value)| StateWrite { key, value }).collect();
        let journal = (!events.is_empty()).then_some(JournalAppend { expected_version, events });
        (TurnCommit { actor, state, journal, checkpoint, jobs, cancels, job_done, inbox, messages, fence }, tells)
    }

    /// What these effects would write to the store, named for an error
    /// (`state, journal events`); `None` when they write nothing but a
    /// job's completion.
    pub(crate) fn durable(&self) -> Option<String> {
        let written = [
            (!self.writes.is_empty(), "state"),
            (!self.events.is_empty() || self.snapshot_requested, "journal events"),
            (!self.jobs.is_empty() || !self.cancels.is_empty(), "jobs"),
            (!self.messages.is_empty(), "outbox messages"),
            (self.checkpoint.is_some(), "a projection checkpoint"),
        ];
        let named: Vec<&str> = written.iter().filter(|(yes, _)| *yes).map(|(_, what)| *what).collect();
        (!named.is_empty()).then(|| named.join(", "))
    }

    /// Adds a later (nested) turn's effects on top of these.
    pub(crate) fn merge(&mut self, later: TurnEffects) {
        self.bytes += later.bytes;
        self.writes.extend(later.writes);
        self.tells.extend(later.tells);
        self.events.extend(later.events);
        self.snapshot_requested |= later.snapshot_requested;
        self.jobs.extend(later.jobs);
        self.cancels.extend(later.cancels);
        self.messages.extend(later.messages);
    }
}
