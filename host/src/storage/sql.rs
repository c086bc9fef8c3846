//! What the SQL backends share: component-store statements (written with
//! `$N` placeholders, which SQLite and PostgreSQL both accept) and row decoding.

use super::{ComponentVersion, EventRecord, JournalAppend, Manifest, StoreError, TurnCommit};

/// Reads a `component_versions` row; the same columns in every SQL backend.
pub(crate) fn version_from_row<R>(row: &R) -> Result<ComponentVersion, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let manifest: String = row.try_get("manifest")?;
    Ok(ComponentVersion {
        actor_type: row.try_get("actor_type")?,
        version: row.try_get::<i64, _>("version")? as u64,
        hash: row.try_get("hash")?,
        size: row.try_get::<i64, _>("size")? as u64,
        manifest: serde_json::from_str::<Manifest>(&manifest).map_err(|e| StoreError::Corrupt(format!("manifest: {e}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

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
    ($store:ty, writer: $writer:ident, reader: $reader:ident) => {
        #[async_trait::async_trait]
        impl $crate::storage::JournalStore for $store {
            async fn journal_head(&self, actor: &$crate::id::ActorId) -> Result<u64, $crate::storage::StoreError> {
                let v: Option<i64> = ::sqlx::query_scalar("SELECT version FROM journal_heads WHERE actor = $1")
                    .bind(actor.as_str())
                    .fetch_optional(&self.$reader)
                    .await?;
                Ok(v.unwrap_or(0) as u64)
            }

            async fn read_events(
                &self,
                actor: &$crate::id::ActorId,
                from: u64,
                max: usize,
            ) -> Result<Vec<$crate::storage::EventRecord>, $crate::storage::StoreError> {
                let cols = $crate::storage::sql::EVENT_COLUMNS;
                let rows = ::sqlx::query(&format!(
                    "SELECT {cols} FROM (SELECT {cols} FROM journal_archive WHERE actor = $1 AND version >= $2 \
                     UNION ALL SELECT {cols} FROM journal WHERE actor = $1 AND version >= $2) AS e ORDER BY version LIMIT $3"
                ))
                .bind(actor.as_str())
                .bind(from.min(i64::MAX as u64) as i64)
                .bind(max.min(i64::MAX as usize) as i64)
                .fetch_all(&self.$reader)
                .await?;
                rows.iter().map($crate::storage::sql::event_from_row).collect()
            }

            async fn version_at(&self, actor: &$crate::id::ActorId, at_ms: i64) -> Result<u64, $crate::storage::StoreError> {
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
                actor: &$crate::id::ActorId,
                at_most: u64,
            ) -> Result<Option<$crate::storage::Snapshot>, $crate::storage::StoreError> {
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
                    Ok($crate::storage::Snapshot {
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
                actor: &$crate::id::ActorId,
                snapshot: &$crate::storage::Snapshot,
                retention: $crate::storage::Retention,
            ) -> Result<(), $crate::storage::StoreError> {
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
                // Only events every projection of this type has read: a
                // lagging projection must still find them.
                let covered = "actor = $1 AND version <= $2 AND seq <= COALESCE(\
                    (SELECT MIN(checkpoint) FROM projections WHERE source_type = $3), 9223372036854775807)";
                if retention == $crate::storage::Retention::Archive {
                    ::sqlx::query(&format!("INSERT INTO journal_archive SELECT * FROM journal WHERE {covered}"))
                        .bind(actor.as_str())
                        .bind(snapshot.version as i64)
                        .bind(actor.actor_type())
                        .execute(&mut *tx)
                        .await?;
                }
                if retention != $crate::storage::Retention::Keep {
                    ::sqlx::query(&format!("DELETE FROM journal WHERE {covered}"))
                        .bind(actor.as_str())
                        .bind(snapshot.version as i64)
                        .bind(actor.actor_type())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn create_projection(&self, def: &$crate::storage::ProjectionDef) -> Result<bool, $crate::storage::StoreError> {
                use ::sqlx::Row;
                let inserted = ::sqlx::query(
                    "INSERT INTO projections (name, source_type, target, method, checkpoint, created_at_ms) \
                     VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&def.name)
                .bind(&def.source_type)
                .bind(&def.target)
                .bind(&def.method)
                .bind($crate::storage::now_ms())
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
                    Err($crate::storage::StoreError::Rejected(format!(
                        "projection `{}` exists already with source `{}`, target `{}`, method `{}`",
                        def.name, existing.0, existing.1, existing.2
                    )))
                }
            }

            async fn delete_projection(&self, name: &str) -> Result<bool, $crate::storage::StoreError> {
                let n = ::sqlx::query("DELETE FROM projections WHERE name = $1").bind(name).execute(&self.$writer).await?.rows_affected();
                Ok(n > 0)
            }

            async fn projections(&self) -> Result<Vec<$crate::storage::ProjectionStatus>, $crate::storage::StoreError> {
                use ::sqlx::Row;
                let rows = ::sqlx::query("SELECT name, source_type, target, method, checkpoint FROM projections ORDER BY name")
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::storage::ProjectionStatus {
                            def: $crate::storage::ProjectionDef {
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
            ) -> Result<Vec<$crate::storage::PositionedEvent>, $crate::storage::StoreError> {
                use ::sqlx::Row;
                let cols = $crate::storage::sql::EVENT_COLUMNS;
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
                        Ok($crate::storage::PositionedEvent {
                            position: r.try_get::<i64, _>("seq")? as u64,
                            actor: r.try_get("actor")?,
                            event: $crate::storage::sql::event_from_row(r)?,
                        })
                    })
                    .collect()
            }

            async fn count_type_events(&self, actor_type: &str, after: u64) -> Result<u64, $crate::storage::StoreError> {
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

/// Implements `ComponentStore` for a SQL store whose pools are the fields
/// `writer` (transactions) and `reader` (queries).
macro_rules! sql_component_store {
    ($store:ty, writer: $writer:ident, reader: $reader:ident) => {
        #[async_trait::async_trait]
        impl $crate::storage::ComponentStore for $store {
            async fn add_component_version(
                &self,
                actor_type: &str,
                hash: &str,
                bytes: &[u8],
                manifest: &$crate::storage::Manifest,
            ) -> Result<$crate::storage::ComponentVersion, $crate::storage::StoreError> {
                let mut tx = self.$writer.begin().await?;
                ::sqlx::query("INSERT INTO component_blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(hash)
                    .bind(bytes)
                    .execute(&mut *tx)
                    .await?;
                let version: i64 =
                    ::sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM component_versions WHERE actor_type = $1")
                        .bind(actor_type)
                        .fetch_one(&mut *tx)
                        .await?;
                let created_at_ms = $crate::storage::now_ms();
                let manifest_json = ::serde_json::to_string(manifest).map_err(|e| $crate::storage::StoreError::Corrupt(e.to_string()))?;
                ::sqlx::query(
                    "INSERT INTO component_versions (actor_type, version, hash, size, manifest, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(actor_type)
                .bind(version)
                .bind(hash)
                .bind(bytes.len() as i64)
                .bind(&manifest_json)
                .bind(created_at_ms)
                .execute(&mut *tx)
                .await?;
                ::sqlx::query(
                    "INSERT INTO component_heads (actor_type, version) VALUES ($1, $2) ON CONFLICT (actor_type) DO UPDATE SET version = excluded.version",
                )
                .bind(actor_type)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok($crate::storage::ComponentVersion {
                    actor_type: actor_type.to_string(),
                    version: version as u64,
                    hash: hash.to_string(),
                    size: bytes.len() as u64,
                    manifest: manifest.clone(),
                    created_at_ms,
                })
            }

            async fn component_versions(&self, actor_type: &str) -> Result<Vec<$crate::storage::ComponentVersion>, $crate::storage::StoreError> {
                let rows = ::sqlx::query("SELECT * FROM component_versions WHERE actor_type = $1 ORDER BY version")
                    .bind(actor_type)
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter().map($crate::storage::sql::version_from_row).collect()
            }

            async fn component_bytes(&self, actor_type: &str, version: u64) -> Result<Option<Vec<u8>>, $crate::storage::StoreError> {
                Ok(::sqlx::query_scalar(
                    "SELECT b.bytes FROM component_versions v JOIN component_blobs b ON b.hash = v.hash WHERE v.actor_type = $1 AND v.version = $2",
                )
                .bind(actor_type)
                .bind(version as i64)
                .fetch_optional(&self.$reader)
                .await?)
            }

            async fn set_active_version(&self, actor_type: &str, version: u64) -> Result<(), $crate::storage::StoreError> {
                ::sqlx::query(
                    "INSERT INTO component_heads (actor_type, version) VALUES ($1, $2) ON CONFLICT (actor_type) DO UPDATE SET version = excluded.version",
                )
                .bind(actor_type)
                .bind(version as i64)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn active_versions(&self) -> Result<Vec<$crate::storage::ComponentVersion>, $crate::storage::StoreError> {
                let rows = ::sqlx::query(
                    "SELECT v.* FROM component_heads h JOIN component_versions v ON v.actor_type = h.actor_type AND v.version = h.version ORDER BY v.actor_type",
                )
                .fetch_all(&self.$reader)
                .await?;
                rows.iter().map($crate::storage::sql::version_from_row).collect()
            }
        }
    };
}

pub(crate) use sql_component_store;
