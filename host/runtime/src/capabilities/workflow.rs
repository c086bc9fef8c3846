//! `quark:actor/workflow`: a workflow's steps, answered from its history
//! when they are recorded and run live when they are new (see
//! [`crate::workflow`]). A wait that cannot be answered in this turn
//! stops the guest with a trap the driver reads as "waiting".

use std::time::{Duration, Instant};

use super::GuestError;
use super::bindings::quark::actor::workflow::Host;
use crate::id::{ActorId, ChainId};
use crate::turn::{Execution, InstanceState};
use crate::workflow::run::{Next, SharedRun, Stop, guest_error};
use crate::workflow::{StepKind, StepResult, WorkflowError};
use crate::{Control, ErrorKind, InboxTurn, Request};

/// Attempts of an activity call that failed for want of a host or the
/// store (each with the same message id, so the target runs it once).
const ACTIVITY_ATTEMPTS: u32 = 3;

/// The trap that stops the guest; the driver reads why from the run.
fn stopped(stop: &Stop) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the workflow stopped here ({stop:?}); the host goes on from its history"))
}

type Answer = Result<Vec<u8>, GuestError>;

impl InstanceState {
    fn workflow_run(&self) -> wasmtime::Result<SharedRun> {
        match &self.execution {
            Execution::Workflow(run) => Ok(run.clone()),
            _ => Err(wasmtime::Error::msg(format!(
                "{} is not a workflow: only a component that exports `{}` may use quark:actor/workflow",
                self.actor,
                super::WORKFLOW_EXPORT
            ))),
        }
    }

