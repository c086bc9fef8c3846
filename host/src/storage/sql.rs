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
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident) => {
        impl $store {
            /// Moves the projection checkpoints of a batch inside its
            /// transaction; each must still be where its turn found it.
            async fn commit_checkpoints(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::storage::TurnCommit],
            ) -> Result<(), $crate::storage::StoreError> {
                for advance in batch.iter().filter_map(|c| c.checkpoint.as_ref()) {
                    let moved = ::sqlx::query("UPDATE projections SET checkpoint = $1 WHERE name = $2 AND checkpoint = $3")
                        .bind(advance.to as i64)
                        .bind(&advance.projection)
                        .bind(advance.from as i64)
                        .execute(&mut **tx)
                        .await?;
                    if moved.rows_affected() != 1 {
                        return Err($crate::storage::sql::checkpoint_conflict(&advance.projection, advance.from));
                    }
                }
                Ok(())
            }
        }

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
                if retention != $crate::storage::Retention::Keep {
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
                    if retention == $crate::storage::Retention::Archive {
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

/// The columns of a job row, in the order [`job_from_row`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, target, method, payload, queue, priority, status, run_at_ms, cron, time_zone, catch_up, \
     attempts, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, idempotency_key, cancel_requested, progress, progress_note, \
     errors, created_at_ms, updated_at_ms";

/// Reads a job row selected with [`JOB_COLUMNS`].
pub(crate) fn job_from_row<R>(row: &R) -> Result<super::jobs::JobRecord, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("job row, {what}: {e}"));
    let errors: String = row.try_get("errors")?;
    Ok(super::jobs::JobRecord {
        id: row.try_get("id")?,
        target: row.try_get("target")?,
        method: row.try_get("method")?,
        payload: row.try_get("payload")?,
        queue: row.try_get("queue")?,
        priority: row.try_get::<i64, _>("priority")? as i32,
        status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt("status", e))?,
        run_at_ms: row.try_get("run_at_ms")?,
        cron: row.try_get("cron")?,
        time_zone: row.try_get("time_zone")?,
        catch_up: row.try_get::<String, _>("catch_up")?.parse().map_err(|e| corrupt("catch_up", e))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        backoff_ms: row.try_get::<i64, _>("backoff_ms")? as u64,
        max_backoff_ms: row.try_get::<i64, _>("max_backoff_ms")? as u64,
        timeout_ms: row.try_get::<Option<i64>, _>("timeout_ms")?.map(|t| t as u64),
        idempotency_key: row.try_get("idempotency_key")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        progress: row.try_get::<Option<i64>, _>("progress")?.map(|p| p.clamp(0, 100) as u8),
        progress_note: row.try_get("progress_note")?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt("errors", e.to_string()))?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// A lane as a commit upserts it: sender, kind, target, due at (ms).
pub(crate) type LaneKey<'a> = (&'a str, &'a str, &'a str, i64);

/// Prepared statements each connection keeps: every shape of a group
/// commit's batched statements ([`pow2_chunks`]) fits, so commits do not
/// parse again once warm.
pub(crate) const STATEMENT_CACHE: usize = 500;

