//! One turn of a workflow instance: the message applied to its record,
//! the code run against its history, and what it ran written into the
//! turn's effects (committed like any actor's: together or not at all).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::run::{Stop, WorkflowRun};
use super::{
    ParentStep, RECORD_KEY, SignalRequest, StartRequest, Step, StepEvent, StepKind, StepResult, WorkflowError, WorkflowRecord,
    WorkflowStatus, method, payload_json, step_key,
};
use crate::activation::ActivationShared;
use crate::instance::{classify_guest_call, instantiate_as, prepare_guest_call};
use crate::registry::LoadedVersion;
use crate::storage::outbox::{Destination, OutboxMessage};
use crate::turn::Execution;
use crate::{ActorError, Host, Request};

/// How a run of the code ended.
pub(crate) enum Ended {
    /// The host stopped it (a wait, a checkpoint, a divergence…).
    Stopped(Stop),
    /// `run` returned.
    Returned(Result<Vec<u8>, ActorError>),
    /// It trapped or ran out of time.
    Broken(ActorError),
}

/// Runs one turn of the workflow instance behind `shared` (its effects go
/// to the turn's open layer); the reply is the instance's status.
pub(crate) async fn turn(host: &Host, shared: &Arc<ActivationShared>, request: &Request, active: &LoadedVersion) -> Result<Vec<u8>, ActorError> {
    let id = request.target.key().to_string();
    let record = read_record(shared)?;
    let mut pending: Option<(u32, Option<StepResult>)> = None;
    let mut fresh = false;
    let mut record = match (request.method.as_str(), record) {
        (method::STATUS, record) => return status_reply(&request.target, record.as_ref()),
        (method::HISTORY, record) => {
            let record = record.ok_or_else(|| no_instance(&request.target))?;
            return Ok(serde_json::to_vec(&history_json(&record, &load_steps(shared, &record)?)).unwrap_or_default());
        }
        (method::START, existing) => {
            let start: StartRequest = parse(request)?;
            match existing {
                Some(mut record) => {
                    // Idempotent: the instance that exists. A parent that
                    // joins it hears its result.
                    if let Some(parent) = start.parent
                        && !record.parents.contains(&parent)
                    {
                        if record.status == WorkflowStatus::Running {
                            record.parents.push(parent);
                            write_record(shared, &record)?;
                        } else {
                            notify_parent(shared, &record, &parent);
                        }
                    }
                    return status_reply(&request.target, Some(&record));
                }
                None => {
                    fresh = true;
                    new_record(&request.target, active, start)
                }
            }
        }
        (_, None) => return Err(no_instance(&request.target)),
        (method::SIGNAL, Some(mut record)) => {
            let signal: SignalRequest = parse(request)?;
            if record.status != WorkflowStatus::Running {
                return Err(ActorError::conflict(format!(
                    "workflow {id} is {}: signal `{}` was not delivered",
                    record.status.as_str(),
                    signal.name
                )));
            }
            record.signals.push_back(super::PendingSignal { name: signal.name, payload: signal.payload });
            record
        }
        (method::CANCEL, Some(mut record)) => {
            if record.status != WorkflowStatus::Running || record.cancel_requested {
                return status_reply(&request.target, Some(&record));
            }
            record.cancel_requested = true;
            record
        }
        (method::TIMER | method::CHILD_DONE | method::WAKE, Some(record)) => {
            let event: Option<StepEvent> = if request.method == method::WAKE { None } else { Some(parse(request)?) };
            let stale = event.as_ref().is_some_and(|e| e.run != record.run);
            if record.status != WorkflowStatus::Running || stale {
                // A timer of an earlier run, a result after the end: nothing to do.
                return status_reply(&request.target, Some(&record));
            }
            pending = event.map(|e| (e.seq, e.result));
            record
        }
        (other, Some(_)) => {
            return Err(ActorError::bad_request(format!(
                "{} is a workflow instance; it takes no method `{other}`: use /v1/workflows (`quark workflow`)",
                request.target
            )));
        }
    };
    let mut steps = load_steps(shared, &record)?;
    let mut resolved = None;
    if let Some((seq, result)) = pending
        && let Some(step) = steps.get_mut(seq as usize)
        && step.result.is_none()
    {
        step.result = match (step.kind, result) {
            (StepKind::Timer, _) => Some(StepResult::Fired),
            (StepKind::Signal, _) => Some(StepResult::TimedOut),
            (StepKind::Child, Some(result)) => Some(result),
            _ => None,
        };
        step.done_ms = Some(crate::storage::now_ms());
        resolved = Some(seq);
    }
    record.updated_ms = crate::storage::now_ms();
    let before = if fresh { None } else { Some(record.status) };
    let (run, ended) = execute(host, shared, record, steps, false).await?;
    // `execute` dropped the instance, the only other holder of the run.
    let mut run = Arc::try_unwrap(run)
        .map(Mutex::into_inner)
        .map_err(|_| ActorError::internal(format!("workflow {id}: its run is still shared after its instance ended")))?;
    if let Some(seq) = resolved {
        run.dirty.insert(seq);
    }
    finish(host, shared, &request.target, &mut run, ended, before).await?;
    status_reply(&request.target, Some(&run.record))
}

