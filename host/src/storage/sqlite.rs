//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite has one writer anyway; the group committer
//! batches turns into its transactions) and a small read pool.
//! `synchronous = FULL`: a commit is on disk before the turn's reply goes
//! out, so an acknowledged write survives a crash of the host or the OS.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{StateStore, Store, StoreError, TurnCommit, flatten_batch};
use crate::id::ActorId;

/// How long a write waits for a lock held by another process before the
/// turn fails with `unavailable`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per multi-row statement: 3 parameters each stays far below
/// SQLite's 32,766 bound-parameter limit while amortising statement cost.
const ROWS_PER_STATEMENT: usize = 500;

/// Read connections; SQLite readers in WAL mode do not block the writer.
const READ_CONNECTIONS: u32 = 4;

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(busy_timeout + Duration::from_secs(1))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        sqlx::migrate!("src/storage/migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

impl Store for SqliteStore {
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
        let mut tx = self.writer.begin().await?;
        for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO actor_state (actor, key, value) ");
            q.push_values(chunk, |mut row, (actor, key, value)| {
                row.push_bind(*actor).push_bind(*key).push_bind(*value);
            });
            q.push(" ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM actor_state WHERE (actor, key) IN (VALUES ");
            let mut list = q.separated(", ");
            for (actor, key) in chunk {
                list.push("(").push_bind_unseparated(*actor).push_unseparated(", ").push_bind_unseparated(*key).push_unseparated(")");
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

super::sql::sql_component_store!(SqliteStore, writer: writer, reader: reader);
