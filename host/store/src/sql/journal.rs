//! Journals and projections in SQL: event rows, batched appends with their
//! head checks, and the `JournalStore` read side.

use async_trait::async_trait;
use quark_core::id::ActorId;

use super::{Conn, Dialect, SqlRow, SqlStore};
use crate::{
    EventRecord, JournalAppend, JournalStore, PositionedEvent, ProjectionDef, ProjectionStatus, Retention, Snapshot, StoreError, TurnCommit,
};

/// The columns of an event row, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "version, event_type, schema_version, data, recorded_at_ms, correlation_id, causation_id, caller, method";

/// Reads an event row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row<D: Dialect>(row: &SqlRow<D>) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        version: D::int(row, "version")? as u64,
        event_type: D::text(row, "event_type")?,
        schema_version: D::int(row, "schema_version")? as u32,
        data: D::bytes(row, "data")?,
        recorded_at_ms: D::int(row, "recorded_at_ms")?,
        correlation_id: D::text(row, "correlation_id")?,
        causation_id: D::text(row, "causation_id")?,
        caller: D::opt_text(row, "caller")?,
        method: D::text(row, "method")?,
    })
}

/// One event row to insert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow<'a> {
    pub(crate) actor: &'a str,
    pub(crate) actor_type: &'a str,
    pub(crate) event: &'a EventRecord,
}

/// A stream a batch creates: its head starts at `version`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewHead<'a> {
    pub(crate) actor: &'a str,
    pub(crate) version: i64,
}

/// A stream a batch appends to: its head moves from `expected` to `new`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadMove<'a> {
    pub(crate) actor: &'a str,
    pub(crate) expected: i64,
    pub(crate) new: i64,
}

/// The journal work of a batch: event rows in commit order, the streams
/// it creates and the streams it moves.
#[derive(Default)]
pub(crate) struct JournalBatch<'a> {
    pub(crate) events: Vec<EventRow<'a>>,
    pub(crate) created: Vec<NewHead<'a>>,
    pub(crate) moved: Vec<HeadMove<'a>>,
}

/// Splits a batch's journal appends into rows and head moves. Successive
/// appends of one actor in the batch (pipelined turns) become one head
/// move; if they do not follow each other, the batch is a conflict.
pub(crate) fn journal_batch(batch: &[TurnCommit]) -> Result<JournalBatch<'_>, StoreError> {
    let mut out = JournalBatch::default();
    // actor -> (expected before the batch, version after it), in first-seen order.
    let mut heads: Vec<(&str, u64, u64)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for commit in batch {
        let Some(JournalAppend { expected_version, events }) = &commit.journal else { continue };
        let Some(last) = events.last() else { continue };
        let actor = commit.actor.as_str();
        match index.get(actor) {
            Some(&i) if heads[i].2 != *expected_version => return Err(journal_conflict(std::slice::from_ref(commit))),
            Some(&i) => heads[i].2 = last.version,
            None => {
                index.insert(actor, heads.len());
                heads.push((actor, *expected_version, last.version));
            }
        }
        out.events.extend(events.iter().map(|event| EventRow { actor, actor_type: commit.actor.actor_type(), event }));
    }
    for (actor, expected, new) in heads {
        if expected == 0 {
            out.created.push(NewHead { actor, version: new as i64 });
        } else {
            out.moved.push(HeadMove { actor, expected: expected as i64, new: new as i64 });
        }
    }
    Ok(out)
}

/// The error for a head check that did not match every stream: named
/// precisely when the batch is one turn (the committer retries a failed
/// batch turn by turn, so the caller always gets the precise one).
pub(crate) fn journal_conflict(batch: &[TurnCommit]) -> StoreError {
    match batch {
        [one] => StoreError::Conflict(format!(
            "the journal of {} is no longer at version {}: another writer appended first",
            one.actor,
            one.journal.as_ref().map_or(0, |j| j.expected_version)
        )),
        _ => StoreError::Conflict("a journal in this batch moved under it".into()),
    }
}

/// The error for a projection checkpoint that moved.
pub(crate) fn checkpoint_conflict(projection: &str, from: u64) -> StoreError {
    StoreError::Conflict(format!(
        "projection `{projection}` is no longer at position {from}: another runner advanced it first"
    ))
}