/// Runs the code of `record`'s version on a fresh instance against
/// `steps`; `check_only` replays without going live.
pub(crate) async fn execute(
    host: &Host,
    shared: &Arc<ActivationShared>,
    record: WorkflowRecord,
    steps: Vec<Step>,
    check_only: bool,
) -> Result<(super::SharedRun, Ended), ActorError> {
    let loaded = host.load_component_version(&record.workflow_type, record.version).await?;
    if !loaded.pre.is_workflow() {
        return Err(ActorError::rejected(format!(
            "{} v{} is not a workflow (it does not export `{}`)",
            record.workflow_type,
            record.version,
            crate::capabilities::WORKFLOW_EXPORT
        )));
    }
    let turn_time = loaded.info.manifest.turn_timeout;
    let run = Arc::new(Mutex::new(WorkflowRun::new(record, steps, turn_time, check_only)));
    let input = run.lock().record.input.clone();
    let mut live = instantiate_as(host, shared, &loaded, 0, Execution::Workflow(run.clone())).await?;
    let deadline = Instant::now() + turn_time;
    live.store.data_mut().scope.deadline = deadline;
    prepare_guest_call(&mut live);
    let Some(export) = live.bindings.workflow.clone() else { unreachable!("checked: a workflow") };
    let outcome = tokio::time::timeout_at(deadline.into(), export.call_run(&mut live.store, &input)).await;
    let stop = run.lock().stop.clone();
    let what = format!("workflow {}", shared.id);
    let ended = match stop {
        Some(stop) => Ended::Stopped(stop),
        None => match classify_guest_call(outcome, live.store.data(), &what, crate::id::ChainId::NONE) {
            Ok(output) => Ended::Returned(Ok(output)),
            Err(crate::instance::HandlerFailure::Returned(e)) => Ended::Returned(Err(e)),
            Err(crate::instance::HandlerFailure::Broken(e)) => Ended::Broken(e),
        },
    };
    // The code finished with steps of its history never asked for.
    let ended = match ended {
        Ended::Returned(result) => {
            let r = run.lock();
            if r.cursor < r.steps.len() {
                Ended::Stopped(Stop::Diverged(format!(
                    "run {} finished after {} steps, but its history holds {}: the code no longer asks for step {} ({})",
                    r.record.run,
                    r.cursor,
                    r.steps.len(),
                    r.cursor,
                    r.steps[r.cursor].kind.as_str()
                )))
            } else {
                Ended::Returned(result)
            }
        }
        other => other,
    };
    drop(live);
    Ok((run, ended))
}

