//! Durable storage: the `Store` trait family and one file per backend.
//!
//! Everything a turn writes reaches the store through [`Store::commit`], one
//! transaction for a whole batch of turns (see [`committer`]). Reads that
//! activate an actor or list components go straight to the backend.

use std::time::Duration;

use async_trait::async_trait;

use crate::id::ActorId;

pub mod committer;
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
/// Later capabilities (jobs, outbox messages, the inbox entry) add fields
/// here, so they commit in the same transaction.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    /// The actor whose turn this was.
    pub actor: ActorId,
    /// State writes, in the order the turn made them (last write of a key wins).
    pub state: Vec<StateWrite>,
    /// Events the turn appended to the actor's journal.
    pub journal: Option<JournalAppend>,
    /// The projection checkpoint this turn advances (projection turns only).
    pub checkpoint: Option<CheckpointAdvance>,
    /// Jobs the turn scheduled.
    pub jobs: Vec<jobs::JobRecord>,
    /// Jobs the turn cancelled.
    pub cancels: Vec<String>,
    /// The job this turn ran, completed with it (job turns only).
    pub job_done: Option<jobs::JobCompletion>,
    /// The message (or idempotency key) this turn handled, with its reply:
    /// a repeat gets the reply without running again.
    pub inbox: Option<InboxEntry>,
    /// Messages the turn sent (the outbox), delivered after this commit.
    pub messages: Vec<outbox::OutboxMessage>,
}

impl TurnCommit {
    /// A commit of state writes only.
    pub fn state_only(actor: ActorId, state: Vec<StateWrite>) -> Self {
        TurnCommit {
            actor,
            state,
            journal: None,
            checkpoint: None,
            jobs: Vec::new(),
            cancels: Vec::new(),
            job_done: None,
            inbox: None,
            messages: Vec::new(),
        }
    }

    /// True when the turn wrote nothing durable, so it can skip the store.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty() && self.journal.is_none() && self.checkpoint.is_none() && !self.has_job_effects() && self.inbox.is_none() && self.messages.is_empty()
    }

    /// True when the turn scheduled, cancelled or completed a job.
    pub fn has_job_effects(&self) -> bool {
        !self.jobs.is_empty() || !self.cancels.is_empty() || self.job_done.is_some()
    }
}

/// A message an actor handled, kept in its inbox for the retention window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Who sent it: the sending actor, or `""` for an HTTP caller's
    /// idempotency key. Ids are unique per (receiver, sender).
    pub sender: String,
    /// The message id (or the caller's idempotency key).
    pub message_id: String,
    /// The reply the turn gave.
    pub reply: Vec<u8>,
    /// When the turn ran, ms since the epoch.
    pub at_ms: i64,
}

impl InboxEntry {
    /// The sender for a person: the actor, or "an HTTP caller".
    pub fn sender_name(&self) -> &str {
        if self.sender.is_empty() { "an HTTP caller" } else { &self.sender }
    }
}

/// One journal event as it is stored: the persisted format, pinned by the
/// golden-file test `tests/goldenfiles/journal_events.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// Position in the actor's stream, from 1, without gaps.
    pub version: u64,
    /// What happened, e.g. `deposited`.
    pub event_type: String,
    /// Version of the event's shape.
    pub schema_version: u32,
    /// The body (JSON for SDK actors).
    #[serde(with = "json_or_base64")]
    pub data: Vec<u8>,
    /// When the turn appended it, milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
    /// The call chain of the request that caused it.
    pub correlation_id: String,
    /// The turn (message) that appended it.
    pub causation_id: String,
    /// The calling actor, if the message came from one.
    pub caller: Option<String>,
    /// The method whose turn appended it.
    pub method: String,
}

/// Events appended by one turn, and the version its actor had before:
/// the commit fails with [`StoreError::Conflict`] unless the stored stream
/// is still at `expected_version`.
#[derive(Debug, Clone)]
pub struct JournalAppend {
    /// The stream's version when the turn started.
    pub expected_version: u64,
    /// The new events, numbered `expected_version + 1` on.
    pub events: Vec<EventRecord>,
}

