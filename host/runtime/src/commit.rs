//! A turn's commit after the turn: the actor goes on with its next turn
//! while the group committer makes this one durable; the reply, the told
//! messages and any snapshot wait for the outcome.
//!
//! The next turn reads this turn's writes from the cache before they are on
//! disk, so it depends on them: the two commits share a dependency flag, and
//! if this one fails the committer fails the next as well (see
//! `runtime::committer`). No reply ever shows an effect that was not
//! committed, and per-actor throughput is no longer one turn per fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Request;
use super::activation::ActivationShared;
use crate::{CommittedTurn, Host};
use crate::error::ActorError;
use crate::metrics::{TurnOutcome, outcome_of};
use crate::committer::CommitOutcome;
use crate::storage::{Retention, Snapshot, StoreError};

/// What a turn produced.
pub(crate) enum TurnOutput {
    /// The reply, final: the turn wrote nothing, or failed.
    Done(Vec<u8>),
    /// The reply once the commit is durable: await [`PendingCommit::resolve`].
    Pending(PendingCommit),
}

/// A snapshot taken right after a turn, to store (under its type's
/// retention) once the turn is durable.
pub(crate) struct SnapshotToSave {
    pub(crate) snapshot: Snapshot,
    pub(crate) retention: Retention,
}

/// A committed-to-be turn whose outcome is not known yet.
pub(crate) struct PendingCommit {
    pub(crate) outcome: CommitOutcome,
    pub(crate) shared: Arc<ActivationShared>,
    pub(crate) reply: Vec<u8>,
    pub(crate) tells: Vec<Request>,
    /// Each written key's value before this turn, to put back on failure.
    pub(crate) undo: Vec<(String, Option<Vec<u8>>)>,
    /// Journal events this turn appended.
    pub(crate) events: u64,
    /// This commit's number among the activation's commits.
    pub(crate) seq: u64,
    /// The cache generation it was applied to.
    pub(crate) generation: u64,
    /// A snapshot taken right after the turn, stored once the turn is durable.
    pub(crate) snapshot: Option<SnapshotToSave>,
    /// The turn scheduled jobs: wake the runner once they are durable.
    pub(crate) schedules_jobs: bool,
    /// The turn sent messages: wake the dispatcher once they are durable.
    pub(crate) sends_messages: bool,
    pub(crate) started: Instant,
}

impl PendingCommit {
    /// Waits for the commit; on success sends the tells, stores the
    /// snapshot and returns the reply. On failure the turn did not happen:
    /// the cache is put back (or marked for a reload from the store when
    /// later turns built on it) and the error says why.
    pub(crate) async fn resolve(mut self, host: &Host) -> Result<Vec<u8>, ActorError> {
        let outcome = (&mut self.outcome).await;
        self.finish(host, outcome)
    }

    /// Like [`PendingCommit::resolve`], but the completion does not depend
    /// on this future: if it is dropped (its caller went away) while the
    /// commit is in flight, a task finishes the commit's bookkeeping, so
    /// its tells still go out and the actor stays sheddable. No task is
    /// spawned when the caller waits, as callers almost always do.
    pub(crate) async fn resolve_detached(self, host: &Host) -> Result<Vec<u8>, ActorError> {
        /// Finishes the commit in a task if dropped before it did.
        struct Guard(Option<(PendingCommit, Host)>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some((pending, host)) = self.0.take() {
                    tokio::spawn(async move {
                        let _ = pending.resolve(&host).await;
                    });
                }
            }
        }
        let mut guard = Guard(Some((self, host.clone())));
        let outcome = match guard.0.as_mut() {
            Some((pending, _)) => (&mut pending.outcome).await,
            None => unreachable!("the guard holds the commit until here"),
        };
        let (pending, host) = guard.0.take().expect("the guard holds the commit until here");
        pending.finish(&host, outcome)
    }

    /// What follows the commit's outcome: tells, metrics and the reply, or
    /// putting the cache back.
    fn finish(self, host: &Host, outcome: Result<Result<(), Arc<StoreError>>, tokio::sync::oneshot::error::RecvError>) -> Result<Vec<u8>, ActorError> {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(Arc::new(StoreError::Unavailable("the committer has stopped".into()))),
        };
        let shared = &self.shared;
        let result = match outcome {
            Ok(()) => {
                if self.events > 0 {
                    host.metrics().record_events(self.events);
                }
                host.committed(&CommittedTurn {
                    actor: &shared.id,
                    events: self.events,
                    scheduled_jobs: self.schedules_jobs,
                    sent_messages: self.sends_messages,
                });
                for tell in self.tells {
                    if let Err(e) = host.tell_request(tell) {
                        tracing::warn!(actor = %shared.id, error = %e, "a message told during a committed turn could not be delivered");
                    }
                }
                if let Some(SnapshotToSave { snapshot, retention }) = self.snapshot {
                    let (store, actor) = (host.store().clone(), shared.id.clone());
                    host.metrics().record_snapshot();
                    tokio::spawn(async move {
                        if let Err(e) = store.save_snapshot(&actor, &snapshot, retention).await {
                            tracing::warn!(actor = %actor, version = snapshot.version, error = %e, "storing a snapshot failed");
                        }
                    });
                }
                Ok(self.reply)
            }
            Err(e) => {
                let mut state = shared.state.lock();
                let alone = shared.commits_in_flight.load(Ordering::Acquire) == 1;
                if alone && state.generation == self.generation && state.enqueued == self.seq {
                    // Nothing built on this turn: put the cache back exactly,
                    // so reads keep being served while the store is down.
                    for (key, previous) in self.undo.into_iter().rev() {
                        match previous {
                            Some(v) => state.committed.insert(key, v),
                            None => state.committed.remove(&key),
                        };
                    }
                    state.journal.version = state.journal.version.saturating_sub(self.events);
                } else {
                    state.dirty = true;
                }
                // A backend can report failure for a commit that landed:
                // reload when the store answers. With an unknown outcome the
                // commit may even land later, so the cache (put back above)
                // must never be served: reads wait for the store.
                state.stale = true;
                if matches!(*e, StoreError::UnknownOutcome(_)) {
                    state.dirty = true;
                }
                if matches!(*e, StoreError::Fenced(_)) {
                    // Another host serves the actor now: claim it again
                    // (which answers with that host) before anything else.
                    state.claim = None;
                    state.dirty = true;
                }
                state.journal.loaded = false;
                state.discard_instance = true;
                drop(state);
                Err(match *e {
                    StoreError::UnknownOutcome(_) => ActorError::unknown_outcome(format!(
                        "the turn of {} ran and its commit was sent, but the store's answer was lost, so it may or may not have \
                         happened: {e}. Retry only with an Idempotency-Key (the same one), which makes the retry safe",
                        shared.id
                    )),
                    _ => {
                        let message = format!("the turn of {} ran but its writes could not be committed, so it did not happen: {e}", shared.id);
                        match *e {
                            StoreError::Rejected(_) => ActorError::rejected(message),
                            StoreError::Conflict(_) => ActorError::conflict(message),
                            _ => ActorError::unavailable(message),
                        }
                    }
                })
            }
        };
        shared.commits_in_flight.fetch_sub(1, Ordering::AcqRel);
        let outcome = match &result {
            Ok(_) => TurnOutcome::ok,
            Err(e) => outcome_of(e.kind),
        };
        host.metrics().record_turn(outcome, self.started.elapsed());
        result
    }
}