/// `$first, $first+1, …` for `count` placeholders.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Implements `JobStore` for a SQL store of database `$db` whose pools are
/// `writer` and `reader`, plus `commit_jobs`, which writes a batch's job
/// effects inside the batch's transaction. `index_hint: true` names the
/// claim index of each status (`INDEXED BY`, for SQLite, whose planner
/// without statistics sorts every due job otherwise); `$lock` ends the
/// claim's inner select (`FOR UPDATE SKIP LOCKED` on PostgreSQL);
/// `claim_begin` starts each claim's transaction.
macro_rules! sql_job_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, index_hint: $hint:expr, lock: $lock:expr) => {
        $crate::storage::sql::sql_job_store!($store, $db, writer: $writer, reader: $reader, index_hint: $hint, lock: $lock, claim_begin: "BEGIN", announce: {});
    };
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, index_hint: $hint:expr, lock: $lock:expr, claim_begin: $claim_begin:literal, announce: { $($announce:tt)* }) => {
        impl $store {
            /// Writes the job effects of a batch of turns: schedules,
            /// cancels, and completions (which must still hold their lease).
            async fn commit_jobs(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::storage::TurnCommit],
            ) -> Result<(), $crate::storage::StoreError> {
                let now = $crate::storage::now_ms();
                let new: Vec<&$crate::storage::jobs::JobRecord> = batch.iter().flat_map(|c| c.jobs.iter()).collect();
                Self::insert_jobs(&mut **tx, &new).await?;
                for id in batch.iter().flat_map(|c| c.cancels.iter()) {
                    ::sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
                         cancel_requested = 1, updated_at_ms = $2 WHERE id = $1 AND status IN ('scheduled', 'failed', 'running')",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                let done: Vec<&$crate::storage::jobs::JobCompletion> = batch.iter().filter_map(|c| c.job_done.as_ref()).collect();
                if Self::complete_runs(tx, &done).await? != done.len() as u64 {
                    return Err($crate::storage::StoreError::Conflict(match done.as_slice() {
                        [one] => format!("job {} is no longer leased to this run (its lease expired and another run took it)", one.id),
                        _ => "a job in this batch is no longer leased to its run".into(),
                    }));
                }
                Ok(())
            }

            /// Ends runs that still hold their lease: one-shot jobs
            /// succeed, recurring ones move to their next tick. Returns
            /// how many did.
            async fn complete_runs(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                done: &[&$crate::storage::jobs::JobCompletion],
            ) -> Result<u64, $crate::storage::StoreError> {
                let now = $crate::storage::now_ms();
                let mut completed = 0;
                // One-shot completions in one statement per chunk (power-of-two
                // sizes, so each shape is prepared once), driven by the primary
                // key; recurring ones, rarer, move to their next tick one by one.
                let (recurring, one_shot): (Vec<_>, Vec<_>) = done.iter().copied().partition(|d| d.next_run_at_ms.is_some());
                for chunk in $crate::storage::sql::pow2_chunks(&one_shot, 256) {
                    // Each (id, lease) pair, not ids × leases: a stale lease
                    // of one job must not pass because another job of the
                    // batch holds the lease it has now. `id IN` keeps the
                    // primary key driving the update.
                    let sql = format!(
                        "UPDATE jobs SET status = 'succeeded', lease = NULL, lease_until_ms = NULL, updated_at_ms = $1 \
                         WHERE status = 'running' AND id IN ({}) AND (id, lease) IN (VALUES {})",
                        $crate::storage::sql::placeholders(2, chunk.len()),
                        $crate::storage::sql::lane_pairs(2 + chunk.len(), chunk.len())
                    );
                    let mut q = ::sqlx::query(&sql).bind(now);
                    for d in chunk {
                        q = q.bind(&d.id);
                    }
                    for d in chunk {
                        q = q.bind(&d.id).bind(&d.lease);
                    }
                    completed += q.execute(&mut **tx).await?.rows_affected();
                }
                for d in recurring {
                    completed += ::sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'scheduled' END, \
                         run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, updated_at_ms = $4 \
                         WHERE id = $1 AND lease = $2 AND status = 'running'",
                    )
                    .bind(&d.id)
                    .bind(&d.lease)
                    .bind(d.next_run_at_ms)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                }
                Ok(completed)
            }

            async fn insert_jobs(
                conn: &mut <$db as ::sqlx::Database>::Connection,
                jobs: &[&$crate::storage::jobs::JobRecord],
            ) -> Result<u64, $crate::storage::StoreError> {
                let mut inserted = 0;
                for chunk in $crate::storage::sql::pow2_chunks(jobs, 512) {
                    let mut q = ::sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO jobs (id, target, actor_type, method, payload, queue, priority, status, run_at_ms, cron, \
                         time_zone, catch_up, attempts, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, idempotency_key, \
                         errors, created_at_ms, updated_at_ms) ",
                    );
                    q.push_values(chunk, |mut row, j| {
                        let actor_type = j.target.split_once('/').map_or(j.target.as_str(), |(t, _)| t);
                        row.push_bind(j.id.as_str())
                            .push_bind(j.target.as_str())
                            .push_bind(actor_type)
                            .push_bind(j.method.as_str())
                            .push_bind(j.payload.as_slice())
                            .push_bind(j.queue.as_str())
                            .push_bind(i64::from(j.priority))
                            .push_bind(j.status.as_str())
                            .push_bind(j.run_at_ms)
                            .push_bind(j.cron.as_deref())
                            .push_bind(j.time_zone.as_deref())
                            .push_bind(match j.catch_up {
                                $crate::storage::jobs::CatchUp::Once => "once",
                                $crate::storage::jobs::CatchUp::All => "all",
                                $crate::storage::jobs::CatchUp::Skip => "skip",
                            })
                            .push_bind(0_i64)
                            .push_bind(i64::from(j.max_attempts))
                            .push_bind(j.backoff_ms as i64)
                            .push_bind(j.max_backoff_ms as i64)
                            .push_bind(j.timeout_ms.map(|t| t as i64))
                            .push_bind(j.idempotency_key.as_deref())
                            .push_bind("[]")
                            .push_bind(j.created_at_ms)
                            .push_bind(j.updated_at_ms);
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    inserted += q.build().execute(&mut *conn).await?.rows_affected();
                }
                Ok(inserted)
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::jobs::JobStore for $store {
            async fn add_jobs(&self, jobs: &[$crate::storage::jobs::JobRecord]) -> Result<u64, $crate::storage::StoreError> {
                let refs: Vec<&$crate::storage::jobs::JobRecord> = jobs.iter().collect();
                let mut tx = self.$writer.begin().await?;
                let n = Self::insert_jobs(&mut *tx, &refs).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn claim_jobs(
                &self,
                now_ms: i64,
                max: usize,
                lease_ms: i64,
                filter: &$crate::storage::jobs::ClaimFilter,
                completed: &[$crate::storage::jobs::JobCompletion],
            ) -> Result<Vec<$crate::storage::jobs::JobClaim>, $crate::storage::StoreError> {
                let lease = $crate::storage::jobs::new_lease();
                let mut tx = self.$writer.begin_with($claim_begin).await?;
                let completed: Vec<&$crate::storage::jobs::JobCompletion> = completed.iter().collect();
                // A run whose lease lapsed meanwhile is another run's now: skip it.
                Self::complete_runs(&mut tx, &completed).await?;
                let mut exclude = String::new();
                let mut next = 5;
                if !filter.full_queues.is_empty() {
                    exclude.push_str(&format!(" AND queue NOT IN ({})", $crate::storage::sql::placeholders(next, filter.full_queues.len())));
                    next += filter.full_queues.len();
                }
                if !filter.full_types.is_empty() {
                    exclude.push_str(&format!(" AND actor_type NOT IN ({})", $crate::storage::sql::placeholders(next, filter.full_types.len())));
                }
                // Expired leases first (rare), then retries, then new jobs:
                // one statement per status, so each walks the claim index in
                // order and stops at its LIMIT.
                let mut rows = Vec::new();
                for (due, index) in [
                    (!filter.skip_expired).then_some(("status = 'running' AND lease_until_ms < $3", None)),
                    Some(("status = 'failed' AND run_at_ms <= $3", Some("jobs_failed"))),
                    Some(("status = 'scheduled' AND run_at_ms <= $3", Some("jobs_scheduled"))),
                ]
                .into_iter()
                .flatten()
                {

                    let want = max.saturating_sub(rows.len());
                    if want == 0 {
                        break;
                    }
                    let sql = format!(
                        "UPDATE jobs SET status = 'running', lease = $1, lease_until_ms = $2, attempts = attempts + 1, updated_at_ms = $3 \
                         WHERE id IN (SELECT id FROM jobs{} WHERE {due}{exclude} ORDER BY priority DESC, run_at_ms LIMIT $4{}) \
                         RETURNING {}",
                        match index {
                            Some(index) if $hint => format!(" INDEXED BY {index}"),
                            _ => String::new(),
                        },
                        $lock,
                        $crate::storage::sql::JOB_COLUMNS
                    );
                    let mut q = ::sqlx::query(&sql).bind(&lease).bind(now_ms + lease_ms).bind(now_ms).bind(want as i64);
                    for name in filter.full_queues.iter().chain(filter.full_types.iter()) {
                        q = q.bind(name);
                    }
                    rows.extend(q.fetch_all(&mut *tx).await?);
                }
                tx.commit().await?;
                let mut claims = rows
                    .iter()
                    .map(|r| Ok($crate::storage::jobs::JobClaim { job: $crate::storage::sql::job_from_row(r)?, lease: lease.clone() }))
                    .collect::<Result<Vec<_>, $crate::storage::StoreError>>()?;
                claims.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.job.run_at_ms.cmp(&b.job.run_at_ms)));
                Ok(claims)
            }

            async fn fail_job(&self, failure: &$crate::storage::jobs::JobFailure) -> Result<bool, $crate::storage::StoreError> {
                use ::sqlx::Row;
                let mut tx = self.$writer.begin().await?;
                let row = ::sqlx::query("SELECT errors, attempts, cancel_requested FROM jobs WHERE id = $1 AND lease = $2 AND status = 'running'")
                    .bind(&failure.id)
                    .bind(&failure.lease)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(false) };
                let errors = $crate::storage::jobs::push_job_error(
                    &row.try_get::<String, _>(0)?,
                    row.try_get::<i64, _>(1)? as u32,
                    &failure.error,
                );
                let status = match (row.try_get::<i64, _>(2)? != 0, failure.retry_at_ms) {
                    (true, _) => "cancelled",
                    (false, Some(_)) => "failed",
                    (false, None) => "dead",
                };
                ::sqlx::query(
                    "UPDATE jobs SET status = $3, run_at_ms = COALESCE($4, run_at_ms), errors = $5, lease = NULL, \
                     lease_until_ms = NULL, updated_at_ms = $6 WHERE id = $1 AND lease = $2",
                )
                .bind(&failure.id)
                .bind(&failure.lease)
                .bind(status)
                .bind(failure.retry_at_ms)
                .bind(errors)
                .bind($crate::storage::now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn reschedule_job(&self, id: &str, lease: &str, next_run_at_ms: i64) -> Result<bool, $crate::storage::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = 'scheduled', run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, \
                     updated_at_ms = $4 WHERE id = $1 AND lease = $2 AND status = 'running'",
                )
                .bind(id)
                .bind(lease)
                .bind(next_run_at_ms)
                .bind($crate::storage::now_ms())
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn job(&self, id: &str) -> Result<Option<$crate::storage::jobs::JobRecord>, $crate::storage::StoreError> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1", $crate::storage::sql::JOB_COLUMNS);
                let row = ::sqlx::query(&sql).bind(id).fetch_optional(&self.$reader).await?;
                row.as_ref().map($crate::storage::sql::job_from_row).transpose()
            }

            async fn jobs(
                &self,
                status: Option<$crate::storage::jobs::JobStatus>,
                target: Option<&str>,
                limit: usize,
            ) -> Result<Vec<$crate::storage::jobs::JobRecord>, $crate::storage::StoreError> {
                let sql = format!(
                    "SELECT {} FROM jobs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR target = $2) \
                     ORDER BY created_at_ms DESC, id LIMIT $3",
                    $crate::storage::sql::JOB_COLUMNS
                );
                let rows = ::sqlx::query(&sql)
                    .bind(status.map(|s| s.as_str()))
                    .bind(target)
                    .bind(limit.min(i64::MAX as usize) as i64)
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter().map($crate::storage::sql::job_from_row).collect()
            }

            async fn cancel_job(&self, id: &str) -> Result<bool, $crate::storage::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
                     cancel_requested = 1, updated_at_ms = $2 WHERE id = $1 AND status IN ('scheduled', 'failed', 'running')",
                )
                .bind(id)
                .bind($crate::storage::now_ms())
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, $crate::storage::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = 'scheduled', run_at_ms = $2, attempts = 0, cancel_requested = 0, updated_at_ms = $2 \
                     WHERE id = $1 AND status IN ('dead', 'failed')",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn purge_jobs(
                &self,
                status: $crate::storage::jobs::JobStatus,
                changed_before_ms: Option<i64>,
            ) -> Result<u64, $crate::storage::StoreError> {
                Ok(::sqlx::query("DELETE FROM jobs WHERE status = $1 AND updated_at_ms < $2")
                    .bind(status.as_str())
                    .bind(changed_before_ms.unwrap_or(i64::MAX))
                    .execute(&self.$writer)
                    .await?
                    .rows_affected())
            }

            async fn set_job_progress(&self, id: &str, lease: &str, percent: u8, note: &str) -> Result<(), $crate::storage::StoreError> {
                ::sqlx::query("UPDATE jobs SET progress = $3, progress_note = $4, updated_at_ms = $5 WHERE id = $1 AND lease = $2")
                    .bind(id)
                    .bind(lease)
                    .bind(i64::from(percent.min(100)))
                    .bind(note)
                    .bind($crate::storage::now_ms())
                    .execute(&self.$writer)
                    .await?;
                Ok(())
            }

            async fn next_job_due(&self) -> Result<Option<i64>, $crate::storage::StoreError> {
                // One equality per status, so each MIN reads one index entry
                // (an IN list made SQLite scan every waiting job).
                Ok(::sqlx::query_scalar(
                    "SELECT MIN(t) FROM (SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'scheduled' \
                     UNION ALL SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'failed' \
                     UNION ALL SELECT MIN(lease_until_ms) AS t FROM jobs WHERE status = 'running') AS d",
                )
                .fetch_one(&self.$reader)
                .await?)
            }

            $($announce)*
        }
    };
}