/// A projection turn's checkpoint move, committed with the projection
/// actor's state: the events up to `to` are handled exactly once.
#[derive(Debug, Clone)]
pub struct CheckpointAdvance {
    /// The projection.
    pub projection: String,
    /// Its checkpoint before the turn (a global journal position).
    pub from: u64,
    /// Its checkpoint after.
    pub to: u64,
}

/// An event with its actor and its position across all streams, as a
/// projection reads it.
#[derive(Debug, Clone)]
pub struct PositionedEvent {
    /// Global position: increases with every committed event.
    pub position: u64,
    /// The actor whose stream it is in.
    pub actor: String,
    /// The event.
    pub event: EventRecord,
}

/// A stored snapshot of an event-sourced actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The journal version it covers (every event up to and including it).
    pub version: u64,
    /// The component version that produced it.
    pub component_version: u64,
    /// When it was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: i64,
    /// What the actor's `snapshot` export returned.
    pub data: Vec<u8>,
}

/// What happens to events a new snapshot covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// Keep every event in the journal (the default: a full audit trail).
    #[default]
    Keep,
    /// Move covered events to the archive table: the live journal stays
    /// small, the audit trail and replays still see them.
    Archive,
    /// Delete covered events: replays can only start from snapshots.
    Delete,
}

impl std::str::FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(Retention::Keep),
            "archive" => Ok(Retention::Archive),
            "delete" => Ok(Retention::Delete),
            other => Err(format!("unknown journal retention {other:?}: use keep, archive or delete")),
        }
    }
}

/// A projection: every event of `source_type` goes, in order, to `method`
/// of the actor `target`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProjectionDef {
    /// Its name.
    pub name: String,
    /// The actor type whose events it reads.
    pub source_type: String,
    /// The actor (`type/key`) that receives them.
    pub target: String,
    /// The method that receives them.
    pub method: String,
}

/// A projection and how far it has read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectionStatus {
    /// What it is.
    #[serde(flatten)]
    pub def: ProjectionDef,
    /// Global journal position of the last event it handled.
    pub checkpoint: u64,
}

/// Serializes bytes as embedded JSON when they are JSON, else as a
/// `{"base64": …}` object, so the golden file and the API stay readable.
pub(crate) mod json_or_base64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(value) => value.serialize(s),
            Err(_) => serde_json::json!({ "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data) }).serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if let Some(b64) = value.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("base64")).and_then(|v| v.as_str()) {
            return base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).map_err(serde::de::Error::custom);
        }
        serde_json::to_vec(&value).map_err(serde::de::Error::custom)
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
    /// An event-sourced actor is snapshotted after this many events, which
    /// bounds how many events an activation replays.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// What happens to the events a snapshot covers.
    #[serde(default)]
    pub retention: Retention,
}

/// Events between automatic snapshots unless a deploy says otherwise:
/// rebuilding replays at most this many (about a millisecond's work).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;

fn default_snapshot_every() -> u64 {
    DEFAULT_SNAPSHOT_EVERY
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
        Ok(Manifest { memory_limit, turn_timeout, snapshot_every: DEFAULT_SNAPSHOT_EVERY, retention: Retention::Keep })
    }

    /// Sets the journal settings from the strings a person types: events
    /// between snapshots (`500`) and retention (`keep`, `archive`, `delete`).
    pub fn with_journal(mut self, snapshot_every: Option<&str>, retention: Option<&str>) -> Result<Self, crate::ActorError> {
        if let Some(s) = snapshot_every {
            self.snapshot_every = s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| crate::ActorError::bad_request(format!("bad snapshot interval {s:?}: give a number of events above 0")))?;
        }
        if let Some(r) = retention {
            self.retention = r.trim().parse().map_err(crate::ActorError::bad_request)?;
        }
        Ok(self)
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
    /// Its limits and settings.
    pub manifest: Manifest,
    /// When it was deployed, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
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
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens the store named by `url`: `postgres://…`, `redis://…[#prefix]`, or a SQLite database in
/// the data directory `data_dir` when `url` is `None`.
pub async fn open(url: Option<&str>, data_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(std::sync::Arc::new(postgres::PostgresStore::connect(url, None).await?))
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
