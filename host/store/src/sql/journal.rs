//! Journals and projections in SQL: event rows, batched appends with their
//! head checks, and the `JournalStore` read side.

use crate::{EventRecord, JournalAppend, StoreError, TurnCommit};

/// The columns of an event row, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "version, event_type, schema_version, data, recorded_at_ms, correlation_id, causation_id, caller, method";

/// Reads an event row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row<R>(row: &R) -> Result<EventRecord, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(EventRecord {
        version: row.try_get::<i64, _>("version")? as u64,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get::<i64, _>("schema_version")? as u32,
        data: row.try_get("data")?,
        recorded_at_ms: row.try_get("recorded_at_ms")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        caller: row.try_get("caller")?,
        method: row.try_get("method")?,
    })
}

/// One event row to insert: `(actor, actor_type, event)`.
pub(crate) type EventRow<'a> = (&'a str, &'a str, &'a EventRecord);

/// The journal work of a batch: event rows in commit order, new streams
/// `(actor, new_version)` and moved streams `(actor, expected, new_version)`.
#[derive(Default)]
pub(crate) struct JournalBatch<'a> {
    pub(crate) events: Vec<EventRow<'a>>,
    pub(crate) created: Vec<(&'a str, i64)>,
    pub(crate) moved: Vec<(&'a str, i64, i64)>,
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
        out.events.extend(events.iter().map(|e| (actor, commit.actor.actor_type(), e)));
    }
    for (actor, expected, new) in heads {
        if expected == 0 {
            out.created.push((actor, new as i64));
        } else {
            out.moved.push((actor, expected as i64, new as i64));
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

/// Implements the read side of `JournalStore` for a SQL store whose pools
/// are the fields `writer` and `reader`.
macro_rules! sql_journal_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident) => {
        impl $store {
            /// Moves the projection checkpoints of a batch inside its
            /// transaction; each must still be where its turn found it.
            async fn commit_checkpoints(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::TurnCommit],
            ) -> Result<(), $crate::StoreError> {
                for advance in batch.iter().filter_map(|c| c.checkpoint.as_ref()) {
                    let moved = ::sqlx::query("UPDATE projections SET checkpoint = $1 WHERE name = $2 AND checkpoint = $3")
                        .bind(advance.to as i64)
                        .bind(&advance.projection)
                        .bind(advance.from as i64)
                        .execute(&mut **tx)
                        .await?;
                    if moved.rows_affected() != 1 {
                        return Err($crate::sql::checkpoint_conflict(&advance.projection, advance.from));
                    }
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::JournalStore for $store {
            async fn journal_head(&self, actor: &::quark_core::id::ActorId) -> Result<u64, $crate::StoreError> {
                let v: Option<i64> = ::sqlx::query_scalar("SELECT version FROM journal_heads WHERE actor = $1")
                    .bind(actor.as_str())
                    .fetch_optional(&self.$reader)
                    .await?;
                Ok(v.unwrap_or(0) as u64)
            }

            async fn read_events(
                &self,
                actor: &::quark_core::id::ActorId,
                from: u64,
                max: usize,
            ) -> Result<Vec<$crate::EventRecord>, $crate::StoreError> {
                let cols = $crate::sql::EVENT_COLUMNS;
                let rows = ::sqlx::query(&format!(
                    "SELECT {cols} FROM (SELECT {cols} FROM journal_archive WHERE actor = $1 AND version >= $2 \
                     UNION ALL SELECT {cols} FROM journal WHERE actor = $1 AND version >= $2) AS e ORDER BY version LIMIT $3"
                ))
                .bind(actor.as_str())
                .bind(from.min(i64::MAX as u64) as i64)
                .bind(max.min(i64::MAX as usize) as i64)
                .fetch_all(&self.$reader)
                .await?;
                rows.iter().map($crate::sql::event_from_row).collect()
            }

            async fn version_at(&self, actor: &::quark_core::id::ActorId, at_ms: i64) -> Result<u64, $crate::StoreError> {
                let v: Option<i64> = ::sqlx::query_scalar(
                    "SELECT MAX(version) FROM (SELECT version FROM journal_archive WHERE actor = $1 AND recorded_at_ms <= $2 \
                     UNION ALL SELECT version FROM journal WHERE actor = $1 AND recorded_at_ms <= $2) AS e",
                )
                .bind(actor.as_str())
                .bind(at_ms)
                .fetch_one(&self.$reader)
                .await?;
                Ok(v.unwrap_or(0) as u64)
            }

            async fn latest_snapshot(
                &self,
                actor: &::quark_core::id::ActorId,
                at_most: u64,
            ) -> Result<Option<$crate::Snapshot>, $crate::StoreError> {
                use ::sqlx::Row;
                let row = ::sqlx::query(
                    "SELECT version, component_version, taken_at_ms, data FROM journal_snapshots \
                     WHERE actor = $1 AND version <= $2 ORDER BY version DESC LIMIT 1",
                )
                .bind(actor.as_str())
                .bind(at_most.min(i64::MAX as u64) as i64)
                .fetch_optional(&self.$reader)
                .await?;
                row.map(|r| {
                    Ok($crate::Snapshot {
                        version: r.try_get::<i64, _>(0)? as u64,
                        component_version: r.try_get::<i64, _>(1)? as u64,
                        taken_at_ms: r.try_get(2)?,
                        data: r.try_get(3)?,
                    })
                })
                .transpose()
            }

            async fn save_snapshot(
                &self,
                actor: &::quark_core::id::ActorId,
                snapshot: &$crate::Snapshot,
                retention: $crate::Retention,
            ) -> Result<(), $crate::StoreError> {
                let mut tx = self.$writer.begin().await?;
                ::sqlx::query(
                    "INSERT INTO journal_snapshots (actor, version, component_version, taken_at_ms, data) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (actor, version) DO UPDATE SET component_version = excluded.component_version, \
                     taken_at_ms = excluded.taken_at_ms, data = excluded.data",
                )
                .bind(actor.as_str())
                .bind(snapshot.version as i64)
                .bind(snapshot.component_version as i64)
                .bind(snapshot.taken_at_ms)
                .bind(&snapshot.data)
                .execute(&mut *tx)
                .await?;
                if retention != $crate::Retention::Keep {
                    // Only events every projection of this type has read: a
                    // lagging projection must still find them. The bound is
                    // read once, so the copy and the delete (separate
                    // statements, each with its own snapshot under READ
                    // COMMITTED) cover the same rows even if a projection
                    // is declared in between.
                    let bound: i64 = ::sqlx::query_scalar(
                        "SELECT COALESCE(MIN(checkpoint), 9223372036854775807) FROM projections WHERE source_type = $1",
                    )
                    .bind(actor.actor_type())
                    .fetch_one(&mut *tx)
                    .await?;
                    let covered = "actor = $1 AND version <= $2 AND seq <= $3";
                    if retention == $crate::Retention::Archive {
                        ::sqlx::query(&format!("INSERT INTO journal_archive SELECT * FROM journal WHERE {covered}"))
                            .bind(actor.as_str())
                            .bind(snapshot.version as i64)
                            .bind(bound)
                            .execute(&mut *tx)
                            .await?;
                    }
                    ::sqlx::query(&format!("DELETE FROM journal WHERE {covered}"))
                        .bind(actor.as_str())
                        .bind(snapshot.version as i64)
                        .bind(bound)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn create_projection(&self, def: &$crate::ProjectionDef) -> Result<bool, $crate::StoreError> {
                use ::sqlx::Row;
                let inserted = ::sqlx::query(
                    "INSERT INTO projections (name, source_type, target, method, checkpoint, created_at_ms) \
                     VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&def.name)
                .bind(&def.source_type)
                .bind(&def.target)
                .bind(&def.method)
                .bind($crate::now_ms())
                .execute(&self.$writer)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok(true);
                }
                let row = ::sqlx::query("SELECT source_type, target, method FROM projections WHERE name = $1")
                    .bind(&def.name)
                    .fetch_one(&self.$reader)
                    .await?;
                let existing = (row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?, row.try_get::<String, _>(2)?);
                if existing == (def.source_type.clone(), def.target.clone(), def.method.clone()) {
                    Ok(false)
                } else {
                    Err($crate::StoreError::Rejected(format!(
                        "projection `{}` exists already with source `{}`, target `{}`, method `{}`",
                        def.name, existing.0, existing.1, existing.2
                    )))
                }
            }

            async fn delete_projection(&self, name: &str) -> Result<bool, $crate::StoreError> {
                let n = ::sqlx::query("DELETE FROM projections WHERE name = $1").bind(name).execute(&self.$writer).await?.rows_affected();
                Ok(n > 0)
            }

            async fn projections(&self) -> Result<Vec<$crate::ProjectionStatus>, $crate::StoreError> {
                use ::sqlx::Row;
                let rows = ::sqlx::query("SELECT name, source_type, target, method, checkpoint FROM projections ORDER BY name")
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::ProjectionStatus {
                            def: $crate::ProjectionDef {
                                name: r.try_get(0)?,
                                source_type: r.try_get(1)?,
                                target: r.try_get(2)?,
                                method: r.try_get(3)?,
                            },
                            checkpoint: r.try_get::<i64, _>(4)? as u64,
                        })
                    })
                    .collect()
            }

            async fn read_type_events(
                &self,
                actor_type: &str,
                after: u64,
                max: usize,
            ) -> Result<Vec<$crate::PositionedEvent>, $crate::StoreError> {
                use ::sqlx::Row;
                let cols = $crate::sql::EVENT_COLUMNS;
                // Archived events keep their position: a projection declared
                // after `archive` retention still reads from the beginning.
                let rows = ::sqlx::query(&format!(
                    "SELECT seq, actor, {cols} FROM (SELECT seq, actor, {cols} FROM journal_archive WHERE actor_type = $1 AND seq > $2 \
                     UNION ALL SELECT seq, actor, {cols} FROM journal WHERE actor_type = $1 AND seq > $2) AS e ORDER BY seq LIMIT $3"
                ))
                .bind(actor_type)
                .bind(after.min(i64::MAX as u64) as i64)
                .bind(max.min(i64::MAX as usize) as i64)
                .fetch_all(&self.$reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::PositionedEvent {
                            position: r.try_get::<i64, _>("seq")? as u64,
                            actor: r.try_get("actor")?,
                            event: $crate::sql::event_from_row(r)?,
                        })
                    })
                    .collect()
            }

            async fn count_type_events(&self, actor_type: &str, after: u64) -> Result<u64, $crate::StoreError> {
                let n: i64 = ::sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM journal WHERE actor_type = $1 AND seq > $2) \
                     + (SELECT COUNT(*) FROM journal_archive WHERE actor_type = $1 AND seq > $2)",
                )
                    .bind(actor_type)
                    .bind(after.min(i64::MAX as u64) as i64)
                    .fetch_one(&self.$reader)
                    .await?;
                Ok(n as u64)
            }
        }
    };
}

pub(crate) use sql_journal_store;
