//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite has one writer anyway; the group committer
//! batches turns into its transactions) and a small read pool.
//! `synchronous = FULL`: a commit is on disk before the turn's reply goes
//! out, so an acknowledged write survives a crash of the host or the OS.
//! Outbox claims alone commit with `synchronous = NORMAL` (see
//! `relaxed_claims` in `sql.rs`): losing one only redelivers.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::outbox::OutboxMessage;
use super::sql::{Arg, Dialect, LaneKey, SqlStore, bind_args, journal_batch, journal_conflict, pow2_chunks};
use super::{InboxEntry, StateStore, Store, StoreError, TurnCommit, flatten_batch};
use quark_core::id::ActorId;

/// How long a write waits for a lock held by another process before the
/// turn fails with `unavailable`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most state rows per multi-row statement (3 parameters each).
const ROWS_PER_STATEMENT: usize = 512;

/// Most event rows per insert (11 parameters each).
const EVENTS_PER_STATEMENT: usize = 256;


/// Read connections; SQLite readers in WAL mode do not block the writer.
const READ_CONNECTIONS: u32 = 4;

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    new_lanes: super::outbox::NewLanes,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_busy_timeout(path, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Like [`SqliteStore::open`], with a chosen lock wait.
    pub async fn open_with_busy_timeout(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating data directory {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .statement_cache_capacity(super::sql::STATEMENT_CACHE)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(busy_timeout + Duration::from_secs(1))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        sqlx::migrate!("src/migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader, new_lanes: Default::default() })
    }
}

impl Store for SqliteStore {
    fn job_store(&self) -> Option<&dyn super::jobs::JobStore> {
        Some(self)
    }

    fn outbox_store(&self) -> Option<&dyn super::outbox::OutboxStore> {
        Some(self)
    }

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn load_state(&self, actor: &ActorId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM actor_state WHERE actor = ? ORDER BY key")
            .bind(actor.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn commit(&self, batch: &[TurnCommit]) -> Result<(), StoreError> {
        let (upserts, deletes) = flatten_batch(batch);
        let journal = journal_batch(batch)?;
        let mut tx = self.writer.begin().await?;
        // Stream heads first: a conflict fails the batch before any write.
        if !journal.created.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO journal_heads (actor, version) ");
            q.push_values(&journal.created, |mut row, (actor, version)| {
                row.push_bind(*actor).push_bind(*version);
            });
            q.push(" ON CONFLICT (actor) DO NOTHING");
            if q.build().execute(&mut *tx).await?.rows_affected() != journal.created.len() as u64 {
                return Err(journal_conflict(batch));
            }
        }
        if !journal.moved.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE journal_heads SET version = v.column3 FROM (VALUES ");
            let mut list = q.separated(", ");
            for (actor, expected, new) in &journal.moved {
                list.push("(")
                    .push_bind_unseparated(*actor)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*expected)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*new)
                    .push_unseparated(")");
            }
            q.push(") AS v WHERE journal_heads.actor = v.column1 AND journal_heads.version = v.column2");
            if q.build().execute(&mut *tx).await?.rows_affected() != journal.moved.len() as u64 {
                return Err(journal_conflict(batch));
            }
        }
        for chunk in pow2_chunks(&journal.events, EVENTS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO journal (actor, actor_type, version, event_type, schema_version, data, recorded_at_ms, \
                 correlation_id, causation_id, caller, method) ",
            );
            q.push_values(chunk, |mut row, (actor, actor_type, e)| {
                row.push_bind(*actor)
                    .push_bind(*actor_type)
                    .push_bind(e.version as i64)
                    .push_bind(e.event_type.as_str())
                    .push_bind(i64::from(e.schema_version))
                    .push_bind(e.data.as_slice())
                    .push_bind(e.recorded_at_ms)
                    .push_bind(e.correlation_id.as_str())
                    .push_bind(e.causation_id.as_str())
                    .push_bind(e.caller.as_deref())
                    .push_bind(e.method.as_str());
            });
            q.build().execute(&mut *tx).await?;
        }
        super::sql::commit_checkpoints::<sqlx::Sqlite>(&mut tx, batch).await?;
        for chunk in pow2_chunks(&upserts, ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO actor_state (actor, key, value) ");
            q.push_values(chunk, |mut row, (actor, key, value)| {
                row.push_bind(*actor).push_bind(*key).push_bind(*value);
            });
            q.push(" ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in pow2_chunks(&deletes, ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM actor_state WHERE (actor, key) IN (VALUES ");
            let mut list = q.separated(", ");
            for (actor, key) in chunk {
                list.push("(").push_bind_unseparated(*actor).push_unseparated(", ").push_bind_unseparated(*key).push_unseparated(")");
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        if batch.iter().any(|c| c.inbox.is_some()) {
            super::sql::commit_inbox::<sqlx::Sqlite>(&mut tx, batch).await?;
        }
        let mut opened = (Vec::new(), Vec::new());
        if batch.iter().any(|c| !c.messages.is_empty()) {
            let lease = self.new_lanes.lease_for_commit(super::now_ms(), super::outbox::LANE_LEASE_MS);
            opened = Self::commit_outbox(&mut tx, batch, lease.as_ref()).await?;
        }
        if batch.iter().any(TurnCommit::has_job_effects) {
            Self::commit_jobs(&mut tx, batch).await?;
        }
        tx.commit().await?;
        self.new_lanes.push(opened.0, opened.1);
        Ok(())
    }
}

/// The batched statements of the outbox and inbox (multi-row `VALUES` in
/// power-of-two chunks, so each chunk size is prepared once).
impl SqliteStore {
    /// Inserts messages, skipping (sender, id) pairs already there; with
    /// `returning`, the keys ([`OutboxMessage::key`]) it inserted.
    async fn insert_messages(
        conn: &mut sqlx::SqliteConnection,
        messages: &[&OutboxMessage],
        returning: bool,
    ) -> Result<HashSet<String>, StoreError> {
        let mut inserted = HashSet::new();
        for chunk in pow2_chunks(messages, 512) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO outbox (id, sender, kind, target, method, payload, event_type, status, attempts, next_at_ms, created_at_ms) ",
            );
            q.push_values(chunk, |mut row, m| {
                let (kind, target) = m.destination.kind_and_target();
                row.push_bind(m.id.as_str())
                    .push_bind(m.sender.as_str())
                    .push_bind(kind)
                    .push_bind(target)
                    .push_bind(m.destination.method())
                    .push_bind(m.payload.as_slice())
                    .push_bind(m.event_type.as_deref())
                    .push_bind("pending")
                    .push_bind(0_i64)
                    .push_bind(m.created_at_ms)
                    .push_bind(m.created_at_ms);
            });
            q.push(" ON CONFLICT (sender, id) DO NOTHING");
            if returning {
                q.push(" RETURNING sender || char(10) || id");
                for row in q.build().fetch_all(&mut *conn).await? {
                    inserted.insert(row.try_get::<String, _>(0)?);
                }
            } else {
                q.build().execute(&mut *conn).await?;
            }
        }
        Ok(inserted)
    }

    /// Upserts `lanes` (sorted, each once), new ones under `lease`; with a
    /// lease, each lane's `id, sender, kind, target, lease` after it.
    async fn upsert_lanes(
        conn: &mut sqlx::SqliteConnection,
        lanes: &[LaneKey<'_>],
        lease: Option<&(String, i64)>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in pow2_chunks(lanes, 512) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO outbox_lanes (sender, kind, target, next_at_ms, lease, lease_until_ms) ");
            q.push_values(chunk, |mut row, (sender, kind, target, at)| {
                row.push_bind(*sender)
                    .push_bind(*kind)
                    .push_bind(*target)
                    .push_bind(*at)
                    .push_bind(lease.map(|l| l.0.as_str()))
                    .push_bind(lease.map(|l| l.1));
            });
            q.push(" ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms");
            if lease.is_some() {
                q.push(" RETURNING id, sender, kind, target, lease");
                rows.extend(q.build().fetch_all(&mut *conn).await?);
            } else {
                q.build().execute(&mut *conn).await?;
            }
        }
        Ok(rows)
    }
}

