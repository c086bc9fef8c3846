//! Durable storage: the `Store` trait family and one file per backend.
//!
//! Everything a turn writes reaches the store through [`Store::commit`], one
//! transaction for a whole batch of turns (the runtime's group committer
//! batches them). Reads that activate an actor or list components go
//! straight to the backend.
//!
//! The records a store keeps are `quark_core`'s; they are re-exported here
//! under the names the backends use.

#![warn(missing_docs)]

use async_trait::async_trait;

use quark_core::id::ActorId;
pub use quark_core::commit::{InboxEntry, StateWrite, TurnCommit};
pub use quark_core::journal::{CheckpointAdvance, EventRecord, JournalAppend, PositionedEvent, ProjectionDef, ProjectionStatus, Snapshot};
pub use quark_core::manifest::{ComponentVersion, Manifest, Retention};
pub use quark_core::now_ms;

pub mod cluster;
pub mod conformance;
pub mod jobs;
pub mod outbox;
pub mod postgres;
pub mod redis;
pub mod sqlite;
mod sql;

/// A failure of the storage backend. Turns that need the store fail with
/// `unavailable`; nothing is partially committed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the data itself (a constraint, an invalid
    /// value): retrying the same write will fail again.
    #[error("store rejected the write: {0}")]
    Rejected(String),
    /// Stored data is not what this version of Quark expects.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// An optimistic-concurrency check failed: another writer moved a
    /// journal or a projection checkpoint first. Nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A turn's fence did not hold: another host owns the actor now
    /// ([`cluster`]). Nothing was written; this host must drop the actor.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The write was sent but its acknowledgement was lost (the connection
    /// broke at COMMIT, or the Redis script outlived the response
    /// timeout): it may or may not have been committed.
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
}

impl StoreError {
    /// An error from the last step of a commit (PostgreSQL's COMMIT, the
    /// Redis script): an error the server answered is definite; a broken
    /// connection or a timeout leaves the outcome unknown.
    pub fn at_commit(self, connection_lost: bool) -> Self {
        match self {
            StoreError::Unavailable(message) if connection_lost => StoreError::UnknownOutcome(message),
            other => other,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Data the backend will never accept: constraint violations,
            // PostgreSQL data exceptions (SQLSTATE 22xxx/23xxx), SQLite's
            // TOOBIG (18) and MISMATCH (20). Busy, locked, I/O and
            // connection errors stay `Unavailable`: a retry may succeed.
            sqlx::Error::Database(db)
                if db.kind() != sqlx::error::ErrorKind::Other
                    || db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c == "18" || c == "20") =>
            {
                StoreError::Rejected(db.to_string())
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migrating the schema: {e}"))
    }
}

impl From<crate::StoreError> for quark_core::ActorError {
    fn from(e: crate::StoreError) -> Self {
        match e {
            crate::StoreError::Rejected(_) => quark_core::ActorError::rejected(e.to_string()),
            crate::StoreError::Conflict(_) => quark_core::ActorError::conflict(e.to_string()),
            crate::StoreError::UnknownOutcome(_) => quark_core::ActorError::unknown_outcome(e.to_string()),
            _ => quark_core::ActorError::unavailable(e.to_string()),
        }
    }
}

/// The storage backend: all the traits below, behind one object.
pub trait Store: StateStore + ComponentStore + JournalStore + InboxStore + Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;

    /// Durable jobs, where the backend has them (SQLite, PostgreSQL and Redis do).
    fn job_store(&self) -> Option<&dyn jobs::JobStore> {
        None
    }

    /// The outbox, where the backend has one (SQLite, PostgreSQL and Redis do).
    fn outbox_store(&self) -> Option<&dyn outbox::OutboxStore> {
        None
    }

    /// Membership and the actor directory, where several hosts can share
    /// the backend (PostgreSQL and Redis; SQLite is single-host).
    fn cluster_store(&self) -> Option<&dyn cluster::ClusterStore> {
        None
    }
}