/// Moves the projection checkpoints of a batch inside its transaction;
/// each must still be where its turn found it.
pub(crate) async fn commit_checkpoints<D: Dialect>(tx: &mut Conn<D>, batch: &[TurnCommit]) -> Result<(), StoreError> {
    for advance in batch.iter().filter_map(|c| c.checkpoint.as_ref()) {
        let sql = "UPDATE projections SET checkpoint = $1 WHERE name = $2 AND checkpoint = $3";
        let moved = D::execute(tx, sql, &[(advance.to as i64).into(), advance.projection.as_str().into(), (advance.from as i64).into()]).await?;
        if moved != 1 {
            return Err(checkpoint_conflict(&advance.projection, advance.from));
        }
    }
    Ok(())
}

/// A position or count as a parameter (they fit in an `i64`).
fn int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

#[async_trait]
impl<S: SqlStore> JournalStore for S {
    async fn journal_head(&self, actor: &ActorId) -> Result<u64, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let row = S::Db::fetch_optional(&mut conn, "SELECT version FROM journal_heads WHERE actor = $1", &[actor.as_str().into()]).await?;
        Ok(row.map(|r| S::Db::int(&r, "version")).transpose()?.unwrap_or(0) as u64)
    }

    async fn read_events(&self, actor: &ActorId, from: u64, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        let cols = EVENT_COLUMNS;
        let sql = format!(
            "SELECT {cols} FROM (SELECT {cols} FROM journal_archive WHERE actor = $1 AND version >= $2 \
             UNION ALL SELECT {cols} FROM journal WHERE actor = $1 AND version >= $2) AS e ORDER BY version LIMIT $3"
        );
        let mut conn = self.reader().acquire().await?;
        let rows = S::Db::fetch_all(&mut conn, &sql, &[actor.as_str().into(), int(from).into(), int(max as u64).into()]).await?;
        rows.iter().map(event_from_row::<S::Db>).collect()
    }

    async fn version_at(&self, actor: &ActorId, at_ms: i64) -> Result<u64, StoreError> {
        let sql = "SELECT MAX(version) AS version FROM (SELECT version FROM journal_archive WHERE actor = $1 AND recorded_at_ms <= $2 \
                   UNION ALL SELECT version FROM journal WHERE actor = $1 AND recorded_at_ms <= $2) AS e";
        let mut conn = self.reader().acquire().await?;
        let row = S::Db::fetch_optional(&mut conn, sql, &[actor.as_str().into(), at_ms.into()]).await?;
        Ok(row.map(|r| S::Db::opt_int(&r, "version")).transpose()?.flatten().unwrap_or(0) as u64)
    }

    async fn latest_snapshot(&self, actor: &ActorId, at_most: u64) -> Result<Option<Snapshot>, StoreError> {
        let sql = "SELECT version, component_version, taken_at_ms, data FROM journal_snapshots \
                   WHERE actor = $1 AND version <= $2 ORDER BY version DESC LIMIT 1";
        let mut conn = self.reader().acquire().await?;
        let row = S::Db::fetch_optional(&mut conn, sql, &[actor.as_str().into(), int(at_most).into()]).await?;
        row.map(|r| {
            Ok(Snapshot {
                version: S::Db::int(&r, "version")? as u64,
                component_version: S::Db::int(&r, "component_version")? as u64,
                taken_at_ms: S::Db::int(&r, "taken_at_ms")?,
                data: S::Db::bytes(&r, "data")?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, actor: &ActorId, snapshot: &Snapshot, retention: Retention) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        S::Db::execute(
            &mut tx,
            "INSERT INTO journal_snapshots (actor, version, component_version, taken_at_ms, data) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (actor, version) DO UPDATE SET component_version = excluded.component_version, \
             taken_at_ms = excluded.taken_at_ms, data = excluded.data",
            &[
                actor.as_str().into(),
                int(snapshot.version).into(),
                int(snapshot.component_version).into(),
                snapshot.taken_at_ms.into(),
                snapshot.data.as_slice().into(),
            ],
        )
        .await?;
        if retention != Retention::Keep {
            // Only events every projection of this type has read: a
            // lagging projection must still find them. The bound is read
            // once, so the copy and the delete (separate statements, each
            // with its own snapshot under READ COMMITTED) cover the same
            // rows even if a projection is declared in between.
            let sql = "SELECT COALESCE(MIN(checkpoint), 9223372036854775807) AS bound FROM projections WHERE source_type = $1";
            let row = S::Db::fetch_optional(&mut tx, sql, &[actor.actor_type().into()]).await?;
            let bound = row.map(|r| S::Db::int(&r, "bound")).transpose()?.unwrap_or(i64::MAX);
            let covered = "actor = $1 AND version <= $2 AND seq <= $3";
            let args = [actor.as_str().into(), int(snapshot.version).into(), bound.into()];
            if retention == Retention::Archive {
                S::Db::execute(&mut tx, &format!("INSERT INTO journal_archive SELECT * FROM journal WHERE {covered}"), &args).await?;
            }
            S::Db::execute(&mut tx, &format!("DELETE FROM journal WHERE {covered}"), &args).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_projection(&self, def: &ProjectionDef) -> Result<bool, StoreError> {
        let mut conn = self.writer().acquire().await?;
        let inserted = S::Db::execute(
            &mut conn,
            "INSERT INTO projections (name, source_type, target, method, checkpoint, created_at_ms) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (name) DO NOTHING",
            &[def.name.as_str().into(), def.source_type.as_str().into(), def.target.as_str().into(), def.method.as_str().into(), crate::now_ms().into()],
        )
        .await?;
        if inserted == 1 {
            return Ok(true);
        }
        let sql = "SELECT name, source_type, target, method FROM projections WHERE name = $1";
        let row = S::Db::fetch_optional(&mut conn, sql, &[def.name.as_str().into()]).await?;
        let existing = row.as_ref().map(projection_from_row::<S::Db>).transpose()?;
        match existing {
            Some(existing) if existing == *def => Ok(false),
            Some(existing) => Err(StoreError::Rejected(format!(
                "projection `{}` exists already with source `{}`, target `{}`, method `{}`",
                def.name, existing.source_type, existing.target, existing.method
            ))),
            None => Err(StoreError::Conflict(format!("projection `{}` was deleted while it was declared again", def.name))),
        }
    }

    async fn delete_projection(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.writer().acquire().await?;
        Ok(S::Db::execute(&mut conn, "DELETE FROM projections WHERE name = $1", &[name.into()]).await? > 0)
    }

    async fn projections(&self) -> Result<Vec<ProjectionStatus>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let sql = "SELECT name, source_type, target, method, checkpoint FROM projections ORDER BY name";
        let rows = S::Db::fetch_all(&mut conn, sql, &[]).await?;
        rows.iter()
            .map(|r| Ok(ProjectionStatus { def: projection_from_row::<S::Db>(r)?, checkpoint: S::Db::int(r, "checkpoint")? as u64 }))
            .collect()
    }

    async fn read_type_events(&self, actor_type: &str, after: u64, max: usize) -> Result<Vec<PositionedEvent>, StoreError> {
        let cols = EVENT_COLUMNS;
        // Archived events keep their position: a projection declared after
        // `archive` retention still reads from the beginning.
        let sql = format!(
            "SELECT seq, actor, {cols} FROM (SELECT seq, actor, {cols} FROM journal_archive WHERE actor_type = $1 AND seq > $2 \
             UNION ALL SELECT seq, actor, {cols} FROM journal WHERE actor_type = $1 AND seq > $2) AS e ORDER BY seq LIMIT $3"
        );
        let mut conn = self.reader().acquire().await?;
        let rows = S::Db::fetch_all(&mut conn, &sql, &[actor_type.into(), int(after).into(), int(max as u64).into()]).await?;
        rows.iter()
            .map(|r| {
                Ok(PositionedEvent {
                    position: S::Db::int(r, "seq")? as u64,
                    actor: S::Db::text(r, "actor")?,
                    event: event_from_row::<S::Db>(r)?,
                })
            })
            .collect()
    }

    async fn count_type_events(&self, actor_type: &str, after: u64) -> Result<u64, StoreError> {
        let sql = "SELECT (SELECT COUNT(*) FROM journal WHERE actor_type = $1 AND seq > $2) \
                   + (SELECT COUNT(*) FROM journal_archive WHERE actor_type = $1 AND seq > $2) AS n";
        let mut conn = self.reader().acquire().await?;
        let row = S::Db::fetch_optional(&mut conn, sql, &[actor_type.into(), int(after).into()]).await?;
        Ok(row.map(|r| S::Db::int(&r, "n")).transpose()?.unwrap_or(0) as u64)
    }
}

/// Reads a projection's definition (`name, source_type, target, method`).
fn projection_from_row<D: Dialect>(row: &SqlRow<D>) -> Result<ProjectionDef, StoreError> {
    Ok(ProjectionDef {
        name: D::text(row, "name")?,
        source_type: D::text(row, "source_type")?,
        target: D::text(row, "target")?,
        method: D::text(row, "method")?,
    })
}