/// Writes what the run did into the turn's effects: its steps, its
/// record, its timers, the children it starts, the parents it answers.
async fn finish(
    host: &Host,
    shared: &Arc<ActivationShared>,
    actor: &crate::ActorId,
    run: &mut WorkflowRun,
    ended: Ended,
    before: Option<WorkflowStatus>,
) -> Result<(), ActorError> {
    let mut wake = false;
    match ended {
        Ended::Stopped(Stop::Wait | Stop::EndOfHistory) => {}
        Ended::Stopped(Stop::Checkpoint) => wake = true,
        Ended::Stopped(Stop::Diverged(message)) => {
            tracing::warn!(workflow = %actor, %message, "a workflow diverged from its history; it is stopped");
            fail(&mut run.record, WorkflowError { kind: "nondeterminism".into(), message });
        }
        Ended::Stopped(Stop::ContinueAsNew(input)) => {
            for seq in 0..run.steps.len() as u32 {
                write(shared, step_key(run.record.run, seq), None)?;
            }
            run.record.earlier_steps += run.steps.len() as u64;
            run.record.run += 1;
            run.record.input = input;
            run.steps.clear();
            run.dirty.clear();
            run.timers.clear();
            // Children this ended run asked for in its last turn are not
            // started: their results would name steps of the next run.
            run.children.clear();
            wake = true;
        }
        Ended::Returned(Ok(output)) => {
            run.record.status = WorkflowStatus::Completed;
            run.record.output = Some(output);
        }
        Ended::Returned(Err(e)) => {
            let cancelled = run.record.cancel_requested;
            fail(&mut run.record, WorkflowError::from(&e));
            if cancelled {
                run.record.status = WorkflowStatus::Cancelled;
            }
        }
        Ended::Broken(e) => fail(&mut run.record, WorkflowError::from(&e)),
    }
    let record = &mut run.record;
    record.steps = run.steps.len() as u32;
    for &seq in &run.dirty {
        if let Some(step) = run.steps.get(seq as usize) {
            write(shared, step_key(record.run, seq), Some(to_json(step)))?;
        }
    }
    write_record(shared, record)?;
    let me = actor.to_string();
    for &(seq, due) in &run.timers {
        let event = StepEvent { run: record.run, seq, result: None };
        push_job(host, shared, actor, method::TIMER, to_json(&event), quark_core::jobs::When::At(due), format!("wf-timer-{}-{seq}", record.run))?;
    }
    if wake {
        let key = format!("wf-wake-{}-{}", record.run, record.steps);
        push_job(host, shared, actor, method::WAKE, b"{}".to_vec(), quark_core::jobs::When::Delay(0), key)?;
    }
    for (seq, workflow_type, id, input) in std::mem::take(&mut run.children) {
        let start = StartRequest { input, parent: Some(ParentStep { actor: me.clone(), run: record.run, seq }) };
        push_message(shared, &me, format!("{workflow_type}/{id}"), method::START, to_json(&start), format!("wf-child-{}-{seq}", record.run));
    }
    for child in std::mem::take(&mut run.cancel_children) {
        let id = format!("wf-cancel-{}-{child}", record.run);
        push_message(shared, &me, child, method::CANCEL, Vec::new(), id);
    }
    if record.status != WorkflowStatus::Running {
        for parent in record.parents.clone() {
            notify_parent(shared, record, &parent);
        }
    }
    if before != Some(record.status) {
        append_status_event(host, shared, record).await?;
    }
    Ok(())
}

fn fail(record: &mut WorkflowRecord, error: WorkflowError) {
    record.status = WorkflowStatus::Failed;
    record.error = Some(error);
}

/// Tells `parent` how its child `record` ended.
fn notify_parent(shared: &ActivationShared, record: &WorkflowRecord, parent: &ParentStep) {
    let result = match (&record.output, &record.error) {
        (_, Some(e)) => StepResult::Err(e.clone()),
        (Some(output), None) => StepResult::Ok(output.clone()),
        (None, None) => StepResult::Ok(Vec::new()),
    };
    let event = StepEvent { run: parent.run, seq: parent.seq, result: Some(result) };
    let me = format!("{}/{}", record.workflow_type, record.id);
    let id = format!("wf-done-{}-{}-{}", record.run, parent.run, parent.seq);
    push_message(shared, &me, parent.actor.clone(), method::CHILD_DONE, to_json(&event), id);
}

