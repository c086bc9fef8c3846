//! One turn of an actor, from its message to its enqueued commit: the
//! instance made ready (hot swap, reload, rebuild), the handler run under
//! its limits, the effects turned into a commit, snapshots.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::FutureExt;

use super::state::ensure_state_loaded;
use super::{ActivationShared, Core, JournalCursor, Live, TurnEffects};
use crate::commit::{PendingCommit, SnapshotToSave, TurnOutput};
use crate::committer::DependencyFlag;
use crate::engine::coarse_now_ms;
use crate::error::{ActorError, ErrorKind};
use crate::id::ChainId;
use crate::instance::{HandlerFailure, instantiate, run_handler, turn_deadline};
use crate::metrics::{TurnOutcome, outcome_of};
use crate::registry::LoadedVersion;
use crate::storage::{InboxEntry, Snapshot, TurnCommit};
use crate::turn::{JobScope, MAX_TURN_BYTES};
use crate::directory::{ActorDirectory, Placement};
use crate::{Control, Host, InboxTurn, Request};

impl Core {
    /// Runs one turn with its bookkeeping; a host panic fails only this turn.
    pub(super) async fn run_turn(&mut self, host: &Host, shared: &Arc<ActivationShared>, request: Request) -> Result<TurnOutput, ActorError> {
        let started = Instant::now();
        let actor = request.target.clone();
        let lane = match request.control.as_deref() {
            Some(Control::Inbox(InboxTurn { lane: Some(lane), .. })) => Some(lane.clone()),
            _ => None,
        };
        if let Some(lane) = &lane
            && (lane.failed.load(Ordering::Acquire) || (!lane.first && shared.state.lock().commit_flag.load(Ordering::Acquire)))
        {
            // An earlier message of the lane failed, or the commit of one
            // this turn would build on did: it runs later, after that one.
            lane.failed.store(true, Ordering::Release);
            return Err(ActorError::unavailable(format!("not run: an earlier message of its lane to {actor} failed")));
        }
        let result = match std::panic::AssertUnwindSafe(self.turn(host, shared, request, started)).catch_unwind().await {
            Ok(result) => result,
            Err(_) => {
                self.live = None;
                shared.state.lock().stale = true;
                tracing::error!(actor = %actor, "a turn panicked in the host; instance discarded");
                Err(ActorError::internal(format!("the host failed while running a turn of {actor}")))
            }
        };
        if let (Some(lane), Err(_)) = (&lane, &result) {
            lane.failed.store(true, Ordering::Release);
        }
        // A pending turn is counted when its commit resolves.
        match &result {
            Ok(TurnOutput::Pending(_)) => {}
            Ok(TurnOutput::Done(_)) => host.metrics().record_turn(TurnOutcome::ok, started.elapsed()),
            Err(e) => host.metrics().record_turn(outcome_of(e.kind), started.elapsed()),
        }
        shared.turns.fetch_add(1, Ordering::Relaxed);
        shared.last_active_ms.store(coarse_now_ms(), Ordering::Relaxed);
        result
    }