/// Each actor's inbox: the messages (and idempotency keys) it handled,
/// written in the turn's commit, so a repeat is answered without a turn.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// The stored reply if `actor` handled `sender`'s `message_id` (and it
    /// has not expired); `sender` is `""` for HTTP idempotency keys.
    async fn inbox_reply(&self, actor: &ActorId, sender: &str, message_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Forgets entries older than `before_ms`, except those whose message
    /// is still in the outbox (it may yet be redelivered); returns how many.
    async fn expire_inbox(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Per-actor key/value state and the turn commit.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Every key and value of `actor`, in key order.
    async fn load_state(&self, actor: &ActorId) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Commits a batch of turns in ONE transaction: all or nothing.
    async fn commit(&self, batch: &[TurnCommit]) -> Result<(), StoreError>;
}

/// Deployed components and which version of each type is active.
#[async_trait]
pub trait ComponentStore: Send + Sync {
    /// Stores a new version of `actor_type` and makes it active; returns its number.
    async fn add_component_version(
        &self,
        actor_type: &str,
        hash: &str,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<ComponentVersion, StoreError>;

    /// Every version of `actor_type`, oldest first.
    async fn component_versions(&self, actor_type: &str) -> Result<Vec<ComponentVersion>, StoreError>;

    /// The bytes of a stored component version.
    async fn component_bytes(&self, actor_type: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Points `actor_type` at `version`.
    async fn set_active_version(&self, actor_type: &str, version: u64) -> Result<(), StoreError>;

    /// Every actor type with its active version.
    async fn active_versions(&self) -> Result<Vec<ComponentVersion>, StoreError>;
}

/// Journals, snapshots and projections. Appends go through
/// [`StateStore::commit`] with the rest of the turn.
#[async_trait]
pub trait JournalStore: Send + Sync {
    /// The version of `actor`'s stream: its last committed event (0 if none).
    async fn journal_head(&self, actor: &ActorId) -> Result<u64, StoreError>;

    /// Up to `max` events of `actor` from version `from` on, oldest first,
    /// archived ones included.
    async fn read_events(&self, actor: &ActorId, from: u64, max: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// The version `actor` had at `at_ms`: its last event recorded then or before.
    async fn version_at(&self, actor: &ActorId, at_ms: i64) -> Result<u64, StoreError>;

    /// The newest snapshot of `actor` at or below version `at_most`.
    async fn latest_snapshot(&self, actor: &ActorId, at_most: u64) -> Result<Option<Snapshot>, StoreError>;

    /// Stores a snapshot, then applies `retention` to the events it covers.
    async fn save_snapshot(&self, actor: &ActorId, snapshot: &Snapshot, retention: Retention) -> Result<(), StoreError>;

    /// Declares a projection; false if one by that name exists already
    /// (with the same definition; a different one is `Rejected`).
    async fn create_projection(&self, def: &ProjectionDef) -> Result<bool, StoreError>;

    /// Removes a projection; false if there was none.
    async fn delete_projection(&self, name: &str) -> Result<bool, StoreError>;

    /// Every projection, by name.
    async fn projections(&self) -> Result<Vec<ProjectionStatus>, StoreError>;

    /// Up to `max` events of every actor of `actor_type` after global
    /// position `after`, in position order (so in order within each stream).
    async fn read_type_events(&self, actor_type: &str, after: u64, max: usize) -> Result<Vec<PositionedEvent>, StoreError>;

    /// How many events of `actor_type` lie after global position `after`.
    async fn count_type_events(&self, actor_type: &str, after: u64) -> Result<u64, StoreError>;
}

/// Opens the store named by `url`: `postgres://…[#schema]`, `redis://…[#prefix]`, or a SQLite database in
/// the data directory `data_dir` when `url` is `None`.
pub async fn open(url: Option<&str>, data_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            // `#schema`: everything in that schema (created if missing).
            let (url, schema) = match url.split_once('#') {
                Some((url, schema)) => (url, Some(schema)),
                None => (url, None),
            };
            Ok(std::sync::Arc::new(postgres::PostgresStore::connect(url, schema).await?))
        }
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(std::sync::Arc::new(self::redis::RedisStore::connect(url, None).await?))
        }
        Some(other) => Err(StoreError::Unavailable(format!(
            "unsupported store URL {other:?}: use postgres://…, redis://… or omit --store for SQLite"
        ))),
        None => Ok(std::sync::Arc::new(sqlite::SqliteStore::open(&data_dir.join("quark.db")).await?)),
    }
}