super::sql::sql_outbox_store!(SqliteStore, ::sqlx::Sqlite, writer: writer, reader: reader, lock: "", lock_lanes: "", claim_begin: "BEGIN",
    relaxed_claims: ("PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"), announce: {});
super::sql::sql_job_store!(SqliteStore, ::sqlx::Sqlite, writer: writer, reader: reader, index_hint: true, lock: "");

/// How the shared SQL code runs on Sqlite.
#[async_trait]
impl Dialect for sqlx::Sqlite {
    async fn execute(conn: &mut sqlx::SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).execute(conn).await?.rows_affected())
    }

    async fn fetch_all(conn: &mut sqlx::SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_all(conn).await?)
    }

    async fn fetch_optional(conn: &mut sqlx::SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<Option<SqliteRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_optional(conn).await?)
    }

    fn text(row: &SqliteRow, column: &str) -> Result<String, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn opt_text(row: &SqliteRow, column: &str) -> Result<Option<String>, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn int(row: &SqliteRow, column: &str) -> Result<i64, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn opt_int(row: &SqliteRow, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn bytes(row: &SqliteRow, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(row.try_get(column)?)
    }

    /// Inserts inbox entries, skipping ones there already; the number inserted.
    async fn insert_inbox(conn: &mut sqlx::SqliteConnection, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for chunk in pow2_chunks(entries, 256) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO inbox (actor, sender, message_id, reply, at_ms) ");
            q.push_values(chunk, |mut row, (actor, e)| {
                row.push_bind(*actor).push_bind(e.sender.as_str()).push_bind(e.message_id.as_str()).push_bind(e.reply.as_slice()).push_bind(e.at_ms);
            });
            q.push(" ON CONFLICT (actor, sender, message_id) DO NOTHING");
            inserted += q.build().execute(&mut *conn).await?.rows_affected();
        }
        Ok(inserted)
    }
}

impl SqlStore for SqliteStore {
    type Db = sqlx::Sqlite;

    fn writer(&self) -> &sqlx::Pool<sqlx::Sqlite> {
        &self.writer
    }

    fn reader(&self) -> &sqlx::Pool<sqlx::Sqlite> {
        &self.reader
    }
}