    /// One turn: the instance made ready, a repeat of a handled message
    /// answered from the inbox, the handler run, its effects committed.
    async fn turn(
        &mut self,
        host: &Host,
        shared: &Arc<ActivationShared>,
        mut request: Request,
        started: Instant,
    ) -> Result<TurnOutput, ActorError> {
        if Instant::now() >= request.deadline {
            return Err(ActorError::timeout(format!(
                "message to {} `{}` (call chain {}) passed its deadline in the mailbox before it ran",
                request.target, request.method, request.chain
            )));
        }
        let version = self.make_ready(host, shared, &request).await?;
        let control = request.control.take().map(|c| *c);
        if version.info.manifest.is_stateless_worker() {
            refuse_durable_control(&request, control.as_ref())?;
        }
        if let Some(Control::Snapshot) = control {
            let version = self.snapshot_on_demand(host, shared, &version).await?;
            return Ok(TurnOutput::Done(serde_json::to_vec(&serde_json::json!({ "version": version })).unwrap_or_default()));
        }
        if let Some(Control::Inbox(InboxTurn { sender, message_id, check: true, .. })) = &control
            && let Some(reply) = handled_already(host, shared, sender, message_id).await?
        {
            return Ok(TurnOutput::Done(reply));
        }
        if version.pre.is_workflow() {
            // The host drives a workflow's instance itself (see `crate::workflow`).
            let opened = open_turn(shared, None, control, request.chain);
            let result = crate::workflow::driver::turn(host, shared, &request, &version).await;
            let effects = close_turn(shared, None);
            let reply = result?;
            return self.commit_turn(host, shared, &request, &version, EndedTurn { effects, opened, reply }, started).await;
        }
        let Some(live) = self.live.as_mut() else { unreachable!("made ready above") };
        let event_sourced = live.bindings.aggregate.is_some();
        let opened = open_turn(shared, Some(live), control, request.chain);
        let result = run_handler(live, &request, turn_deadline(&request, &version)).await;
        let effects = close_turn(shared, Some(live));
        match result {
            Ok(reply) => self.commit_turn(host, shared, &request, &version, EndedTurn { effects, opened, reply }, started).await,
            Err(HandlerFailure::Returned(e)) => {
                // An SDK actor folds its events as it appends them: after a
                // failed turn its memory is ahead of its journal.
                if event_sourced && !effects.events.is_empty() {
                    self.live = None;
                }
                Err(e)
            }
            Err(HandlerFailure::Broken(e)) => {
                // The instance may be mid-update: never run it again.
                self.live = None;
                Err(e)
            }
        }
    }

    /// Makes the live instance ready for a turn on the active version:
    /// dropped after a failed commit or a hot swap, the state reloaded if
    /// stale, a new instance made (and an event-sourced one rebuilt) when
    /// there is none. Returns the version it runs.
    async fn make_ready(&mut self, host: &Host, shared: &Arc<ActivationShared>, request: &Request) -> Result<Arc<LoadedVersion>, ActorError> {
        let version = host.registry().active_cached(request.target.actor_type(), &mut self.version)?;
        if version.info.manifest.is_stateless_worker() {
            // No directory entry and nothing to load: a worker keeps no state.
            let mut state = shared.state.lock();
            state.loaded = true;
            state.stale = false;
        } else if let Some(directory) = host.directory() {
            self.claim(directory.as_ref(), shared).await?;
        }
        let stale = {
            let mut state = shared.state.lock();
            if state.commit_flag.load(Ordering::Acquire) {
                // A commit failed: its dependents fail with it; start afresh.
                state.commit_flag = DependencyFlag::default();
                state.stale = true;
                state.discard_instance = true;
            }
            if std::mem::take(&mut state.discard_instance) {
                self.live = None;
            }
            state.stale
        };
        if self.live.as_ref().is_some_and(|l| l.version != version.info.version) {
            // Hot swap: the next turn runs on the new code with the same state.
            self.live = None;
        }
        if stale || self.live.is_none() {
            // About to read the store: first let every commit already
            // enqueued for this actor land (or fail).
            await_commits_in_flight(host, shared).await;
        }
        if self.live.is_some() || version.pre.is_workflow() {
            // A workflow runs on a fresh instance per turn, made by its driver.
            ensure_state_loaded(host, shared).await?;
            return Ok(version);
        }
        // Activation: read the state and create the instance at once; the
        // read waits on the store while the instance is built here.
        let (loaded, instance) = tokio::join!(ensure_state_loaded(host, shared), instantiate(host, shared, &version, 0));
        loaded?;
        let live = match instance {
            Err(e) if e.kind == ErrorKind::Unavailable => {
                // Out of room for instances: shed the oldest idle
                // activations (their state is durable) and try once more.
                let shed = host.shed_idle_activations();
                tracing::warn!(actor = %shared.id, shed, "activation capacity reached; shed idle actors");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                instantiate(host, shared, &version, 0).await?
            }
            other => other?,
        };
        let live = if live.bindings.aggregate.is_some() { self.rebuild(host, shared, &version, live).await? } else { live };
        self.live = Some(live);
        shared.version.store(version.info.version, Ordering::Relaxed);
        Ok(version)
    }

