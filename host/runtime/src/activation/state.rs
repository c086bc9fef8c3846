//! An actor's state as this host holds it: the committed values, the
//! running turn's effect layers, and where its journal stands.

use std::collections::HashMap;

use super::{ActivationShared, TurnEffects};
use crate::Host;
use crate::committer::DependencyFlag;
use crate::error::ActorError;

/// Where an actor's journal stands, as this host knows it.
#[derive(Default)]
pub(crate) struct JournalCursor {
    /// False until the version was read (lazily, on first use).
    pub(crate) loaded: bool,
    /// The last committed event's version.
    pub(crate) version: u64,
    /// Events committed since the last snapshot (event-sourced actors).
    pub(crate) since_snapshot: u64,
}

/// An actor's state as this host holds it: the committed values and the
/// running turn's uncommitted effects.
#[derive(Default)]
pub(crate) struct StateCache {
    pub(crate) loaded: bool,
    /// Set when a commit failed: its outcome is unknown, so the next turn
    /// reloads from the store if it can.
    pub(crate) stale: bool,
    pub(crate) committed: HashMap<String, Vec<u8>>,
    /// The running turn's effects: `[0]` is the outer turn's; each
    /// re-entrant turn on its chain pushes a layer above the turn it is
    /// nested in and, when it succeeds, folds it into that one.
    pub(crate) layers: Vec<TurnEffects>,
    pub(crate) journal: JournalCursor,
    /// Shared by this activation's commits since its last failed one: the
    /// committer fails the later ones once it is set (they saw its effects).
    pub(crate) commit_flag: DependencyFlag,
    /// Commits this activation enqueued so far.
    pub(crate) enqueued: u64,
    /// Bumped on every reload from the store: a late failure does not
    /// undo into a cache that was reloaded since.
    pub(crate) generation: u64,
    /// The cache holds effects of a commit that failed: it must be
    /// reloaded before it serves anything.
    pub(crate) dirty: bool,
    /// Drop the instance before the next turn (a commit it built on failed).
    pub(crate) discard_instance: bool,
    /// In a cluster: the claim this activation serves its actor under,
    /// (incarnation of this host, epoch); its commits carry the epoch.
    pub(crate) claim: Option<(i64, u64)>,
}

/// Loads the actor's committed state into memory before its first turn,
/// and again after a failed commit (keeping the cache if the store is still
/// down).
pub(super) async fn ensure_state_loaded(host: &Host, shared: &ActivationShared) -> Result<(), ActorError> {
    let had_cache = {
        let state = shared.state.lock();
        if state.loaded && !state.stale {
            return Ok(());
        }
        // A dirty cache holds effects that never committed: never serve it.
        state.loaded && !state.dirty
    };
    match host.store().load_state(&shared.id).await {
        Ok(rows) => {
            let mut state = shared.state.lock();
            state.committed = rows.into_iter().collect();
            state.loaded = true;
            state.stale = false;
            state.dirty = false;
            state.generation += 1;
            Ok(())
        }
        Err(e) if had_cache => {
            tracing::debug!(actor = %shared.id, error = %e, "store still unavailable; serving from the cached state");
            Ok(())
        }
        Err(e) => Err(ActorError::unavailable(format!("loading the state of {}: {e}", shared.id))),
    }
}