fn new_record(actor: &crate::ActorId, active: &LoadedVersion, start: StartRequest) -> WorkflowRecord {
    let now = crate::storage::now_ms();
    WorkflowRecord {
        id: actor.key().to_string(),
        workflow_type: actor.actor_type().to_string(),
        version: active.info.version,
        run: 1,
        input: start.input,
        status: WorkflowStatus::Running,
        output: None,
        error: None,
        custom_status: None,
        steps: 0,
        earlier_steps: 0,
        signals: Default::default(),
        cancel_requested: false,
        parents: start.parent.into_iter().collect(),
        seed: {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one((actor.as_str(), now))
        },
        created_ms: now,
        updated_ms: now,
    }
}

fn parse<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ActorError> {
    serde_json::from_slice(&request.payload)
        .map_err(|e| ActorError::bad_request(format!("the body of workflow `{}` for {} is not what it takes: {e}", request.method, request.target)))
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn no_instance(actor: &crate::ActorId) -> ActorError {
    ActorError::not_found(format!("no workflow {} of type {} was started", actor.key(), actor.actor_type()))
}

/// The value of `key` as this turn sees it.
fn read(shared: &ActivationShared, key: &str) -> Option<Vec<u8>> {
    let state = shared.state.lock();
    match state.layers.first().and_then(|l| l.writes.get(key)) {
        Some(v) => v.clone(),
        None => state.committed.get(key).cloned(),
    }
}

/// Buffers a state write in the turn's effects, charged to its byte limit.
fn write(shared: &ActivationShared, key: String, value: Option<Vec<u8>>) -> Result<(), ActorError> {
    let mut state = shared.state.lock();
    if state.layers.is_empty() {
        return Err(ActorError::timeout("this turn has already ended"));
    }
    crate::turn::charge(&mut state.layers, 0, key.len() + value.as_ref().map_or(0, Vec::len))?;
    state.layers[0].writes.insert(key, value);
    Ok(())
}

pub(crate) fn read_record(shared: &ActivationShared) -> Result<Option<WorkflowRecord>, ActorError> {
    read(shared, RECORD_KEY)
        .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| ActorError::internal(format!("the record of workflow {} is corrupt: {e}", shared.id))))
        .transpose()
}

fn write_record(shared: &ActivationShared, record: &WorkflowRecord) -> Result<(), ActorError> {
    write(shared, RECORD_KEY.to_string(), Some(to_json(record)))
}

