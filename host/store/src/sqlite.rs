//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite has one writer anyway; the group committer
//! batches turns into its transactions) and a small read pool.
//! `synchronous = FULL`: a commit is on disk before the turn's reply goes
//! out, so an acknowledged write survives a crash of the host or the OS.
//! Outbox claims alone commit with `synchronous = NORMAL` (see
//! `RELAXED_CLAIMS` of the SQLite dialect below): losing one only redelivers.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::outbox::{NewLanes, OutboxMessage};
use super::sql::{Arg, Dialect, EventRow, HeadMove, Lane, NewHead, SqlStore, StateDelete, StateUpsert, bind_args, pow2_chunks};
use super::{InboxEntry, Store, StoreError};

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
    new_lanes: NewLanes,
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
        super::sql::migrations::migrator(super::sql::migrations::SQLITE).await?.run(&writer).await?;
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

/// How the shared SQL code runs on SQLite: one writer, so no row locks;
/// batched writes as multi-row `VALUES` in power-of-two chunks (each chunk
/// size is prepared once).
#[async_trait]
impl Dialect for Sqlite {
    const CLAIM_INDEX_HINTS: bool = true;
    const SKIP_LOCKED: &'static str = "";
    const CLAIM_BEGIN: &'static str = "BEGIN";
    const RELAXED_CLAIMS: (&'static str, &'static str) = ("PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL");
    const LOCK_LANES: &'static str = "";

    fn param(_: usize) -> String {
        "?".into()
    }

    async fn execute(conn: &mut SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).execute(conn).await?.rows_affected())
    }

    async fn fetch_all(conn: &mut SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_all(conn).await?)
    }

    async fn fetch_optional(conn: &mut SqliteConnection, sql: &str, args: &[Arg<'_>]) -> Result<Option<SqliteRow>, StoreError> {
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

    async fn insert_heads(conn: &mut SqliteConnection, heads: &[NewHead<'_>]) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO journal_heads (actor, version) ");
        q.push_values(heads, |mut row, h| {
            row.push_bind(h.actor).push_bind(h.version);
        });
        q.push(" ON CONFLICT (actor) DO NOTHING");
        Ok(q.build().execute(conn).await?.rows_affected())
    }

    async fn move_heads(conn: &mut SqliteConnection, moves: &[HeadMove<'_>]) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE journal_heads SET version = v.column3 FROM (VALUES ");
        let mut list = q.separated(", ");
        for m in moves {
            list.push("(")
                .push_bind_unseparated(m.actor)
                .push_unseparated(", ")
                .push_bind_unseparated(m.expected)
                .push_unseparated(", ")
                .push_bind_unseparated(m.new)
                .push_unseparated(")");
        }
        q.push(") AS v WHERE journal_heads.actor = v.column1 AND journal_heads.version = v.column2");
        Ok(q.build().execute(conn).await?.rows_affected())
    }

    async fn insert_events(conn: &mut SqliteConnection, events: &[EventRow<'_>]) -> Result<(), StoreError> {
        for chunk in pow2_chunks(events, EVENTS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO journal (actor, actor_type, version, event_type, schema_version, data, recorded_at_ms, \
                 correlation_id, causation_id, caller, method) ",
            );
            q.push_values(chunk, |mut row, r| {
                let e = r.event;
                row.push_bind(r.actor)
                    .push_bind(r.actor_type)
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
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn upsert_state(conn: &mut SqliteConnection, rows: &[StateUpsert<'_>]) -> Result<(), StoreError> {
        for chunk in pow2_chunks(rows, ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO actor_state (actor, key, value) ");
            q.push_values(chunk, |mut row, u| {
                row.push_bind(u.actor).push_bind(u.key).push_bind(u.value);
            });
            q.push(" ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn delete_state(conn: &mut SqliteConnection, rows: &[StateDelete<'_>]) -> Result<(), StoreError> {
        for chunk in pow2_chunks(rows, ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM actor_state WHERE (actor, key) IN (VALUES ");
            let mut list = q.separated(", ");
            for d in chunk {
                list.push("(").push_bind_unseparated(d.actor).push_unseparated(", ").push_bind_unseparated(d.key).push_unseparated(")");
            }
            q.push(")");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn insert_inbox(conn: &mut SqliteConnection, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError> {
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

    async fn insert_messages(conn: &mut SqliteConnection, messages: &[&OutboxMessage], returning: bool) -> Result<HashSet<String>, StoreError> {
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

    async fn upsert_lanes(conn: &mut SqliteConnection, lanes: &[Lane<'_>], lease: Option<&(String, i64)>) -> Result<Vec<SqliteRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in pow2_chunks(lanes, 512) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO outbox_lanes (sender, kind, target, next_at_ms, lease, lease_until_ms) ");
            q.push_values(chunk, |mut row, l| {
                row.push_bind(l.sender)
                    .push_bind(l.kind)
                    .push_bind(l.target)
                    .push_bind(l.due_at_ms)
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

impl SqlStore for SqliteStore {
    type Db = Sqlite;

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn new_lanes(&self) -> &NewLanes {
        &self.new_lanes
    }
}