    /// In a cluster: makes sure this host serves the actor. A host that
    /// lost its lease serves nothing; a new incarnation of the host (it
    /// was declared dead meanwhile) drops the instance and the cache, which
    /// may be stale; an activation without a claim claims its actor (before
    /// it reads the state: a takeover waits for the old owner's last
    /// commit), or answers with the host that serves it.
    async fn claim(&mut self, directory: &dyn ActorDirectory, shared: &ActivationShared) -> Result<(), ActorError> {
        // One reading of lease and incarnation: read apart, a rejoin in
        // between could pass a claim of the old incarnation as current.
        let standing = directory.standing();
        let held = {
            let mut state = shared.state.lock();
            let lost = match standing {
                None => true,
                Some(incarnation) => state.claim.is_some_and(|(claimed_under, _)| claimed_under != incarnation),
            };
            if lost {
                state.claim = None;
                state.stale = true;
                state.journal.loaded = false;
                self.live = None;
            }
            state.claim.is_some()
        };
        let Some(incarnation) = standing else {
            return Err(ActorError::unavailable(format!(
                "this host's cluster lease has lapsed: it serves no actors until it renews it ({} is not served here now)",
                shared.id
            )));
        };
        if held {
            return Ok(());
        }
        match directory.claim(&shared.id, incarnation).await? {
            Placement::Here { epoch } => {
                shared.state.lock().claim = Some((incarnation, epoch));
                Ok(())
            }
            Placement::Elsewhere { host, api } => {
                Err(ActorError::unavailable(format!("{} is served by host {host} (its API: {api}); call it there", shared.id)))
            }
        }
    }

    /// Ends a turn whose handler succeeded: a snapshot if one is due, the
    /// inbox entry, and the commit of its effects.
    async fn commit_turn(
        &mut self,
        host: &Host,
        shared: &Arc<ActivationShared>,
        request: &Request,
        version: &LoadedVersion,
        ended: EndedTurn,
        started: Instant,
    ) -> Result<TurnOutput, ActorError> {
        let EndedTurn { effects, opened, reply } = ended;
        if reply.len() > MAX_TURN_BYTES {
            return Err(ActorError::limit_exceeded(format!(
                "the reply of {} `{}` is {} bytes; a reply may be at most {MAX_TURN_BYTES} bytes",
                shared.id,
                request.method,
                reply.len()
            )));
        }
        if version.info.manifest.is_stateless_worker()
            && let Some(what) = effects.durable()
        {
            return Err(ActorError::rejected(format!(
                "{} is a stateless worker and keeps nothing, but its turn `{}` wrote {what}: nothing was committed \
                 (several activations of one id run at once; keep state in a stateful actor and call it)",
                shared.id, request.method
            )));
        }
        let event_sourced = self.live.as_ref().is_some_and(|l| l.bindings.aggregate.is_some());
        let snapshot = if event_sourced {
            let new_events = effects.events.len() as u64;
            let (head, due) = {
                let state = shared.state.lock();
                (state.journal.version + new_events, state.journal.since_snapshot + new_events >= version.info.manifest.snapshot_every)
            };
            if (effects.snapshot_requested || due) && head > 0 { self.take_snapshot(shared, version, head).await } else { None }
        } else {
            None
        };
        let inbox = opened.inbox.map(|(sender, message_id)| InboxEntry { sender, message_id, reply: reply.clone(), at_ms: crate::storage::now_ms() });
        let (expected_version, fence) = {
            let state = shared.state.lock();
            (state.journal.version, state.claim.map(|(_, epoch)| epoch))
        };
        let (mut commit, tells) = effects.into_commit(shared.id.clone(), expected_version, inbox, fence);
        // A job turn with no other effect leaves its completion to the runner.
        if let Some(flag) = opened.effect_free_job
            && tells.is_empty()
            && snapshot.is_none()
        {
            let completion = commit.job_done.take();
            if commit.is_empty() {
                flag.store(true, Ordering::Release);
            } else {
                commit.job_done = completion;
            }
        }
        self.enqueue_commit(host, shared, commit, AfterCommit { reply, tells, snapshot }, started).await
    }