/// The current run's history.
pub(crate) fn load_steps(shared: &ActivationShared, record: &WorkflowRecord) -> Result<Vec<Step>, ActorError> {
    (0..record.steps)
        .map(|seq| {
            let bytes = read(shared, &step_key(record.run, seq))
                .ok_or_else(|| ActorError::internal(format!("step {seq} of workflow {} is missing from its history", shared.id)))?;
            serde_json::from_slice(&bytes).map_err(|e| ActorError::internal(format!("step {seq} of workflow {} is corrupt: {e}", shared.id)))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn push_job(
    host: &Host,
    shared: &ActivationShared,
    actor: &crate::ActorId,
    job_method: &str,
    payload: Vec<u8>,
    when: quark_core::jobs::When,
    key: String,
) -> Result<(), ActorError> {
    if host.store().job_store().is_none() {
        return Err(ActorError::unavailable(format!(
            "a workflow's timers are durable jobs, which the {} store does not have",
            host.store().backend_name()
        )));
    }
    let request = quark_core::jobs::JobRequest {
        target: actor.clone(),
        method: job_method.to_string(),
        payload,
        when,
        time_zone: None,
        max_attempts: Some(quark_core::jobs::MAX_ATTEMPTS),
        backoff_ms: Some(200),
        max_backoff_ms: Some(60_000),
        timeout_ms: None,
        priority: 0,
        queue: None,
        idempotency_key: Some(key),
        catch_up: Default::default(),
    };
    let job = quark_core::jobs::plan_for(request, crate::storage::now_ms(), Some(actor.as_str()))?;
    let mut state = shared.state.lock();
    let layer = state.layers.first_mut().ok_or_else(|| ActorError::timeout("this turn has already ended"))?;
    if !layer.jobs.iter().any(|j| j.id == job.id) {
        layer.jobs.push(job);
    }
    Ok(())
}

fn push_message(shared: &ActivationShared, sender: &str, to: String, to_method: &str, payload: Vec<u8>, id: String) {
    let message = OutboxMessage {
        id,
        sender: sender.to_string(),
        destination: Destination::Actor { actor: to, method: to_method.to_string() },
        payload,
        event_type: None,
        created_at_ms: crate::storage::now_ms(),
    };
    if let Some(layer) = shared.state.lock().layers.first_mut()
        && !layer.messages.iter().any(|m| m.id == message.id)
    {
        layer.messages.push(message);
    }
}

/// Appends `workflow.{status}` to the instance's journal: the audit trail
/// of its life, and what `GET /v1/workflows?status=` reads.
async fn append_status_event(host: &Host, shared: &ActivationShared, record: &WorkflowRecord) -> Result<(), ActorError> {
    crate::turn::ensure_journal_loaded(host, shared).await?;
    let data = serde_json::json!({ "status": record.status.as_str(), "version": record.version, "run": record.run });
    let event = crate::capabilities::GuestEvent { event_type: format!("workflow.{}", record.status.as_str()), schema_version: 1, data: to_json(&data) };
    crate::turn::buffer_events(shared, 0, vec![event], Default::default())?;
    Ok(())
}

/// The status reply: what `GET /v1/workflows/{id}` shows.
fn status_reply(actor: &crate::ActorId, record: Option<&WorkflowRecord>) -> Result<Vec<u8>, ActorError> {
    let record = record.ok_or_else(|| no_instance(actor))?;
    Ok(to_json(&status_json(record)))
}

pub(crate) fn status_json(record: &WorkflowRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "type": record.workflow_type,
        "version": record.version,
        "status": record.status.as_str(),
        "output": record.output.as_deref().map(payload_json),
        "error": record.error,
        "custom_status": record.custom_status.as_deref().map(payload_json),
        "run": record.run,
        "steps": record.earlier_steps + u64::from(record.steps),
        "cancel_requested": record.cancel_requested,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
    })
}

pub(crate) fn history_json(record: &WorkflowRecord, steps: &[Step]) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            let result = match &s.result {
                None => serde_json::Value::Null,
                Some(StepResult::Ok(p)) => serde_json::json!({ "ok": payload_json(p) }),
                Some(StepResult::Signal(p)) => serde_json::json!({ "signal": payload_json(p) }),
                Some(StepResult::Err(e)) => serde_json::json!({ "error": e }),
                Some(StepResult::Value(v)) => serde_json::json!({ "value": v }),
                Some(StepResult::Winner(w)) => serde_json::json!({ "winner": w }),
                Some(other) => serde_json::to_value(other).unwrap_or_default(),
            };
            serde_json::json!({
                "step": s.seq,
                "kind": s.kind.as_str(),
                "detail": s.detail,
                "input": if s.input.is_empty() { serde_json::Value::Null } else { payload_json(&s.input) },
                "result": result,
                "at_ms": s.at_ms,
                "done_ms": s.done_ms,
                "due_ms": s.due_ms,
            })
        })
        .collect();
    serde_json::json!({ "id": record.id, "type": record.workflow_type, "run": record.run, "status": record.status.as_str(), "steps": steps })
}
