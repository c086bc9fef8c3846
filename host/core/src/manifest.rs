//! A deployed component version's limits and settings, and their defaults.

use std::time::Duration;

/// Default memory limit of an actor type: room for a Rust guest's stack,
/// heap and data with margin; Python guests need more and say so.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

/// Default longest turn.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(5);

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

impl Retention {
    /// `keep`, `archive` or `delete`, as written in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Retention::Keep => "keep",
            Retention::Archive => "archive",
            Retention::Delete => "delete",
        }
    }
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
    /// Above 0, the type is a stateless worker (Orleans'
    /// `[StatelessWorker]`): up to this many activations per actor id run
    /// side by side on whichever host the call arrives at, with no
    /// directory entry, no state, journal, jobs or outbox. For pure compute
    /// and fan-out. 0 (the default): one activation per actor in the cluster.
    #[serde(default)]
    pub stateless_workers: u32,
}

/// Most activations per id a stateless worker type may ask for.
pub const MAX_STATELESS_WORKERS: u32 = 256;

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
            None => DEFAULT_MEMORY_LIMIT,
            Some(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map_err(|e| crate::ActorError::bad_request(format!("bad memory limit {s:?} (try `16MiB`): {e}")))?
                .as_u64(),
        };
        let turn_timeout = match turn_timeout {
            None => DEFAULT_TURN_TIMEOUT,
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
        Ok(Manifest { memory_limit, turn_timeout, snapshot_every: DEFAULT_SNAPSHOT_EVERY, retention: Retention::Keep, stateless_workers: 0 })
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

    /// Makes the type a stateless worker with up to `workers` activations
    /// per actor id on each host (`4`); `0` or none keeps it stateful.
    pub fn with_stateless_workers(mut self, workers: Option<&str>) -> Result<Self, crate::ActorError> {
        if let Some(s) = workers {
            self.stateless_workers = s.trim().parse::<u32>().ok().filter(|n| *n <= MAX_STATELESS_WORKERS).ok_or_else(|| {
                crate::ActorError::bad_request(format!(
                    "bad stateless worker count {s:?}: give the activations per actor id, 1 to {MAX_STATELESS_WORKERS} (0: a stateful actor)"
                ))
            })?;
        }
        Ok(self)
    }

    /// Whether the type is a stateless worker.
    pub fn is_stateless_worker(&self) -> bool {
        self.stateless_workers > 0
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
