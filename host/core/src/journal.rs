//! Journal records: stored events, appends, snapshots and projections.

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
pub mod json_or_base64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `data` as the JSON it holds, or as `{"base64": …}`.
    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(value) => value.serialize(s),
            Err(_) => serde_json::json!({ "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data) }).serialize(s),
        }
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if let Some(b64) = value.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("base64")).and_then(|v| v.as_str()) {
            return base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).map_err(serde::de::Error::custom);
        }
        serde_json::to_vec(&value).map_err(serde::de::Error::custom)
    }
}