pub(crate) use sql_job_store;

/// Cuts `rows` into chunks of at most `max` rows, each a power of two, so
/// a multi-row statement has only a few shapes: each is prepared once and
/// then reused from sqlx's statement cache (preparing a new shape for every
/// batch size cost about a fifth of the journal's throughput).
pub(crate) fn pow2_chunks<T>(mut rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = if rows.len() >= max { max } else { 1 << (usize::BITS - 1 - rows.len().leading_zeros()) };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// Implements `InboxStore` for a SQL store of database `$db`, plus
/// `commit_inbox`, which writes a batch's inbox entries inside the batch's
/// transaction (with the backend's `insert_inbox`): an entry that exists
/// already (the message was handled) fails the batch with a conflict
/// instead of running twice.
macro_rules! sql_inbox_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident) => {
        impl $store {
            async fn commit_inbox(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::storage::TurnCommit],
            ) -> Result<(), $crate::storage::StoreError> {
                let entries: Vec<(&str, &$crate::storage::InboxEntry)> =
                    batch.iter().filter_map(|c| c.inbox.as_ref().map(|e| (c.actor.as_str(), e))).collect();
                if Self::insert_inbox(&mut **tx, &entries).await? != entries.len() as u64 {
                    return Err($crate::storage::StoreError::Conflict(match entries[..] {
                        [(actor, e)] => format!("{actor} has already handled message {:?} of {}", e.message_id, e.sender_name()),
                        _ => "a message in this batch was already handled by its receiver".into(),
                    }));
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::InboxStore for $store {
            async fn inbox_reply(
                &self,
                actor: &$crate::id::ActorId,
                sender: &str,
                message_id: &str,
            ) -> Result<Option<Vec<u8>>, $crate::storage::StoreError> {
                Ok(::sqlx::query_scalar("SELECT reply FROM inbox WHERE actor = $1 AND sender = $2 AND message_id = $3")
                    .bind(actor.as_str())
                    .bind(sender)
                    .bind(message_id)
                    .fetch_optional(&self.$reader)
                    .await?)
            }

            async fn expire_inbox(&self, before_ms: i64) -> Result<u64, $crate::storage::StoreError> {
                // An entry whose message is still in the outbox (handled, not
                // yet deleted, e.g. its host died) stays: it may be redelivered.
                Ok(::sqlx::query("DELETE FROM inbox WHERE at_ms < $1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sender = inbox.sender AND o.id = inbox.message_id)")
                    .bind(before_ms)
                    .execute(&self.$writer)
                    .await?
                    .rows_affected())
            }
        }
    };
}

pub(crate) use sql_inbox_store;

/// The columns of an outbox row (`o`, with its lane `l`), as
/// [`outbox_from_row`] reads them.
pub(crate) const OUTBOX_COLUMNS: &str = "o.id, o.sender, o.kind, o.target, o.method, o.payload, o.event_type, o.created_at_ms, \
     o.status, o.attempts, o.next_at_ms, l.lease_until_ms, o.last_error";

/// Reads an outbox row selected with [`OUTBOX_COLUMNS`].
pub(crate) fn outbox_from_row<R>(row: &R) -> Result<super::outbox::OutboxRecord, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    use super::outbox::Destination;
    let kind: String = row.try_get("kind")?;
    let target: String = row.try_get("target")?;
    let destination = match kind.as_str() {
        "actor" => Destination::Actor { actor: target, method: row.try_get::<Option<String>, _>("method")?.unwrap_or_default() },
        "sink" => Destination::Sink { name: target },
        other => return Err(StoreError::Corrupt(format!("outbox row: unknown kind {other:?}"))),
    };
    Ok(super::outbox::OutboxRecord {
        message: super::outbox::OutboxMessage {
            id: row.try_get("id")?,
            sender: row.try_get("sender")?,
            destination,
            payload: row.try_get("payload")?,
            event_type: row.try_get("event_type")?,
            created_at_ms: row.try_get("created_at_ms")?,
        },
        status: row.try_get("status")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        next_at_ms: row.try_get("next_at_ms")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        last_error: row.try_get("last_error")?,
    })
}