    /// Rebuilds a fresh instance of an event-sourced actor from its latest
    /// snapshot and the events after it. If `restore` traps, the snapshot
    /// is skipped on a second fresh instance.
    async fn rebuild(&mut self, host: &Host, shared: &Arc<ActivationShared>, version: &LoadedVersion, mut live: Live) -> Result<Live, ActorError> {
        let timeout = version.info.manifest.turn_timeout;
        let rebuilt = match crate::aggregate::rebuild(host, &mut live, &shared.id, crate::aggregate::SnapshotUse::Any, u64::MAX, timeout).await {
            Err(crate::aggregate::RebuildError::SnapshotBroke(e)) => {
                tracing::warn!(actor = %shared.id, error = %e, "restoring the snapshot trapped; replaying the whole journal on a fresh instance");
                live = instantiate(host, shared, version, 0).await?;
                crate::aggregate::rebuild(host, &mut live, &shared.id, crate::aggregate::SnapshotUse::None, u64::MAX, timeout).await
            }
            other => other,
        }
        .map_err(crate::aggregate::RebuildError::into_actor_error)?;
        let mut state = shared.state.lock();
        state.journal = JournalCursor { loaded: true, version: rebuilt.version, since_snapshot: rebuilt.version - rebuilt.snapshot_version };
        state.generation += 1;
        Ok(live)
    }

    /// Calls the live instance's `snapshot` export; the result covers
    /// version `head` (this turn's events included). A failure is logged:
    /// the next snapshot is tried after more events.
    async fn take_snapshot(&mut self, shared: &Arc<ActivationShared>, version: &LoadedVersion, head: u64) -> Option<SnapshotToSave> {
        let live = self.live.as_mut()?;
        let deadline = Instant::now() + version.info.manifest.turn_timeout;
        match crate::aggregate::call_snapshot(live, deadline, &shared.id).await {
            Ok(data) => {
                let snapshot = Snapshot { version: head, component_version: version.info.version, taken_at_ms: crate::storage::now_ms(), data };
                Some(SnapshotToSave { snapshot, retention: version.info.manifest.retention })
            }
            Err(HandlerFailure::Returned(e)) => {
                tracing::warn!(actor = %shared.id, error = %e, "the actor refused a snapshot; the next one is tried after more events");
                None
            }
            Err(HandlerFailure::Broken(e)) => {
                tracing::warn!(actor = %shared.id, error = %e, "taking a snapshot broke the instance; it is rebuilt before the next turn");
                shared.state.lock().discard_instance = true;
                None
            }
        }
    }

    /// Snapshots an event-sourced actor now, once every commit before
    /// this turn is durable; returns the version it covers.
    async fn snapshot_on_demand(&mut self, host: &Host, shared: &Arc<ActivationShared>, version: &LoadedVersion) -> Result<u64, ActorError> {
        if self.live.as_ref().is_some_and(|l| l.bindings.aggregate.is_none()) {
            return Err(ActorError::rejected(format!(
                "{} is not event-sourced: its component does not export `{}`",
                shared.id,
                crate::capabilities::AGGREGATE_EXPORT
            )));
        }
        let barrier = host
            .committer()
            .enqueue(TurnCommit::state_only(shared.id.clone(), Vec::new()), None)
            .await
            .map_err(|e| ActorError::unavailable(e.to_string()))?;
        if barrier.await.is_err() || shared.state.lock().commit_flag.load(Ordering::Acquire) {
            return Err(ActorError::unavailable(format!("an earlier turn of {} failed to commit; snapshot it again", shared.id)));
        }
        let head = shared.state.lock().journal.version;
        if head == 0 {
            return Ok(0);
        }
        let Some(SnapshotToSave { snapshot, retention }) = self.take_snapshot(shared, version, head).await else {
            return Err(ActorError::internal(format!("{} could not produce a snapshot (see the host log)", shared.id)));
        };
        host.store().save_snapshot(&shared.id, &snapshot, retention).await?;
        shared.state.lock().journal.since_snapshot = 0;
        host.metrics().record_snapshot();
        Ok(head)
    }