    /// Starts the activity of step `seq` in the background, unless it is
    /// already in flight.
    fn launch_activity(&self, run: &SharedRun, seq: u32, target: &str, method: &str, payload: &[u8]) {
        let mut r = run.lock();
        if r.in_flight.contains_key(&seq) || r.check_only {
            return;
        }
        let target = match ActorId::parse(target) {
            Ok(t) => t,
            Err(e) => return r.resolve(seq as usize, StepResult::Err(WorkflowError::from(&e))),
        };
        let host = match self.host() {
            Ok(h) => h,
            Err(e) => return r.resolve(seq as usize, StepResult::Err(WorkflowError::from(&e))),
        };
        let message_id = format!("wf-{}-{seq}", r.record.run);
        let request = Request {
            target,
            method: method.to_string(),
            payload: payload.to_vec(),
            chain: ChainId::fresh(),
            caller: Some(self.actor.clone()),
            deadline: Instant::now() + host.config().call_timeout,
            control: Some(Box::new(Control::Inbox(InboxTurn { sender: self.actor.to_string(), message_id, check: true, lane: None }))),
        };
        let call = crate::workflow::run::in_flight(async move {
            let mut attempt = 1;
            loop {
                let mut this = request.clone();
                this.deadline = Instant::now() + host.config().call_timeout;
                match host.ask_request(this).await {
                    Err(e) if attempt < ACTIVITY_ATTEMPTS && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::UnknownOutcome | ErrorKind::Timeout) => {
                        tokio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        });
        r.in_flight.insert(seq, call);
    }
}

/// Waits for the activity or child of step `seq`: its answer, or the
/// stop when it must wait beyond this turn.
async fn settle(run: &SharedRun, seq: u32) -> Result<Answer, Stop> {
    let in_flight = {
        let mut r = run.lock();
        let Some(step) = r.steps.get(seq as usize) else {
            return Err(r.halt(Stop::Diverged(format!("handle {seq} names no step of this run"))));
        };
        if !matches!(step.kind, StepKind::Activity | StepKind::Child) {
            let kind = step.kind.as_str();
            return Err(r.halt(Stop::Diverged(format!("handle {seq} is a {kind} step, not an activity or a child"))));
        }
        if let Some(result) = &step.result {
            if *result == StepResult::Cancelled {
                return Ok(Err(r.cancelled()));
            }
            return answer(result).ok_or_else(|| Stop::Diverged(format!("step {seq} holds {result:?}, not a reply")));
        }
        match r.in_flight.remove(&seq) {
            Some(call) => call,
            // Cancelled while it waits for a child (or an activity of an
            // earlier turn): the wait ends with the cancellation, and the
            // child is cancelled too.
            None if r.record.cancel_requested => {
                cancel_wait(&mut r, seq);
                return Ok(Err(r.cancelled()));
            }
            None => return Err(r.halt(Stop::Wait)),
        }
    };
    let result = match in_flight.await {
        Ok(reply) => StepResult::Ok(reply),
        Err(e) => StepResult::Err(WorkflowError::from(&e)),
    };
    pause_for_crash_test(run, seq).await;
    let mut r = run.lock();
    if r.over_budget(&result) {
        // Recorded next turn (the call is sent again under its message id,
        // and its target answers from its inbox).
        return Err(r.halt(Stop::Checkpoint));
    }
    r.resolve(seq as usize, result.clone());
    Ok(answer(&result).unwrap_or_else(|| Err(GuestError::Internal("no reply".into()))))
}

/// A fault-injection point for the crash tests: with
/// `QUARK_TEST_PAUSE_AFTER_STEP=N` in its environment, a host that gets
/// the reply of step N live (the activity committed, the workflow has not
/// recorded it) logs it and stops there, for the test to SIGKILL it at
/// exactly that boundary. Unset (always, outside those tests), it is one
/// branch.
async fn pause_for_crash_test(run: &SharedRun, seq: u32) {
    static PAUSE_AT: std::sync::LazyLock<Option<u32>> =
        std::sync::LazyLock::new(|| std::env::var("QUARK_TEST_PAUSE_AFTER_STEP").ok().and_then(|v| v.parse().ok()));
    if *PAUSE_AT == Some(seq) {
        let id = run.lock().record.id.clone();
        tracing::warn!("QUARK_TEST_PAUSE_AFTER_STEP: workflow {id} got the reply of step {seq}; paused for the crash test");
        std::future::pending::<()>().await;
    }
}

/// Ends the wait for step `seq` with the cancellation; a child's is
/// cancelled with its parent.
fn cancel_wait(r: &mut crate::workflow::run::WorkflowRun, seq: u32) {
    if let Some(step) = r.steps.get(seq as usize)
        && step.kind == StepKind::Child
    {
        let child = step.detail.clone();
        r.cancel_children.push(child);
    }
    r.resolve(seq as usize, StepResult::Cancelled);
}

/// A recorded reply as the guest gets it.
fn answer(result: &StepResult) -> Option<Answer> {
    match result {
        StepResult::Ok(reply) => Some(Ok(reply.clone())),
        StepResult::Err(e) => Some(Err(guest_error(e))),
        _ => None,
    }
}

impl Host for InstanceState {
    fn start_activity(&mut self, target: String, method: String, payload: Vec<u8>) -> wasmtime::Result<u32> {
        let run = self.workflow_run()?;
        let detail = format!("{target} {method}");
        let next = run.lock().next(StepKind::Activity, &detail, &payload);
        let index = match next {
            Ok(Next::Recorded(i) | Next::New(i)) => i,
            Err(stop) => return Err(stopped(&stop)),
        };
        if run.lock().steps[index].result.is_none() {
            self.launch_activity(&run, index as u32, &target, &method, &payload);
        }
        Ok(index as u32)
    }

    fn start_child(&mut self, workflow_type: String, id: String, input: Vec<u8>) -> wasmtime::Result<u32> {
        let run = self.workflow_run()?;
        let mut r = run.lock();
        let detail = format!("{workflow_type}/{id}");
        match r.next(StepKind::Child, &detail, &input) {
            Ok(Next::Recorded(i)) => Ok(i as u32),
            Ok(Next::New(i)) => {
                match ActorId::new(&workflow_type, &id) {
                    Ok(_) => r.children.push((i as u32, workflow_type, id, input)),
                    Err(e) => r.resolve(i, StepResult::Err(WorkflowError::from(&e))),
                }
                Ok(i as u32)
            }
            Err(stop) => Err(stopped(&stop)),
        }
    }

    async fn await_all(&mut self, handles: Vec<u32>) -> wasmtime::Result<Vec<Answer>> {
        let run = self.workflow_run()?;
        let mut answers = Vec::with_capacity(handles.len());
        // Every in-flight call first, so they all run at once.
        let mut waiting = None;
        for &h in &handles {
            match settle(&run, h).await {
                Ok(a) => answers.push(a),
                Err(Stop::Wait) => {
                    waiting = Some(Stop::Wait);
                    answers.push(Err(GuestError::Internal(String::new())));
                }
                Err(stop) => return Err(stopped(&stop)),
            }
        }
        match waiting {
            Some(stop) => Err(stopped(&run.lock().halt(stop))),
            None => Ok(answers),
        }
    }

    async fn await_any(&mut self, handles: Vec<u32>) -> wasmtime::Result<(u32, Answer)> {
        let run = self.workflow_run()?;
        let detail = handles.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let (index, calls) = {
            let mut r = run.lock();
            let index = match r.next(StepKind::AwaitAny, &detail, &[]) {
                Ok(Next::Recorded(i) | Next::New(i)) => i,
                Err(stop) => return Err(stopped(&stop)),
            };
            if let Some(StepResult::Winner(w)) = r.steps[index].result {
                (index, Err(w))
            } else if r.steps[index].result == Some(StepResult::Cancelled) {
                return Ok((0, Err(r.cancelled())));
            } else {
            // The first (in `handles` order) that has finished wins.
            for (pos, &h) in handles.iter().enumerate() {
                if let Some(result) = r.steps.get(h as usize).and_then(|s| s.result.clone())
                    && let Some(a) = answer(&result)
                {
                    r.resolve(index, StepResult::Winner(pos as u32));
                    return Ok((pos as u32, a));
                }
            }
            let calls: Vec<(u32, u32, crate::workflow::run::InFlight)> =
                handles.iter().enumerate().filter_map(|(pos, &h)| r.in_flight.get(&h).map(|c| (pos as u32, h, c.clone()))).collect();
            if calls.is_empty() {
                if !r.record.cancel_requested {
                    return Err(stopped(&r.halt(Stop::Wait)));
                }
                // Cancelled while it waits: every handle's wait ends too.
                for &h in &handles {
                    if r.steps.get(h as usize).is_some_and(|s| s.result.is_none()) {
                        cancel_wait(&mut r, h);
                    }
                }
                r.resolve(index, StepResult::Cancelled);
                return Ok((0, Err(r.cancelled())));
            }
            (index, Ok(calls))
            }
        };
        let calls = match calls {
            Ok(calls) => calls,
            Err(w) => {
                // Recorded: the winner's reply is in the history.
                let seq = handles.get(w as usize).copied().unwrap_or(u32::MAX);
                return match settle(&run, seq).await {
                    Ok(a) => Ok((w, a)),
                    Err(stop) => Err(stopped(&stop)),
                };
            }
        };
        // The others keep running (they stay in flight for a later wait).
        let (outcome, i, _rest) = futures::future::select_all(calls.iter().map(|(_, _, c)| c.clone())).await;
        let (pos, seq) = (calls[i].0, calls[i].1);
        let mut r = run.lock();
        r.in_flight.remove(&seq);
        let result = match outcome {
            Ok(reply) => StepResult::Ok(reply),
            Err(e) => StepResult::Err(WorkflowError::from(&e)),
        };
        if r.over_budget(&result) {
            return Err(stopped(&r.halt(Stop::Checkpoint)));
        }
        r.resolve(seq as usize, result.clone());
        r.resolve(index, StepResult::Winner(pos));
        Ok((pos, answer(&result).unwrap_or_else(|| Err(GuestError::Internal("no reply".into())))))
    }

    fn sleep(&mut self, ms: u64) -> wasmtime::Result<Result<(), GuestError>> {
        let run = self.workflow_run()?;
        let mut r = run.lock();
        let index = match r.next(StepKind::Timer, "", ms.to_string().as_bytes()) {
            Ok(Next::Recorded(i) | Next::New(i)) => i,
            Err(stop) => return Err(stopped(&stop)),
        };
        match r.steps[index].result.clone() {
            Some(StepResult::Fired) => return Ok(Ok(())),
            Some(StepResult::Cancelled) => return Ok(Err(r.cancelled())),
            Some(other) => return Err(stopped(&r.halt(Stop::Diverged(format!("timer step {index} holds {other:?}"))))),
            None => {}
        }
        if r.record.cancel_requested {
            r.resolve(index, StepResult::Cancelled);
            return Ok(Err(r.cancelled()));
        }
        let now = crate::storage::now_ms();
        let due = match r.steps[index].due_ms {
            Some(due) => due,
            None => {
                let due = now.saturating_add(ms.min(i64::MAX as u64) as i64);
                r.steps[index].due_ms = Some(due);
                if ms > 0 {
                    r.timers.push((index as u32, due));
                }
                due
            }
        };
        if due <= now {
            r.resolve(index, StepResult::Fired);
            return Ok(Ok(()));
        }
        Err(stopped(&r.halt(Stop::Wait)))
    }

    fn wait_signal(&mut self, name: String, timeout_ms: Option<u64>) -> wasmtime::Result<Result<Option<Vec<u8>>, GuestError>> {
        let run = self.workflow_run()?;
        let mut r = run.lock();
        let input = timeout_ms.map(|t| t.to_string()).unwrap_or_default();
        let index = match r.next(StepKind::Signal, &name, input.as_bytes()) {
            Ok(Next::Recorded(i) | Next::New(i)) => i,
            Err(stop) => return Err(stopped(&stop)),
        };
        match r.steps[index].result.clone() {
            Some(StepResult::Signal(payload)) => return Ok(Ok(Some(payload))),
            Some(StepResult::TimedOut) => return Ok(Ok(None)),
            Some(StepResult::Cancelled) => return Ok(Err(r.cancelled())),
            Some(other) => return Err(stopped(&r.halt(Stop::Diverged(format!("signal step {index} holds {other:?}"))))),
            None => {}
        }
        if let Some(pos) = r.record.signals.iter().position(|s| s.name == name) {
            let signal = r.record.signals.remove(pos).map(|s| s.payload).unwrap_or_default();
            r.resolve(index, StepResult::Signal(signal.clone()));
            return Ok(Ok(Some(signal)));
        }
        if r.record.cancel_requested {
            r.resolve(index, StepResult::Cancelled);
            return Ok(Err(r.cancelled()));
        }
        let now = crate::storage::now_ms();
        if let Some(timeout) = timeout_ms
            && r.steps[index].due_ms.is_none()
        {
            let due = now.saturating_add(timeout.min(i64::MAX as u64) as i64);
            r.steps[index].due_ms = Some(due);
            r.timers.push((index as u32, due));
        }
        if r.steps[index].due_ms.is_some_and(|due| due <= now) {
            r.resolve(index, StepResult::TimedOut);
            return Ok(Ok(None));
        }
        Err(stopped(&r.halt(Stop::Wait)))
    }

    fn now(&mut self) -> wasmtime::Result<u64> {
        let run = self.workflow_run()?;
        let value = run.lock().value(StepKind::Clock, "now", || crate::storage::now_ms().max(0) as u64);
        value.map_err(|stop| stopped(&stop))
    }

    fn random(&mut self) -> wasmtime::Result<u64> {
        let run = self.workflow_run()?;
        let value = run.lock().value(StepKind::Random, "", fresh_random);
        value.map_err(|stop| stopped(&stop))
    }

    fn set_status(&mut self, status: Vec<u8>) {
        if let Execution::Workflow(run) = &self.execution {
            run.lock().record.custom_status = Some(status);
        }
    }

    fn continue_as_new(&mut self, input: Vec<u8>) -> wasmtime::Result<()> {
        let run = self.workflow_run()?;
        let stop = run.lock().halt(Stop::ContinueAsNew(input));
        Err(stopped(&stop))
    }

    fn is_cancelled(&mut self) -> bool {
        match &self.execution {
            Execution::Workflow(run) => run.lock().saw_cancellation,
            _ => false,
        }
    }

    fn id(&mut self) -> String {
        match &self.execution {
            Execution::Workflow(run) => run.lock().record.id.clone(),
            _ => self.actor.key().to_string(),
        }
    }
}

/// A random number for a live `random` step.
fn fresh_random() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one((n, crate::storage::now_ms()))
}