/// `(a, b)` pairs as SQL row values (`(id, lease)`, `(sender, id)`), placeholders from `first`.
pub(crate) fn lane_pairs(first: usize, count: usize) -> String {
    (0..count).map(|i| format!("(${}, ${})", first + 2 * i, first + 2 * i + 1)).collect::<Vec<_>>().join(", ")
}

/// Implements `OutboxStore` for a SQL store of database `$db`, plus
/// `commit_outbox`, which inserts a batch's messages and opens their lanes
/// inside the batch's transaction (a message id sent before is not sent
/// again). `$lock` ends the lane claim's inner select; `lock_lanes` (empty
/// for a single-writer store) locks the lanes a claim releases, in the
/// order a commit upserts them, so the two never deadlock; `claim_begin`
/// starts each claim's transaction; `relaxed_claims` are the statements
/// run on the writer before and after a claim, so that a claim does not
/// wait for the fsync (SQLite: `synchronous = NORMAL`, then `FULL` again;
/// PostgreSQL does it in `claim_begin`). A claim lost to an OS crash only
/// redelivers messages the inbox recognises, or leaves a lease to expire.
/// `announce` adds `message_announcements`.
macro_rules! sql_outbox_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, lock: $lock:expr, lock_lanes: $lock_lanes:literal,
     claim_begin: $claim_begin:literal, relaxed_claims: ($relax:literal, $restore:literal), announce: { $($announce:tt)* }) => {
        impl $store {
            /// Inserts a batch's messages and opens their lanes. With
            /// `lease` (token, expiry), a lane this commit creates is
            /// leased to this host at once and returned with the messages
            /// inserted into it, to be delivered without a claim; so are
            /// the messages added to lanes that existed, with each lane's
            /// lease then (empty if none).
            async fn commit_outbox(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::storage::TurnCommit],
                lease: Option<&(String, i64)>,
            ) -> Result<(Vec<$crate::storage::outbox::LaneClaim>, Vec<$crate::storage::outbox::LaneClaim>), $crate::storage::StoreError> {
                use ::sqlx::Row;
                let messages: Vec<&$crate::storage::outbox::OutboxMessage> = batch.iter().flat_map(|c| c.messages.iter()).collect();
                let mut inserted = Self::insert_messages(&mut **tx, &messages, lease.is_some()).await?;
                // Each lane once per statement (PostgreSQL refuses to upsert a
                // row twice in one), sorted: claims lock the lanes they
                // release in this order too. The no-op update, rather than
                // DO NOTHING, waits for a concurrent release deleting the
                // lane, then inserts it again: a message never lands in no lane.
                let mut lanes: Vec<$crate::storage::sql::LaneKey> = messages
                    .iter()
                    .map(|m| {
                        let (kind, target) = m.destination.kind_and_target();
                        (m.sender.as_str(), kind, target, m.created_at_ms)
                    })
                    .collect();
                lanes.sort_unstable();
                lanes.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
                // Each of `lanes`: its id, and the lease it had if it existed
                // (None when this commit created it).
                let mut opened: Vec<Option<(i64, Option<String>)>> = vec![None; lanes.len()];
                let lane_index = |sender: &str, kind: &str, target: &str| {
                    lanes.binary_search_by(|l| (l.0, l.1, l.2).cmp(&(sender, kind, target))).ok()
                };
                let Some((token, until)) = lease else {
                    Self::upsert_lanes(&mut **tx, &lanes, None).await?;
                    return Ok((Vec::new(), Vec::new()));
                };
                // An existing lane keeps its lease (or none): only lanes
                // this statement created carry this commit's token.
                for row in Self::upsert_lanes(&mut **tx, &lanes, lease).await? {
                    let held: Option<&str> = row.try_get(4)?;
                    let created = held == Some(token.as_str());
                    if let Some(i) = lane_index(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?) {
                        let lease_before = (!created).then(|| held.unwrap_or_default().to_string());
                        opened[i] = Some((row.try_get::<i64, _>(0)?, lease_before));
                    }
                }
                // Per lane: whether this commit created it, and its claim.
                let mut claims: std::collections::BTreeMap<i64, (bool, $crate::storage::outbox::LaneClaim)> = std::collections::BTreeMap::new();
                for m in messages {
                    let (kind, target) = m.destination.kind_and_target();
                    let Some((lane, lease_before)) = lane_index(&m.sender, kind, target).and_then(|i| opened[i].as_ref()) else { continue };
                    let (_, claim) = claims.entry(*lane).or_insert_with(|| {
                        let claim = $crate::storage::outbox::LaneClaim {
                            lane: lane.to_string(),
                            lease: lease_before.clone().unwrap_or_else(|| token.clone()),
                            taken_over: false,
                            messages: Vec::new(),
                        };
                        (lease_before.is_none(), claim)
                    });
                    if inserted.remove(&m.key()) {
                        claim.messages.push($crate::storage::outbox::OutboxRecord {
                            message: (*m).clone(),
                            status: "pending".into(),
                            attempts: 0,
                            next_at_ms: m.created_at_ms,
                            lease_until_ms: Some(*until),
                            last_error: None,
                        });
                    }
                }
                let (created, added): (Vec<_>, Vec<_>) = claims.into_values().partition(|(created, _)| *created);
                let added = added.into_iter().map(|(_, c)| c).filter(|c| !c.messages.is_empty()).collect();
                Ok((created.into_iter().map(|(_, c)| c).collect(), added))
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::outbox::OutboxStore for $store {
            fn deliver_new_lanes_here(&self) -> bool {
                self.new_lanes.enable();
                true
            }

            fn take_new_lanes(&self) -> (Vec<$crate::storage::outbox::LaneClaim>, Vec<$crate::storage::outbox::LaneClaim>) {
                self.new_lanes.take()
            }

            async fn claim_lanes(
                &self,
                now_ms: i64,
                max_lanes: usize,
                per_lane: usize,
                lease_ms: i64,
                delivered: &[String],
                released: &[$crate::storage::outbox::LaneRelease],
            ) -> Result<Vec<$crate::storage::outbox::LaneClaim>, $crate::storage::StoreError> {
                use ::sqlx::Row;
                let lease = $crate::storage::jobs::new_lease();
                // A claim only moves delivery bookkeeping: it need not wait
                // for the disk (see `relaxed_claims`).
                let mut conn = self.$writer.acquire().await?;
                if !$relax.is_empty() {
                    ::sqlx::query($relax).execute(&mut *conn).await?;
                }
                let outcome: Result<_, $crate::storage::StoreError> = async {
                    let mut tx = ::sqlx::Connection::begin_with(&mut *conn, $claim_begin).await?;
                    for chunk in $crate::storage::sql::pow2_chunks(delivered, 256) {
                        let sql = format!(
                            "DELETE FROM outbox WHERE (sender, id) IN (VALUES {})",
                            $crate::storage::sql::lane_pairs(1, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql);
                        for key in chunk {
                            let (sender, id) = $crate::storage::outbox::split_message_key(key);
                            q = q.bind(sender).bind(id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    // A commit that sends messages upserts their lanes sorted by
                    // (sender, kind, target): lock the lanes released here in
                    // that order first, in one statement, so neither waits for
                    // the other in a cycle. (Both touch outbox rows before lanes.)
                    let ids: Vec<i64> = released.iter().filter_map(|r| r.lane.parse().ok()).collect();
                    if !$lock_lanes.is_empty() && !ids.is_empty() {
                        let sql = $lock_lanes.replace("{}", &$crate::storage::sql::placeholders(1, ids.len()));
                        let mut q = ::sqlx::query(&sql);
                        for id in &ids {
                            q = q.bind(*id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    // Released lanes: due now in one statement per chunk, those
                    // waiting for a retry one by one; then the empty ones go.
                    let (now_due, later): (Vec<_>, Vec<_>) = released.iter().partition(|r| r.next_at_ms.is_none());
                    for chunk in $crate::storage::sql::pow2_chunks(&now_due, 128) {
                        let sql = format!(
                            "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = $1 WHERE (id, lease) IN (VALUES {})",
                            $crate::storage::sql::lane_pairs(2, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql).bind(now_ms);
                        for r in chunk {
                            q = q.bind(r.lane.parse::<i64>().unwrap_or(-1)).bind(&r.lease);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    for r in later {
                        ::sqlx::query(
                            "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = $1 WHERE id = $2 AND lease = $3",
                        )
                        .bind(r.next_at_ms)
                        .bind(r.lane.parse::<i64>().unwrap_or(-1))
                        .bind(&r.lease)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for chunk in $crate::storage::sql::pow2_chunks(&ids, 256) {
                        let sql = format!(
                            "DELETE FROM outbox_lanes WHERE id IN ({}) AND lease IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o \
                             WHERE o.status = 'pending' AND o.sender = outbox_lanes.sender AND o.kind = outbox_lanes.kind \
                             AND o.target = outbox_lanes.target)",
                            $crate::storage::sql::placeholders(1, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql);
                        for id in chunk {
                            q = q.bind(*id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    let mut claims = Vec::new();
                    if max_lanes > 0 {
                        let sql = format!(
                            "UPDATE outbox_lanes SET taken_over = CASE WHEN lease IS NULL THEN 0 ELSE 1 END, lease = $1, lease_until_ms = $2 \
                             WHERE id IN (SELECT id FROM outbox_lanes WHERE next_at_ms <= $3 \
                             AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY next_at_ms LIMIT $4{}) RETURNING id, taken_over",
                            $lock
                        );
                        let lanes = ::sqlx::query(&sql)
                            .bind(&lease)
                            .bind(now_ms + lease_ms)
                            .bind(now_ms)
                            .bind(max_lanes as i64)
                            .fetch_all(&mut *tx)
                            .await?;
                        if !lanes.is_empty() {
                            let mut by_lane = std::collections::BTreeMap::new();
                            for row in &lanes {
                                let lane: i64 = row.try_get("id")?;
                                let taken_over = row.try_get::<i64, _>("taken_over")? != 0;
                                by_lane.insert(
                                    lane,
                                    $crate::storage::outbox::LaneClaim { lane: lane.to_string(), lease: lease.clone(), taken_over, messages: Vec::new() },
                                );
                            }
                            let sql = format!(
                                "SELECT lane, id, sender, kind, target, method, payload, event_type, created_at_ms, status, attempts, next_at_ms, \
                                 lease_until_ms, last_error FROM (SELECT l.id AS lane, {}, o.seq, \
                                 ROW_NUMBER() OVER (PARTITION BY l.id ORDER BY o.seq) AS rn \
                                 FROM outbox_lanes l JOIN outbox o ON o.sender = l.sender AND o.kind = l.kind AND o.target = l.target \
                                 AND o.status = 'pending' WHERE l.lease = $1) AS x WHERE rn <= $2 ORDER BY lane, seq",
                                $crate::storage::sql::OUTBOX_COLUMNS
                            );
                            let rows = ::sqlx::query(&sql).bind(&lease).bind(per_lane as i64).fetch_all(&mut *tx).await?;
                            for row in &rows {
                                let lane: i64 = row.try_get("lane")?;
                                if let Some(claim) = by_lane.get_mut(&lane) {
                                    claim.messages.push($crate::storage::sql::outbox_from_row(row)?);
                                }
                            }
                            claims = by_lane.into_values().collect();
                        }
                    }
                    tx.commit().await?;
                    Ok(claims)
                }
                .await;
                if !$restore.is_empty()
                    && let Err(e) = ::sqlx::query($restore).execute(&mut *conn).await
                {
                    // Never hand back a writer that skips the fsync.
                    conn.close_on_drop();
                    return Err(e.into());
                }
                outcome
            }

            async fn fail_message(&self, key: &str, error: &str, retry_at_ms: Option<i64>) -> Result<(), $crate::storage::StoreError> {
                let (sender, id) = $crate::storage::outbox::split_message_key(key);
                ::sqlx::query(
                    "UPDATE outbox SET status = $2, next_at_ms = COALESCE($3, next_at_ms), last_error = $4, attempts = attempts + 1 \
                     WHERE id = $1 AND sender = $5 AND status = 'pending'",
                )
                .bind(id)
                .bind(if retry_at_ms.is_some() { "pending" } else { "dead" })
                .bind(retry_at_ms)
                .bind(error.chars().take(4000).collect::<String>())
                .bind(sender)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<$crate::storage::outbox::OutboxRecord>, $crate::storage::StoreError> {
                let sql = format!(
                    "SELECT {} FROM outbox o LEFT JOIN outbox_lanes l ON l.sender = o.sender AND l.kind = o.kind AND l.target = o.target \
                     WHERE ($1 IS NULL OR o.status = $1) ORDER BY o.seq LIMIT $2",
                    $crate::storage::sql::OUTBOX_COLUMNS
                );
                let rows = ::sqlx::query(&sql).bind(status).bind(limit.min(i64::MAX as usize) as i64).fetch_all(&self.$reader).await?;
                rows.iter().map($crate::storage::sql::outbox_from_row).collect()
            }

            async fn retry_message(&self, id: &str, sender: Option<&str>, now_ms: i64) -> Result<u64, $crate::storage::StoreError> {
                let mut tx = self.$writer.begin().await?;
                let mut lanes: Vec<(String, String, String)> = ::sqlx::query_as(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_at_ms = $2 \
                     WHERE id = $1 AND ($3 IS NULL OR sender = $3) AND status = 'dead' RETURNING sender, kind, target",
                )
                .bind(id)
                .bind(now_ms)
                .bind(sender)
                .fetch_all(&mut *tx)
                .await?;
                let retried = lanes.len() as u64;
                lanes.sort_unstable();
                lanes.dedup();
                for (sender, kind, target) in lanes {
                    ::sqlx::query(
                        "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms",
                    )
                    .bind(sender)
                    .bind(kind)
                    .bind(target)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(retried)
            }

            async fn purge_dead_messages(&self) -> Result<u64, $crate::storage::StoreError> {
                Ok(::sqlx::query("DELETE FROM outbox WHERE status = 'dead'").execute(&self.$writer).await?.rows_affected())
            }

            async fn next_message_due(&self) -> Result<Option<i64>, $crate::storage::StoreError> {
                Ok(::sqlx::query_scalar(
                    "SELECT MIN(CASE WHEN lease_until_ms IS NOT NULL AND lease_until_ms > next_at_ms THEN lease_until_ms ELSE next_at_ms END) \
                     FROM outbox_lanes",
                )
                .fetch_one(&self.$reader)
                .await?)
            }

            $($announce)*
        }
    };
}

pub(crate) use sql_outbox_store;