    /// Applies a successful turn's effects to the cache and enqueues their
    /// commit; the actor is free for its next turn as soon as this returns.
    /// A turn that wrote nothing is done at once, unless an earlier commit
    /// it may have read from is still in flight: then it waits behind it
    /// (an empty commit is a barrier).
    async fn enqueue_commit(
        &mut self,
        host: &Host,
        shared: &Arc<ActivationShared>,
        commit: TurnCommit,
        after: AfterCommit,
        started: Instant,
    ) -> Result<TurnOutput, ActorError> {
        let AfterCommit { reply, tells, snapshot } = after;
        if commit.is_empty() && shared.commits_in_flight.load(Ordering::Acquire) == 0 {
            for tell in tells {
                if let Err(e) = host.tell_request(tell) {
                    tracing::warn!(actor = %shared.id, error = %e, "a message told during a committed turn could not be delivered");
                }
            }
            return Ok(TurnOutput::Done(reply));
        }
        let schedules_jobs = !commit.jobs.is_empty();
        let sends_messages = !commit.messages.is_empty();
        let event_count = commit.journal.as_ref().map_or(0, |j| j.events.len() as u64);
        // The undo needs each written key; the values go to the store.
        let written: Vec<(String, Option<Vec<u8>>)> = commit.state.iter().map(|w| (w.key.clone(), w.value.clone())).collect();
        let flag = shared.state.lock().commit_flag.clone();
        let outcome = host.committer().enqueue(commit, Some(flag)).await.map_err(|e| {
            self.live = None;
            ActorError::unavailable(format!("the turn of {} ran but could not be committed, so it did not happen: {e}", shared.id))
        })?;
        // Enqueued: from here on, no await until the actor is released, so
        // the cache and the queue cannot disagree.
        let mut state = shared.state.lock();
        let undo: Vec<(String, Option<Vec<u8>>)> = written
            .into_iter()
            .map(|(key, value)| {
                let previous = match value {
                    Some(v) => state.committed.insert(key.clone(), v),
                    None => state.committed.remove(&key),
                };
                (key, previous)
            })
            .collect();
        state.journal.version += event_count;
        state.journal.since_snapshot = if snapshot.is_some() { 0 } else { state.journal.since_snapshot + event_count };
        state.enqueued += 1;
        let (seq, generation) = (state.enqueued, state.generation);
        drop(state);
        shared.commits_in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(TurnOutput::Pending(PendingCommit {
            outcome,
            shared: shared.clone(),
            reply,
            tells,
            undo,
            events: event_count,
            seq,
            generation,
            snapshot,
            schedules_jobs,
            sends_messages,
            started,
        }))
    }
}

/// What waits for a turn's commit: its reply, the messages it told, and a
/// snapshot taken right after it.
struct AfterCommit {
    reply: Vec<u8>,
    tells: Vec<Request>,
    snapshot: Option<SnapshotToSave>,
}

/// A turn whose handler returned `reply`: what it buffered and set up.
struct EndedTurn {
    effects: TurnEffects,
    opened: OpenedTurn,
    reply: Vec<u8>,
}

