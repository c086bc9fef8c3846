//! One run of a workflow's code in a turn: the history it replays, the
//! steps it adds, and why it stopped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

use super::{Step, StepKind, StepResult, WorkflowError, WorkflowRecord};
use crate::ActorError;

/// A run, shared by the WIT imports and the WASI clocks of its instance.
pub(crate) type SharedRun = Arc<Mutex<WorkflowRun>>;

/// New steps one turn adds before it commits them and goes on in the next
/// (a checkpoint): it bounds what a crash makes the workflow redo.
pub(crate) const CHECKPOINT_STEPS: usize = 256;

/// Bytes of new steps (inputs and results) one turn buffers before a
/// checkpoint: a quarter of what a turn may buffer for its commit, so
/// many large activity replies commit over several turns instead of
/// failing one.
pub(crate) const CHECKPOINT_BYTES: usize = crate::turn::MAX_TURN_BYTES / 4;

/// Why the host stopped the guest before `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It waits for a timer, a signal or a child: the turn commits, a
    /// later one goes on.
    Wait,
    /// The turn did enough; a `$wake` job goes on at once.
    Checkpoint,
    /// The code asked for something other than the history holds.
    Diverged(String),
    /// `continue-as-new` with this input.
    ContinueAsNew(Vec<u8>),
    /// A replay check reached the end of the recorded history.
    EndOfHistory,
}

/// An activity call in flight (a task; shared so `await-any` can wait on
/// several and leave the others running).
pub(crate) type InFlight = Shared<BoxFuture<'static, Result<Vec<u8>, ActorError>>>;

/// Runs `call` as a task now, whether or not anything awaits it yet.
pub(crate) fn in_flight(call: impl std::future::Future<Output = Result<Vec<u8>, ActorError>> + Send + 'static) -> InFlight {
    let task = tokio::spawn(call);
    async move { task.await.unwrap_or_else(|e| Err(ActorError::internal(format!("an activity's task failed: {e}")))) }.boxed().shared()
}

/// The state of one run of the code.
pub(crate) struct WorkflowRun {
    pub(crate) record: WorkflowRecord,
    /// This run's history: recorded steps, then the ones added this turn.
    pub(crate) steps: Vec<Step>,
    /// The next step the code asks for.
    pub(crate) cursor: usize,
    /// Steps added or changed this turn (to write).
    pub(crate) dirty: BTreeSet<u32>,
    /// Activities started and not awaited yet.
    pub(crate) in_flight: HashMap<u32, InFlight>,
    /// Why the guest was stopped, once it was.
    pub(crate) stop: Option<Stop>,
    /// Timers to schedule: (step, due time in ms).
    pub(crate) timers: Vec<(u32, i64)>,
    /// Children to start: (step, workflow type, id, input).
    pub(crate) children: Vec<(u32, String, String, Vec<u8>)>,
    /// Children to cancel with this one (`type/id`).
    pub(crate) cancel_children: Vec<String>,
    /// Steps added this turn.
    pub(crate) added: usize,
    /// Bytes of the steps added or resolved this turn.
    pub(crate) added_bytes: usize,
    /// When the turn must end; a checkpoint comes before.
    pub(crate) checkpoint_at: Instant,
    /// A replay check: never live, stop at the end of the history.
    pub(crate) check_only: bool,
    /// A wait of this execution returned the cancellation.
    pub(crate) saw_cancellation: bool,
}

/// What the code's request for the next step found.
pub(crate) enum Next {
    /// A recorded step (checked): its index.
    Recorded(usize),
    /// A new step, appended: its index.
    New(usize),
}

impl WorkflowRun {
    pub(crate) fn new(record: WorkflowRecord, steps: Vec<Step>, turn_time: Duration, check_only: bool) -> Self {
        WorkflowRun {
            record,
            steps,
            cursor: 0,
            dirty: BTreeSet::new(),
            in_flight: HashMap::new(),
            stop: None,
            timers: Vec::new(),
            children: Vec::new(),
            cancel_children: Vec::new(),
            added: 0,
            added_bytes: 0,
            checkpoint_at: Instant::now() + turn_time / 2,
            check_only,
            saw_cancellation: false,
        }
    }

