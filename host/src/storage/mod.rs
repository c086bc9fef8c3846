//! Durable storage: the `Store` trait family and one file per backend.
//!
//! Everything a turn writes reaches the store through [`Store::commit`], one
//! transaction for a whole batch of turns (see [`committer`]). Reads that
//! activate an actor or list components go straight to the backend.

use std::time::Duration;

use async_trait::async_trait;

use crate::id::ActorId;

pub mod committer;
pub mod postgres;
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

/// One state write of a turn: `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// The state key.
    pub key: String,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Everything durable one successful turn did, committed atomically.
///
/// Later capabilities (journal events, jobs, outbox messages, the inbox
/// entry) add fields here, so they commit in the same transaction.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    /// The actor whose turn this was.
    pub actor: ActorId,
    /// State writes, in the order the turn made them (last write of a key wins).
    pub state: Vec<StateWrite>,
}

impl TurnCommit {
    /// True when the turn wrote nothing durable, so it can skip the store.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
}

/// Limits and settings of one deployed component version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Most linear memory one activation may grow to, in bytes.
    pub memory_limit: u64,
    /// Longest one turn may run, wall clock.
    #[serde(with = "duration_ms")]
    pub turn_timeout: Duration,
}

/// Longest turn time limit a deploy may ask for: a turn holds its actor,
/// and longer work belongs in durable jobs or workflows.
pub const MAX_TURN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Largest memory limit: all a 32-bit wasm memory can address.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

impl Manifest {
    /// Builds a manifest from the strings a person types (`16MiB`, `5s`);
    /// missing parts take the host's defaults.
    pub fn parse(memory_limit: Option<&str>, turn_timeout: Option<&str>) -> Result<Self, crate::ActorError> {
        let memory_limit = match memory_limit {
            None => crate::runtime::DEFAULT_MEMORY_LIMIT,
            Some(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map_err(|e| crate::ActorError::bad_request(format!("bad memory limit {s:?} (try `16MiB`): {e}")))?
                .as_u64(),
        };
        let turn_timeout = match turn_timeout {
            None => crate::runtime::DEFAULT_TURN_TIMEOUT,
            Some(s) => humantime::parse_duration(s.trim())
                .map_err(|e| crate::ActorError::bad_request(format!("bad turn timeout {s:?} (try `5s`): {e}")))?,
        };
        if memory_limit < 64 * 1024 {
            return Err(crate::ActorError::bad_request(format!(
                "memory limit {memory_limit} bytes is below one wasm page (64 KiB)"
            )));
        }
        if turn_timeout.is_zero() || turn_timeout > MAX_TURN_TIMEOUT {
            return Err(crate::ActorError::bad_request(format!(
                "turn timeout {turn_timeout:?} must be above zero and at most {MAX_TURN_TIMEOUT:?}"
            )));
        }
        if memory_limit > MAX_MEMORY_LIMIT {
            return Err(crate::ActorError::bad_request(format!(
                "memory limit {memory_limit} bytes is over {MAX_MEMORY_LIMIT} (4 GiB, all a 32-bit wasm memory can address)"
            )));
        }
        Ok(Manifest { memory_limit, turn_timeout })
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A stored component version, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentVersion {
    /// The actor type.
    pub actor_type: String,
    /// 1, 2, 3… per type.
    pub version: u64,
    /// Hex SHA-256 of the component bytes.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Its limits.
    pub manifest: Manifest,
    /// When it was deployed, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The storage backend: all the traits below, behind one object.
pub trait Store: StateStore + ComponentStore + Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;
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

/// One `(actor, key, value)` row to write.
pub(crate) type Upsert<'a> = (&'a str, &'a str, &'a [u8]);

/// One `(actor, key)` row to delete.
pub(crate) type Delete<'a> = (&'a str, &'a str);

/// Merges a batch of turns into final per-key writes (the last write of a
/// key wins), split into upserts and deletes, so each backend runs two
/// bulk statements instead of one per write.
pub(crate) fn flatten_batch(batch: &[TurnCommit]) -> (Vec<Upsert<'_>>, Vec<Delete<'_>>) {
    let mut last: std::collections::HashMap<(&str, &str), Option<&[u8]>> = std::collections::HashMap::new();
    for commit in batch {
        for write in &commit.state {
            last.insert((commit.actor.as_str(), write.key.as_str()), write.value.as_deref());
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for ((actor, key), value) in last {
        match value {
            Some(v) => upserts.push((actor, key, v)),
            None => deletes.push((actor, key)),
        }
    }
    (upserts, deletes)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens the store named by `url`: `postgres://…`, or a SQLite database in
/// the data directory `data_dir` when `url` is `None`.
pub async fn open(url: Option<&str>, data_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(std::sync::Arc::new(postgres::PostgresStore::connect(url, None).await?))
        }
        Some(other) => Err(StoreError::Unavailable(format!(
            "unsupported store URL {other:?}: use postgres://… or omit --store for SQLite"
        ))),
        None => Ok(std::sync::Arc::new(sqlite::SqliteStore::open(&data_dir.join("quark.db")).await?)),
    }
}
