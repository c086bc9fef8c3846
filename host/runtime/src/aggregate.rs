//! Event-sourced actors: calls into the `aggregate` export, and the
//! rebuild of an instance from its latest snapshot plus the events after it.

use std::time::{Duration, Instant};

use super::activation::Live;
use super::instance::{HandlerFailure, classify_guest_call, prepare_guest_call};
use super::turn::TurnScope;
use crate::Host;
use crate::capabilities::GuestRecordedEvent;
use crate::error::ActorError;
use crate::id::ActorId;

/// Events per `apply` call while rebuilding: large enough that the wasm
/// boundary is crossed rarely, small enough to bound the memory a batch
/// takes on both sides.
pub(crate) const REBUILD_BATCH: usize = 1000;

/// Most event bytes handed to `apply` in one call while rebuilding (a
/// single larger event still goes alone): large events must not push the
/// guest past its memory limit just because a thousand of them came at once.
pub(crate) const REBUILD_BATCH_BYTES: usize = 1 << 20;

/// Which stored snapshot a rebuild may start from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SnapshotUse {
    /// The newest one; `restore` refuses it if it cannot read it.
    Any,
    /// Only one taken by this component version (replays of old versions).
    FromComponent(u64),
    /// None: replay the whole journal.
    None,
}

/// Where a rebuild ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rebuilt {
    /// The version of the last event folded in.
    pub(crate) version: u64,
    /// The version of the snapshot it started from (0 for a full replay).
    pub(crate) snapshot_version: u64,
}

/// Why a rebuild failed.
#[derive(Debug)]
pub(crate) enum RebuildError {
    /// `restore` trapped: the instance is unusable; rebuild a fresh one
    /// with [`SnapshotUse::None`].
    SnapshotBroke(ActorError),
    /// Anything else: the actor cannot be activated.
    Failed(ActorError),
}

impl RebuildError {
    pub(crate) fn into_actor_error(self) -> ActorError {
        match self {
            RebuildError::SnapshotBroke(e) | RebuildError::Failed(e) => e,
        }
    }
}

fn system_deadline(live: &mut Live, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    live.store.data_mut().scope = TurnScope::system(deadline);
    prepare_guest_call(live);
    deadline
}

/// Calls `snapshot` on an event-sourced instance.
pub(crate) async fn call_snapshot(live: &mut Live, deadline: Instant, actor: &ActorId) -> Result<Vec<u8>, HandlerFailure> {
    live.store.data_mut().scope = TurnScope::system(deadline);
    prepare_guest_call(live);
    let Some(aggregate) = live.bindings.aggregate.as_ref() else {
        return Err(HandlerFailure::Returned(ActorError::rejected(format!("{actor} is not event-sourced"))));
    };
    let outcome = tokio::time::timeout_at(deadline.into(), aggregate.call_snapshot(&mut live.store)).await;
    classify_guest_call(outcome, live.store.data(), &format!("{actor} `snapshot`"), quark_core::ChainId::NONE)
}

/// Folds stored events into `live`, starting from a snapshot as `snapshots`
/// allows, up to version `up_to` (inclusive). Each guest call gets
/// `timeout`.
pub(crate) async fn rebuild(
    host: &Host,
    live: &mut Live,
    actor: &ActorId,
    snapshots: SnapshotUse,
    up_to: u64,
    timeout: Duration,
) -> Result<Rebuilt, RebuildError> {
    let store = host.store();
    let unavailable = |e: crate::storage::StoreError| RebuildError::Failed(ActorError::unavailable(format!("rebuilding {actor}: {e}")));
    let mut rebuilt = Rebuilt { version: 0, snapshot_version: 0 };
    let snapshot = match snapshots {
        SnapshotUse::None => None,
        SnapshotUse::Any => store.latest_snapshot(actor, up_to).await.map_err(unavailable)?,
        SnapshotUse::FromComponent(v) => {
            store.latest_snapshot(actor, up_to).await.map_err(unavailable)?.filter(|s| s.component_version == v)
        }
    };
    if let Some(snapshot) = snapshot {
        let deadline = system_deadline(live, timeout);
        let Some(aggregate) = live.bindings.aggregate.as_ref() else {
            return Err(RebuildError::Failed(ActorError::rejected(format!("{actor} is not event-sourced"))));
        };
        let outcome = tokio::time::timeout_at(deadline.into(), aggregate.call_restore(&mut live.store, &snapshot.data)).await;
        match classify_guest_call(outcome, live.store.data(), &format!("{actor} `restore`"), quark_core::ChainId::NONE) {
            Ok(()) => {
                rebuilt = Rebuilt { version: snapshot.version, snapshot_version: snapshot.version };
            }
            Err(HandlerFailure::Returned(e)) => {
                tracing::warn!(
                    actor = %actor, snapshot_version = snapshot.version, error = %e,
                    "the snapshot could not be restored; replaying the whole journal instead"
                );
            }
            Err(HandlerFailure::Broken(e)) => return Err(RebuildError::SnapshotBroke(e)),
        }
    }
    let mut from = rebuilt.version + 1;
    while from <= up_to {
        let want = REBUILD_BATCH.min((up_to - from).saturating_add(1).min(REBUILD_BATCH as u64) as usize);
        let events = store.read_events(actor, from, want).await.map_err(unavailable)?;
        let (Some(first), Some(last)) = (events.first(), events.last()) else { break };
        if first.version != from {
            return Err(RebuildError::Failed(ActorError::internal(format!(
                "{actor} cannot be rebuilt: its journal has no events {from}..{} (removed by retention) and no usable \
                 snapshot covers them",
                first.version - 1
            ))));
        }
        let (last_version, count) = (last.version, events.len());
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            // A run of events of at most REBUILD_BATCH_BYTES (at least one).
            let mut bytes = 0;
            let mut batch: Vec<GuestRecordedEvent> = Vec::new();
            while let Some(next) = events.next_if(|e| batch.is_empty() || bytes + e.data.len() <= REBUILD_BATCH_BYTES) {
                bytes += next.data.len();
                batch.push(crate::capabilities::to_guest_event(next));
            }
            let (first_version, batch_last) = (batch[0].version, batch[batch.len() - 1].version);
            let deadline = system_deadline(live, timeout);
            let Some(aggregate) = live.bindings.aggregate.as_ref() else {
                return Err(RebuildError::Failed(ActorError::rejected(format!("{actor} is not event-sourced"))));
            };
            let outcome = tokio::time::timeout_at(deadline.into(), aggregate.call_apply(&mut live.store, &batch)).await;
            if let Err(HandlerFailure::Returned(e) | HandlerFailure::Broken(e)) =
                classify_guest_call(outcome, live.store.data(), &format!("{actor} `apply`"), quark_core::ChainId::NONE)
            {
                return Err(RebuildError::Failed(ActorError::internal(format!(
                    "{actor} cannot be activated: `apply` failed on events {first_version}..={batch_last} while rebuilding \
                     it from its journal (the journal is unchanged): {}",
                    e.message
                ))));
            }
        }
        rebuilt.version = last_version;
        from = last_version + 1;
        if count < want {
            break;
        }
    }
    Ok(rebuilt)
}