    /// The step the code asks for next: the recorded one, if its kind,
    /// detail and input match (else the run diverged), or a new one.
    pub(crate) fn next(&mut self, kind: StepKind, detail: &str, input: &[u8]) -> Result<Next, Stop> {
        if let Some(stop) = &self.stop {
            return Err(stop.clone());
        }
        if let Some(step) = self.steps.get(self.cursor) {
            if step.kind != kind || step.detail != detail || step.input != input {
                let stop = Stop::Diverged(format!(
                    "step {} of run {}: the history holds {} but the code asks for {}",
                    self.cursor,
                    self.record.run,
                    describe(step.kind, &step.detail, &step.input),
                    describe(kind, detail, input)
                ));
                self.stop = Some(stop.clone());
                return Err(stop);
            }
            self.cursor += 1;
            return Ok(Next::Recorded(self.cursor - 1));
        }
        if self.check_only {
            self.stop = Some(Stop::EndOfHistory);
            return Err(Stop::EndOfHistory);
        }
        if self.added >= CHECKPOINT_STEPS || self.added_bytes >= CHECKPOINT_BYTES || Instant::now() >= self.checkpoint_at {
            self.stop = Some(Stop::Checkpoint);
            return Err(Stop::Checkpoint);
        }
        let seq = self.steps.len() as u32;
        self.steps.push(Step {
            seq,
            kind,
            detail: detail.to_string(),
            input: input.to_vec(),
            result: None,
            due_ms: None,
            at_ms: crate::storage::now_ms(),
            done_ms: None,
        });
        self.dirty.insert(seq);
        self.added += 1;
        self.added_bytes += input.len() * 4 / 3 + detail.len() + 64;
        self.cursor += 1;
        Ok(Next::New(seq as usize))
    }

    /// Records how step `index` ended.
    pub(crate) fn resolve(&mut self, index: usize, result: StepResult) {
        if let Some(step) = self.steps.get_mut(index) {
            self.added_bytes += match &result {
                StepResult::Ok(bytes) | StepResult::Signal(bytes) => bytes.len() * 4 / 3 + 64,
                StepResult::Err(e) => e.message.len() + 64,
                _ => 0,
            };
            step.result = Some(result);
            step.done_ms = Some(crate::storage::now_ms());
            self.dirty.insert(step.seq);
        }
    }

    /// Stops the guest: `stop` says why (a wait, a divergence…).
    pub(crate) fn halt(&mut self, stop: Stop) -> Stop {
        self.stop.get_or_insert(stop).clone()
    }

    /// The error a wait returns once the workflow is cancelled; from then
    /// on `is-cancelled` is true (in this execution: a replay reaches the
    /// same waits in the same order, so it turns true at the same point).
    pub(crate) fn cancelled(&mut self) -> crate::capabilities::GuestError {
        self.saw_cancellation = true;
        crate::capabilities::GuestError::Rejected(format!("cancelled: workflow {} was cancelled", self.record.id))
    }

    /// Whether recording `result` now would pass this turn's byte budget
    /// (in the history's encoding: base64 and JSON around it). Never for
    /// the first bytes of a turn, so a turn always records something.
    pub(crate) fn over_budget(&self, result: &StepResult) -> bool {
        let bytes = match result {
            StepResult::Ok(b) | StepResult::Signal(b) => b.len() * 4 / 3 + 64,
            StepResult::Err(e) => e.message.len() + 64,
            _ => 0,
        };
        self.added_bytes > 0 && self.added_bytes + bytes > CHECKPOINT_BYTES
    }

    /// A recorded value step (a clock read, a random number): the recorded
    /// value, or `live()` recorded now.
    pub(crate) fn value(&mut self, kind: StepKind, detail: &str, live: impl FnOnce() -> u64) -> Result<u64, Stop> {
        match self.next(kind, detail, &[])? {
            Next::Recorded(i) => match &self.steps[i].result {
                Some(StepResult::Value(v)) => Ok(*v),
                other => Err(self.halt(Stop::Diverged(format!("step {i} is a {} without a value ({other:?})", kind.as_str())))),
            },
            Next::New(i) => {
                let v = live();
                self.resolve(i, StepResult::Value(v));
                Ok(v)
            }
        }
    }
}

/// A step as a divergence message names it.
fn describe(kind: StepKind, detail: &str, input: &[u8]) -> String {
    let input = match std::str::from_utf8(input) {
        Ok(s) if s.len() <= 120 => s.to_string(),
        Ok(s) => format!("{}…", &s[..s.floor_char_boundary(120)]),
        Err(_) => format!("{} bytes", input.len()),
    };
    match (detail.is_empty(), input.is_empty()) {
        (true, true) => kind.as_str().to_string(),
        (false, true) => format!("{} `{detail}`", kind.as_str()),
        (true, false) => format!("{} ({input})", kind.as_str()),
        (false, false) => format!("{} `{detail}` ({input})", kind.as_str()),
    }
}

/// The guest's view of a recorded failure.
pub(crate) fn guest_error(e: &WorkflowError) -> crate::capabilities::GuestError {
    use crate::capabilities::GuestError;
    let m = e.message.clone();
    match e.kind.as_str() {
        "not-found" => GuestError::NotFound(m),
        "timeout" => GuestError::Timeout(m),
        "unavailable" | "unknown-outcome" => GuestError::Unavailable(m),
        "limit-exceeded" | "payload-too-large" => GuestError::LimitExceeded(m),
        "internal" | "nondeterminism" => GuestError::Internal(m),
        "bad-request" if !m.starts_with(crate::capabilities::BAD_REQUEST_PREFIX) => {
            GuestError::Rejected(format!("{}: {m}", crate::capabilities::BAD_REQUEST_PREFIX))
        }
        _ => GuestError::Rejected(m),
    }
}

