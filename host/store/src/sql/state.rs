//! Actor state in SQL, and the turn commit: one function for every SQL
//! backend, the batched writes of each table left to the [`Dialect`].

use std::collections::HashMap;

use async_trait::async_trait;
use quark_core::id::ActorId;

use super::jobs::commit_jobs;
use super::journal::{commit_checkpoints, journal_batch, journal_conflict};
use super::outbox::{commit_inbox, commit_outbox};
use super::{Dialect, News, SqlStore};
use crate::outbox::LANE_LEASE_MS;
use crate::{StateStore, StoreError, TurnCommit};

/// One state row to write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateUpsert<'a> {
    pub(crate) actor: &'a str,
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
}

/// One state row to delete.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateDelete<'a> {
    pub(crate) actor: &'a str,
    pub(crate) key: &'a str,
}

/// Merges a batch of turns into final per-key writes (the last write of a
/// key wins), split into upserts and deletes, so each backend runs two
/// bulk statements instead of one per write.
fn flatten_batch(batch: &[TurnCommit]) -> (Vec<StateUpsert<'_>>, Vec<StateDelete<'_>>) {
    let mut last: HashMap<(&str, &str), Option<&[u8]>> = HashMap::new();
    for commit in batch {
        for write in &commit.state {
            last.insert((commit.actor.as_str(), write.key.as_str()), write.value.as_deref());
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for ((actor, key), value) in last {
        match value {
            Some(value) => upserts.push(StateUpsert { actor, key, value }),
            None => deletes.push(StateDelete { actor, key }),
        }
    }
    (upserts, deletes)
}

#[async_trait]
impl<S: SqlStore> StateStore for S {
    async fn load_state(&self, actor: &ActorId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let rows = S::Db::fetch_all(&mut conn, "SELECT key, value FROM actor_state WHERE actor = $1 ORDER BY key", &[actor.as_str().into()]).await?;
        rows.iter().map(|r| Ok((S::Db::text(r, "key")?, S::Db::bytes(r, "value")?))).collect()
    }

    /// The turn-commit rule's one transaction: fences and journal heads
    /// first (a conflict fails the batch before any write), then events,
    /// projection checkpoints, state, inbox entries, outbox messages and
    /// their lanes, and job effects.
    async fn commit(&self, batch: &[TurnCommit]) -> Result<(), StoreError> {
        let (upserts, deletes) = flatten_batch(batch);
        let journal = journal_batch(batch)?;
        let mut tx = self.writer().begin().await?;
        self.check_fences(&mut tx, batch).await?;
        if !journal.created.is_empty() && S::Db::insert_heads(&mut tx, &journal.created).await? != journal.created.len() as u64 {
            return Err(journal_conflict(batch));
        }
        if !journal.moved.is_empty() && S::Db::move_heads(&mut tx, &journal.moved).await? != journal.moved.len() as u64 {
            return Err(journal_conflict(batch));
        }
        if !journal.events.is_empty() {
            S::Db::insert_events(&mut tx, &journal.events).await?;
        }
        commit_checkpoints::<S::Db>(&mut tx, batch).await?;
        if !upserts.is_empty() {
            S::Db::upsert_state(&mut tx, &upserts).await?;
        }
        if !deletes.is_empty() {
            S::Db::delete_state(&mut tx, &deletes).await?;
        }
        if batch.iter().any(|c| c.inbox.is_some()) {
            commit_inbox::<S::Db>(&mut tx, batch).await?;
        }
        let mut opened = (Vec::new(), Vec::new());
        if batch.iter().any(|c| !c.messages.is_empty()) {
            let lease = self.new_lanes().lease_for_commit(crate::now_ms(), LANE_LEASE_MS);
            opened = commit_outbox::<S::Db>(&mut tx, batch, lease.as_ref()).await?;
            self.announce_in(&mut tx, News::Messages).await?;
        }
        if batch.iter().any(TurnCommit::has_job_effects) {
            commit_jobs::<S::Db>(&mut tx, batch).await?;
            if batch.iter().any(|c| !c.jobs.is_empty()) {
                self.announce_in(&mut tx, News::Jobs).await?;
            }
        }
        tx.commit().await.map_err(S::Db::commit_failed)?;
        self.new_lanes().push(opened.0, opened.1);
        Ok(())
    }
}