/// What a turn's control message set up for its end: the inbox entry to
/// write (sender, message id) and a job run's effect-free flag.
struct OpenedTurn {
    inbox: Option<(String, String)>,
    effect_free_job: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Refuses a stateless worker a turn that needs an inbox or a checkpoint:
/// with several activations per id and no store of its own, it could not
/// keep their promise (an idempotent ask or an outbox delivery is answered
/// once per id; a projection's checkpoint moves with its turns).
fn refuse_durable_control(request: &Request, control: Option<&Control>) -> Result<(), ActorError> {
    let what = match control {
        Some(Control::Inbox(_)) => "an idempotency key or an outbox delivery (each is handled once per actor, and a worker has no inbox)",
        Some(Control::Checkpoint(_)) => "a projection's events (a projection's checkpoint needs one writer)",
        _ => return Ok(()),
    };
    Err(ActorError::bad_request(format!(
        "{} is a stateless worker and cannot take {what}; call it without, or use a stateful actor",
        request.target
    )))
}

/// Opens the turn's effect layer and scope: the job or message it handles,
/// and its call chain (re-entrant calls on it join this turn).
fn open_turn(shared: &ActivationShared, mut live: Option<&mut Live>, control: Option<Control>, chain: ChainId) -> OpenedTurn {
    let mut opened = OpenedTurn { inbox: None, effect_free_job: None };
    let mut state = shared.state.lock();
    // Reuse the vector: no allocation per turn.
    state.layers.clear();
    state.layers.push(TurnEffects::default());
    match control {
        Some(Control::Checkpoint(advance)) => state.layers[0].checkpoint = Some(advance),
        Some(Control::Job(job)) => {
            if let Some(live) = live.as_mut() {
                live.store.data_mut().scope.job =
                    Some(JobScope { id: job.completion.id.clone(), attempt: job.attempt, lease: job.completion.lease.clone() });
            }
            state.layers[0].job_done = Some(job.completion);
            opened.effect_free_job = Some(job.effect_free);
        }
        Some(Control::Inbox(InboxTurn { sender, message_id, .. })) => {
            if let Some(live) = live.as_mut() {
                live.store.data_mut().scope.message = Some(message_id.clone());
            }
            opened.inbox = Some((sender, message_id));
        }
        _ => {}
    }
    shared.busy_chain.set(chain);
    opened
}

/// Closes the turn's scope and chain; its effects.
fn close_turn(shared: &ActivationShared, live: Option<&mut Live>) -> TurnEffects {
    if let Some(live) = live {
        live.store.data_mut().scope.job = None;
        live.store.data_mut().scope.message = None;
    }
    // Under the state lock, so a late nested turn either merged before
    // this or sees the chain closed and discards its effects.
    let mut state = shared.state.lock();
    shared.busy_chain.set(ChainId::NONE);
    state.layers.drain(..).next().unwrap_or_default()
}

/// Whether this actor handled message `message_id` of `sender` already:
/// its recorded reply if so. The actor's commits in flight land first,
/// so a repeat right behind the first delivery sees its entry.
async fn handled_already(host: &Host, shared: &ActivationShared, sender: &str, message_id: &str) -> Result<Option<Vec<u8>>, ActorError> {
    await_commits_in_flight(host, shared).await;
    let reply = host.store().inbox_reply(&shared.id, sender, message_id).await?;
    if reply.is_some() {
        // The first delivery committed, perhaps after its outcome was
        // reported unknown and the cache reloaded: reload again before the
        // next turn rather than serve a cache without it.
        shared.state.lock().stale = true;
    }
    Ok(reply)
}

/// Waits until every commit this actor enqueued so far has landed or
/// failed (an empty commit behind them is a barrier). False when the
/// barrier itself could not be enqueued or failed.
async fn await_commits_in_flight(host: &Host, shared: &ActivationShared) -> bool {
    if shared.commits_in_flight.load(Ordering::Acquire) == 0 {
        return true;
    }
    match host.committer().enqueue(TurnCommit::state_only(shared.id.clone(), Vec::new()), None).await {
        Ok(barrier) => barrier.await.is_ok(),
        Err(_) => false,
    }
}
