//! Durable workflows (`wit/workflow.wit`, docs/workflows.md).
//!
//! A workflow instance is an actor of its workflow type, so it has one
//! owner in a cluster, fenced commits and migration for free. Its state
//! holds the instance record (`wf`) and its history, one key per step
//! (`wf/{run}/{step}`). Each turn of the instance (start, signal, timer,
//! cancel, a child's result, a checkpoint's wake) updates the record, then
//! runs the workflow's `run` from the start on a fresh instance of the
//! version it started on: recorded steps are answered from the history
//! (and checked against what the code asks for), the first new one goes on
//! live. A wait that cannot be answered now stops the guest; the turn
//! commits the history so far with the timers (durable jobs) and messages
//! it scheduled.
//!
//! - [`run`]: the step logic, shared by the WIT imports and WASI's clocks.
//! - [`driver`]: one turn of an instance.
//! - [`clocks`]: WASI clocks and randomness that answer from the history.
//! - [`api`]: what the HTTP API and the CLI call.

pub(crate) mod api;
pub(crate) mod clocks;
pub(crate) mod driver;
pub(crate) mod run;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use api::{WorkflowCheck, WorkflowDivergence, WorkflowSummary};
pub(crate) use run::SharedRun;

/// State key of the instance record.
pub(crate) const RECORD_KEY: &str = "wf";

/// State key of step `seq` of run `run`.
pub(crate) fn step_key(run: u32, seq: u32) -> String {
    format!("wf/{run}/{seq:08}")
}

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    /// Started and not finished (running a turn, or waiting).
    Running,
    /// `run` returned its output.
    Completed,
    /// `run` returned an error, trapped, or diverged from its history.
    Failed,
    /// `run` returned an error after its cancellation.
    Cancelled,
}

impl WorkflowStatus {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        [WorkflowStatus::Running, WorkflowStatus::Completed, WorkflowStatus::Failed, WorkflowStatus::Cancelled]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A failure as the record keeps it: `kind` is an error kind's name, or
/// `nondeterminism`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowError {
    /// What kind of failure.
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
}

impl From<&crate::ActorError> for WorkflowError {
    fn from(e: &crate::ActorError) -> Self {
        WorkflowError { kind: e.kind.as_str().to_string(), message: e.message.clone() }
    }
}

/// A signal that arrived and no wait has taken yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingSignal {
    pub(crate) name: String,
    #[serde(with = "b64")]
    pub(crate) payload: Vec<u8>,
}

/// The parent waiting for a child workflow: its step for the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParentStep {
    pub(crate) actor: String,
    pub(crate) run: u32,
    pub(crate) seq: u32,
}

/// An instance: state key [`RECORD_KEY`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkflowRecord {
    pub(crate) id: String,
    pub(crate) workflow_type: String,
    /// The component version it runs on, for its whole life.
    pub(crate) version: u64,
    /// 1, then one more per continue-as-new.
    pub(crate) run: u32,
    #[serde(with = "b64")]
    pub(crate) input: Vec<u8>,
    pub(crate) status: WorkflowStatus,
    #[serde(with = "b64_opt", default)]
    pub(crate) output: Option<Vec<u8>>,
    #[serde(default)]
    pub(crate) error: Option<WorkflowError>,
    /// What `set-status` last set.
    #[serde(with = "b64_opt", default)]
    pub(crate) custom_status: Option<Vec<u8>>,
    /// Steps in this run's history.
    pub(crate) steps: u32,
    /// Steps of the runs before this one.
    #[serde(default)]
    pub(crate) earlier_steps: u64,
    #[serde(default)]
    pub(crate) signals: std::collections::VecDeque<PendingSignal>,
    #[serde(default)]
    pub(crate) cancel_requested: bool,
    #[serde(default)]
    pub(crate) parents: Vec<ParentStep>,
    /// Seeds WASI's random generators: the same numbers on every replay.
    pub(crate) seed: u64,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
}

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepKind {
    /// An actor method, `detail` = `target method`.
    Activity,
    /// A child workflow, `detail` = `type/id`.
    Child,
    /// `sleep`.
    Timer,
    /// `wait-signal`, `detail` = the signal's name.
    Signal,
    /// `await-any`, `detail` = the handles.
    AwaitAny,
    /// A clock read (`now`, WASI's wall or monotonic clock: `detail`).
    Clock,
    /// `random`.
    Random,
}

impl StepKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepKind::Activity => "activity",
            StepKind::Child => "child",
            StepKind::Timer => "timer",
            StepKind::Signal => "signal",
            StepKind::AwaitAny => "await-any",
            StepKind::Clock => "clock",
            StepKind::Random => "random",
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepResult {
    /// An activity's or child's reply.
    Ok(#[serde(with = "b64")] Vec<u8>),
    /// An activity's or child's error.
    Err(WorkflowError),
    /// A timer fired.
    Fired,
    /// A signal arrived.
    Signal(#[serde(with = "b64")] Vec<u8>),
    /// A signal's wait timed out.
    TimedOut,
    /// The wait saw the workflow's cancellation.
    Cancelled,
    /// A clock read or random number.
    Value(u64),
    /// `await-any`: the position of the handle that finished first.
    Winner(u32),
}

/// One step of a run's history: state key [`step_key`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) seq: u32,
    pub(crate) kind: StepKind,
    #[serde(default)]
    pub(crate) detail: String,
    #[serde(with = "b64", default)]
    pub(crate) input: Vec<u8>,
    #[serde(default)]
    pub(crate) result: Option<StepResult>,
    /// When a timer (or a signal's timeout) fires, ms since the epoch.
    #[serde(default)]
    pub(crate) due_ms: Option<i64>,
    pub(crate) at_ms: i64,
    #[serde(default)]
    pub(crate) done_ms: Option<i64>,
}

/// The body of a `start` turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StartRequest {
    #[serde(with = "b64")]
    pub(crate) input: Vec<u8>,
    #[serde(default)]
    pub(crate) parent: Option<ParentStep>,
}

/// The body of a `$timer` job, a `$child-done` message, a `signal`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepEvent {
    pub(crate) run: u32,
    pub(crate) seq: u32,
    #[serde(default)]
    pub(crate) result: Option<StepResult>,
}

/// The body of a `signal` turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SignalRequest {
    pub(crate) name: String,
    #[serde(with = "b64")]
    pub(crate) payload: Vec<u8>,
}

/// Methods of a workflow instance (its turns).
pub(crate) mod method {
    /// Starts the instance, or returns the existing one.
    pub(crate) const START: &str = "start";
    /// Delivers a signal.
    pub(crate) const SIGNAL: &str = "signal";
    /// Requests cancellation.
    pub(crate) const CANCEL: &str = "cancel";
    /// The record, as `GET /v1/workflows/{id}` shows it.
    pub(crate) const STATUS: &str = "status";
    /// The history of the current run.
    pub(crate) const HISTORY: &str = "history";
    /// A timer's job.
    pub(crate) const TIMER: &str = "$timer";
    /// A child workflow finished.
    pub(crate) const CHILD_DONE: &str = "$child-done";
    /// Goes on after a checkpoint or a continue-as-new.
    pub(crate) const WAKE: &str = "$wake";
}

/// A payload as JSON when it is JSON (what every SDK sends), else base64
/// under `{"base64": …}`: how the API shows inputs, outputs and results.
pub fn payload_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }))
}

/// Exact bytes in JSON records: base64.
pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// [`b64`] for an optional payload.
pub(crate) mod b64_opt {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => base64::engine::general_purpose::STANDARD.decode(s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
