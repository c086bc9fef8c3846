//! Activations: one per live actor, each a task that runs its turns one at a
//! time from a FIFO mailbox, and the table that finds them.
//!
//! A message is sent under the table shard's lock and an idle activation is
//! removed under the same lock only when its mailbox is empty, so no message
//! can be stranded in a mailbox that nobody reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use wasmtime::Store;

use super::engine::coarse_now_ms;
use super::registry::LoadedVersion;
use super::turn::TurnState;
use super::instance::{HandlerFailure, instantiate, run_handler, turn_deadline};
use super::table::Handle;
use super::{Control, Request, WeakHost};
use crate::Host;
use crate::capabilities::ActorInstance;
use crate::error::{ActorError, ErrorKind};
use crate::id::{ActorId, ChainId};
use crate::metrics::{TurnOutcome, outcome_of};
use super::commit::{PendingCommit, TurnOutput};
use crate::committer::DependencyFlag;
use crate::storage::jobs::{JobCompletion, JobRecord};
use crate::storage::outbox::OutboxMessage;
use crate::storage::{CheckpointAdvance, EventRecord, InboxEntry, JournalAppend, Snapshot, StateWrite, TurnCommit};

/// Most re-entrant turns one actor runs at once; each has its own instance
/// and memory, so a runaway recursion must stop somewhere.
const MAX_NESTED_TURNS: usize = 8;

/// The reply to one message.
pub(crate) type Reply = oneshot::Sender<Result<Vec<u8>, ActorError>>;

/// One message in a mailbox.
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: Option<Reply>,
}

/// What a turn did that takes effect only if it commits: state writes,
/// journal events, a projection checkpoint, and messages told to other
/// actors (sent after the commit). Later capabilities (jobs, outbox) add
/// their buffers here.
#[derive(Default)]
pub(crate) struct TurnEffects {
    pub(crate) writes: BTreeMap<String, Option<Vec<u8>>>,
    pub(crate) tells: Vec<Request>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) snapshot_requested: bool,
    pub(crate) checkpoint: Option<CheckpointAdvance>,
    pub(crate) jobs: Vec<JobRecord>,
    pub(crate) cancels: Vec<String>,
    pub(crate) job_done: Option<JobCompletion>,
    pub(crate) messages: Vec<OutboxMessage>,
    /// Bytes these effects hold in host memory, charged against
    /// [`super::turn::MAX_TURN_BYTES`].
    pub(crate) bytes: usize,
}

impl TurnEffects {
    /// Splits the effects into their durable part, the one [`TurnCommit`]
    /// (`is_empty()` when the turn wrote nothing durable), and the messages
    /// told, which leave only once that commit is durable. Adding an effect
    /// is a field here and in `TurnCommit`, and its store code.
    pub(crate) fn into_commit(self, actor: ActorId, expected_version: u64, inbox: Option<InboxEntry>) -> (TurnCommit, Vec<Request>) {
        let TurnEffects { writes, tells, events, snapshot_requested: _, checkpoint, jobs, cancels, job_done, messages, bytes: _ } = self;
        let state = writes.into_iter().map(|(key, value)| StateWrite { key, value }).collect();
        let journal = (!events.is_empty()).then_some(JournalAppend { expected_version, events });
        (TurnCommit { actor, state, journal, checkpoint, jobs, cancels, job_done, inbox, messages }, tells)
    }

    /// Adds a later (nested) turn's effects on top of these.
    pub(crate) fn merge(&mut self, later: TurnEffects) {
        self.bytes += later.bytes;
        self.writes.extend(later.writes);
        self.tells.extend(later.tells);
        self.events.extend(later.events);
        self.snapshot_requested |= later.snapshot_requested;
        self.jobs.extend(later.jobs);
        self.cancels.extend(later.cancels);
        self.messages.extend(later.messages);
    }
}

/// Where an actor's journal stands, as this host knows it.
#[derive(Default)]
pub(crate) struct JournalCursor {
    /// False until the version was read (lazily, on first use).
    pub(crate) loaded: bool,
    /// The last committed event's version.
    pub(crate) version: u64,
    /// Events committed since the last snapshot (event-sourced actors).
    pub(crate) since_snapshot: u64,
}

/// An actor's state as this host holds it: the committed values and the
/// running turn's uncommitted effects.
#[derive(Default)]
pub(crate) struct ActorState {
    pub(crate) loaded: bool,
    /// Set when a commit failed: its outcome is unknown, so the next turn
    /// reloads from the store if it can.
    pub(crate) stale: bool,
    pub(crate) committed: HashMap<String, Vec<u8>>,
    /// The running turn's effects: `[0]` is the outer turn's; each
    /// re-entrant turn on its chain pushes a layer above the turn it is
    /// nested in and, when it succeeds, folds it into that one.
    pub(crate) layers: Vec<TurnEffects>,
    pub(crate) journal: JournalCursor,
    /// Shared by this activation's commits since its last failed one: the
    /// committer fails the later ones once it is set (they saw its effects).
    pub(crate) commit_flag: DependencyFlag,
    /// Commits this activation enqueued so far.
    pub(crate) enqueued: u64,
    /// Bumped on every reload from the store: a late failure does not
    /// undo into a cache that was reloaded since.
    pub(crate) generation: u64,
    /// The cache holds effects of a commit that failed: it must be
    /// reloaded before it serves anything.
    pub(crate) dirty: bool,
    /// Drop the instance before the next turn (a commit it built on failed).
    pub(crate) discard_instance: bool,
}

/// The call chain of an actor's running turn (`ChainId::NONE` when idle).
/// Every message to the actor reads it, so the counter half is an atomic
/// that rules out other chains without a lock; the full id, under the
/// lock, confirms a match.
#[derive(Default)]
pub(crate) struct BusyChain {
    seq: AtomicU64,
    full: parking_lot::Mutex<ChainId>,
}

impl BusyChain {
    pub(crate) fn set(&self, chain: ChainId) {
        let mut full = self.full.lock();
        *full = chain;
        self.seq.store(chain.seq(), Ordering::Release);
    }

    pub(crate) fn is(&self, chain: ChainId) -> bool {
        self.seq.load(Ordering::Acquire) == chain.seq() && *self.full.lock() == chain
    }
}

/// What the table, the inspection API and re-entrant calls see of an activation.
pub(crate) struct ActivationShared {
    pub(crate) id: ActorId,
    /// The call chain of the running turn, `ChainId::NONE` when idle.
    pub(crate) busy_chain: BusyChain,
    /// Messages queued or running.
    pub(crate) pending: AtomicUsize,
    /// Linear memory of this actor's instances, in bytes.
    pub(crate) memory_bytes: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) last_active_ms: AtomicI64,
    /// The component version of the live instance (0 before the first turn).
    pub(crate) version: AtomicU64,
    /// Re-entrant turns running now (each on its own instance).
    pub(crate) nested_turns: AtomicUsize,
    /// Turns whose commit is enqueued and not yet resolved.
    pub(crate) commits_in_flight: AtomicUsize,
    /// The instance and its version; `None` while a turn holds them.
    pub(super) core: Mutex<Option<Core>>,
    /// Signalled when an inline turn puts the core back.
    core_returned: tokio::sync::Notify,
    pub(crate) state: Mutex<ActorState>,
}

impl ActivationShared {
    /// No message queued or running and no commit in flight: safe to
    /// deactivate (a new activation reads everything from the store).
    pub(super) fn is_quiet(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && self.commits_in_flight.load(Ordering::Acquire) == 0
    }

    pub(crate) fn new(id: ActorId) -> Self {
        ActivationShared {
            id,
            busy_chain: BusyChain::default(),
            pending: AtomicUsize::new(0),
            memory_bytes: AtomicU64::new(0),
            turns: AtomicU64::new(0),
            last_active_ms: AtomicI64::new(coarse_now_ms()),
            version: AtomicU64::new(0),
            nested_turns: AtomicUsize::new(0),
            commits_in_flight: AtomicUsize::new(0),
            core: Mutex::new(Some(Core::default())),
            core_returned: tokio::sync::Notify::new(),
            state: Mutex::new(ActorState::default()),
        }
    }
}

/// A live wasm instance of an actor.
pub(crate) struct Live {
    pub(crate) store: Store<TurnState>,
    pub(crate) bindings: ActorInstance,
    pub(crate) version: u64,
}

/// What runs an actor's turns: its live instance and the version it was
/// made from. Exactly one holder at a time, in `ActivationShared::core`:
/// the mailbox task, or a caller running a turn inline.
#[derive(Default)]
pub(crate) struct Core {
    live: Option<Live>,
    /// The active version of this actor's type, as of a registry generation.
    version: Option<(u64, Arc<LoadedVersion>)>,
}

/// The mailbox task of one activation.
pub(super) struct Activation;

impl Activation {
    pub(super) fn spawn(host: &Host, id: ActorId) -> Handle {
        let shared = Arc::new(ActivationShared::new(id));
        let (tx, rx) = mpsc::unbounded_channel();
        host.metrics().activation_started();
        tokio::spawn(Self::run(host.downgrade(), shared.clone(), rx));
        Handle { tx, shared }
    }

    /// Weak: the host's table owns the activation (its `Handle`); a dropped
    /// host closes the mailbox, and this task ends.
    async fn run(weak: WeakHost, shared: Arc<ActivationShared>, mut rx: mpsc::UnboundedReceiver<Envelope>) {
        // Turns whose commits are in flight, each resolved by a task of its
        // own: a reply goes out as soon as its commit is durable, even while
        // the next turn runs (a long turn must not hold back a committed
        // write's reply until it times out).
        let mut committing = tokio::task::JoinSet::new();
        loop {
            let Envelope { request, reply } = tokio::select! {
                biased;
                Some(_) = committing.join_next(), if !committing.is_empty() => continue,
                envelope = rx.recv() => match envelope {
                    Some(envelope) => envelope,
                    None => break,
                },
            };
            let Some(host) = weak.upgrade() else { break };
            let mut core = take_core(&shared).await;
            let output = core.run_turn(&host, &shared, request).await;
            // Back before `pending` drops, so a caller that sees the actor
            // idle finds its core in place.
            *shared.core.lock() = Some(core);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            match output {
                Ok(TurnOutput::Pending(pending)) => {
                    let host = host.clone();
                    committing.spawn(async move {
                        let result = pending.resolve(&host).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    });
                }
                Ok(TurnOutput::Done(bytes)) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(bytes));
                    }
                }
                Err(e) => match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e));
                    }
                    None => {
                        // A told message has no one to hear its failure.
                        host.metrics().record_tell_dropped();
                        tracing::warn!(actor = %shared.id, error = %e, "a told message failed or expired; it is dropped");
                    }
                },
            }
        }
        while committing.join_next().await.is_some() {}
        // Removed from the table: drop the instance now (it refers back to
        // `shared`, so it would otherwise keep both alive).
        drop(shared.core.lock().take());
        if let Some(host) = weak.upgrade() {
            host.metrics().activation_stopped();
        }
    }
}

/// Waits until no inline turn holds the core, then takes it.
async fn take_core(shared: &ActivationShared) -> Core {
    loop {
        let returned = shared.core_returned.notified();
        if let Some(core) = shared.core.lock().take() {
            return core;
        }
        returned.await;
    }
}

/// A turn run by its caller's own task (the actor was idle, so no queue to
/// keep in order): no mailbox hop, no task switch. If the caller goes away
/// mid-turn, the instance is discarded (its effects were only buffered);
/// the core always goes back, before the caller waits for the commit.
pub(crate) struct InlineTurn {
    pub(super) host: Host,
    pub(super) shared: Arc<ActivationShared>,
    pub(super) core: Option<Core>,
    pub(super) finished: bool,
}

impl InlineTurn {
    pub(crate) async fn run(mut self, request: Request) -> Result<Vec<u8>, ActorError> {
        let (host, shared) = (self.host.clone(), self.shared.clone());
        let core = self.core.as_mut().expect("an inline turn holds the core");
        let output = core.run_turn(&host, &shared, request).await;
        self.finished = true;
        // Returns the core: the actor's next turn need not wait for this commit.
        drop(self);
        match output? {
            TurnOutput::Done(bytes) => Ok(bytes),
            // The commit's completion (reply, tells, bookkeeping, undo on
            // failure) must not depend on this caller: one that goes away
            // while the commit is in flight hands it to a task.
            TurnOutput::Pending(pending) => pending.resolve_detached(&host).await,
        }
    }
}

impl Drop for InlineTurn {
    fn drop(&mut self) {
        let mut core = self.core.take().unwrap_or_default();
        if !self.finished {
            // Its effects were only buffered in layers: the cache is intact.
            core.live = None;
            self.shared.busy_chain.set(ChainId::NONE);
        }
        *self.shared.core.lock() = Some(core);
        self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        self.shared.core_returned.notify_one();
    }
}

impl Core {
    /// Runs one turn with its bookkeeping; a host panic fails only this turn.
    async fn run_turn(&mut self, host: &Host, shared: &Arc<ActivationShared>, request: Request) -> Result<TurnOutput, ActorError> {
        let started = Instant::now();
        let actor = request.target.clone();
        let lane = match request.control.as_deref() {
            Some(Control::Inbox(super::InboxTurn { lane: Some(lane), .. })) => Some(lane.clone()),
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
        let version = host.registry().active_cached(request.target.actor_type(), &mut self.version)?;
        if self.live.as_ref().is_some_and(|l| l.version != version.info.version) {
            // Hot swap: the next turn runs on the new code with the same state.
            self.live = None;
        }
        if (stale || self.live.is_none()) && shared.commits_in_flight.load(Ordering::Acquire) > 0 {
            // About to read the store: first let every commit already
            // enqueued for this actor land (or fail).
            if let Ok(barrier) = host.committer().enqueue(TurnCommit::state_only(shared.id.clone(), Vec::new()), None).await {
                let _ = barrier.await;
            }
        }
        if self.live.is_none() {
            // Activation: read the state and create the instance at once;
            // the read waits on the store while the instance is built here.
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
        } else {
            ensure_state_loaded(host, shared).await?;
        }
        let control = request.control.take().map(|c| *c);
        if let Some(Control::Snapshot) = control {
            let version = self.snapshot_on_demand(host, shared, &version).await?;
            return Ok(TurnOutput::Done(serde_json::to_vec(&serde_json::json!({ "version": version })).unwrap_or_default()));
        }
        let Some(live) = self.live.as_mut() else { unreachable!("instantiated above") };
        let event_sourced = live.bindings.aggregate.is_some();

        let mut effect_free_job = None;
        let mut inbox = None;
        if let Some(Control::Inbox(super::InboxTurn { sender, message_id, check: true, .. })) = &control {
            // Handled already? Let this actor's commits in flight land
            // first, so a repeat right behind the first sees its entry.
            if shared.commits_in_flight.load(Ordering::Acquire) > 0
                && let Ok(barrier) = host.committer().enqueue(TurnCommit::state_only(shared.id.clone(), Vec::new()), None).await
            {
                let _ = barrier.await;
            }
            if let Some(reply) = host.store().inbox_reply(&shared.id, sender, message_id).await? {
                // The first delivery committed, perhaps after its outcome was
                // reported unknown and the cache reloaded: reload again
                // before the next turn rather than serve a cache without it.
                shared.state.lock().stale = true;
                return Ok(TurnOutput::Done(reply));
            }
        }
        {
            let mut state = shared.state.lock();
            // Reuse the vector: no allocation per turn.
            state.layers.clear();
            state.layers.push(TurnEffects::default());
            match control {
                Some(Control::Checkpoint(advance)) => state.layers[0].checkpoint = Some(advance),
                Some(Control::Job(job)) => {
                    live.store.data_mut().scope.job = Some((job.completion.id.clone(), job.attempt, job.completion.lease.clone()));
                    state.layers[0].job_done = Some(job.completion);
                    effect_free_job = Some(job.effect_free);
                }
                Some(Control::Inbox(super::InboxTurn { sender, message_id, .. })) => {
                    live.store.data_mut().scope.message = Some(message_id.clone());
                    inbox = Some((sender, message_id));
                }
                _ => {}
            }
            shared.busy_chain.set(request.chain);
        }
        let result = run_handler(live, &request, turn_deadline(&request, &version)).await;
        live.store.data_mut().scope.job = None;
        live.store.data_mut().scope.message = None;
        let effects = {
            // Under the state lock, so a late nested turn either merged
            // before this or sees the chain closed and discards its effects.
            let mut state = shared.state.lock();
            shared.busy_chain.set(ChainId::NONE);
            state.layers.drain(..).next().unwrap_or_default()
        };
        match result {
            Ok(reply) => {
                if reply.len() > super::turn::MAX_TURN_BYTES {
                    return Err(ActorError::limit_exceeded(format!(
                        "the reply of {} `{}` is {} bytes; a reply may be at most {} bytes",
                        shared.id,
                        request.method,
                        reply.len(),
                        super::turn::MAX_TURN_BYTES
                    )));
                }
                let snapshot = if event_sourced {
                    let new_events = effects.events.len() as u64;
                    let head = shared.state.lock().journal.version + new_events;
                    let due = shared.state.lock().journal.since_snapshot + new_events >= version.info.manifest.snapshot_every;
                    if (effects.snapshot_requested || due) && head > 0 { self.take_snapshot(shared, &version, head).await } else { None }
                } else {
                    None
                };
                let inbox = inbox.map(|(sender, message_id)| InboxEntry { sender, message_id, reply: reply.clone(), at_ms: crate::storage::now_ms() });
                let expected_version = shared.state.lock().journal.version;
                let (mut commit, tells) = effects.into_commit(shared.id.clone(), expected_version, inbox);
                // A job turn with no other effect leaves its completion to the runner.
                if let Some(flag) = effect_free_job
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

    /// Rebuilds a fresh instance of an event-sourced actor from its latest
    /// snapshot and the events after it. If `restore` traps, the snapshot
    /// is skipped on a second fresh instance.
    async fn rebuild(&mut self, host: &Host, shared: &Arc<ActivationShared>, version: &LoadedVersion, mut live: Live) -> Result<Live, ActorError> {
        let timeout = version.info.manifest.turn_timeout;
        let rebuilt = match super::aggregate::rebuild(host, &mut live, &shared.id, super::aggregate::SnapshotUse::Any, u64::MAX, timeout).await {
            Err(super::aggregate::RebuildError::SnapshotBroke(e)) => {
                tracing::warn!(actor = %shared.id, error = %e, "restoring the snapshot trapped; replaying the whole journal on a fresh instance");
                live = instantiate(host, shared, version, 0).await?;
                super::aggregate::rebuild(host, &mut live, &shared.id, super::aggregate::SnapshotUse::None, u64::MAX, timeout).await
            }
            other => other,
        }
        .map_err(super::aggregate::RebuildError::into_actor_error)?;
        let mut state = shared.state.lock();
        state.journal = JournalCursor { loaded: true, version: rebuilt.version, since_snapshot: rebuilt.version - rebuilt.snapshot_version };
        state.generation += 1;
        Ok(live)
    }

    /// Calls the live instance's `snapshot` export; the result covers
    /// version `head` (this turn's events included). A failure is logged:
    /// the next snapshot is tried after more events.
    async fn take_snapshot(&mut self, shared: &Arc<ActivationShared>, version: &LoadedVersion, head: u64) -> Option<(Snapshot, crate::storage::Retention)> {
        let live = self.live.as_mut()?;
        let deadline = Instant::now() + version.info.manifest.turn_timeout;
        match super::aggregate::call_snapshot(live, deadline, &shared.id).await {
            Ok(data) => {
                let snapshot = Snapshot { version: head, component_version: version.info.version, taken_at_ms: crate::storage::now_ms(), data };
                Some((snapshot, version.info.manifest.retention))
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
        let Some((snapshot, retention)) = self.take_snapshot(shared, version, head).await else {
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
    snapshot: Option<(Snapshot, crate::storage::Retention)>,
}

/// Loads the actor's committed state into memory before its first turn,
/// and again after a failed commit (keeping the cache if the store is still
/// down).
async fn ensure_state_loaded(host: &Host, shared: &ActivationShared) -> Result<(), ActorError> {
    let had_cache = {
        let state = shared.state.lock();
        if state.loaded && !state.stale {
            return Ok(());
        }
        // A dirty cache holds effects that never committed: never serve it.
        state.loaded && !state.dirty
    };
    match host.store().load_state(&shared.id).await {
        Ok(rows) => {
            let mut state = shared.state.lock();
            state.committed = rows.into_iter().collect();
            state.loaded = true;
            state.stale = false;
            state.dirty = false;
            state.generation += 1;
            Ok(())
        }
        Err(e) if had_cache => {
            tracing::debug!(actor = %shared.id, error = %e, "store still unavailable; serving from the cached state");
            Ok(())
        }
        Err(e) => Err(ActorError::unavailable(format!("loading the state of {}: {e}", shared.id))),
    }
}

/// Runs a re-entrant turn (A called B which called A on the same chain) on a
/// fresh instance. It sees the outer turn's writes; its own join them only
/// if it succeeds, and are committed with the outer turn.
pub(crate) async fn run_nested(host: &Host, shared: Arc<ActivationShared>, request: Request) -> Result<Vec<u8>, ActorError> {
    if shared.nested_turns.fetch_add(1, Ordering::AcqRel) >= MAX_NESTED_TURNS {
        shared.nested_turns.fetch_sub(1, Ordering::AcqRel);
        return Err(ActorError::limit_exceeded(format!(
            "{} is re-entered more than {MAX_NESTED_TURNS} times at once on call chain {}",
            shared.id, request.chain
        )));
    }
    let result = run_nested_turn(host, &shared, &request).await;
    shared.nested_turns.fetch_sub(1, Ordering::AcqRel);
    result
}

async fn run_nested_turn(host: &Host, shared: &Arc<ActivationShared>, request: &Request) -> Result<Vec<u8>, ActorError> {
    let version = host.registry().active(request.target.actor_type())?;
    let version = host.registry().loaded(&version.info.actor_type, shared.version.load(Ordering::Relaxed)).unwrap_or(version);
    let layer = {
        let mut state = shared.state.lock();
        if state.layers.is_empty() || !shared.busy_chain.is(request.chain) {
            return Err(ActorError::timeout(format!(
                "the turn of {} that call chain {} re-entered has already ended",
                shared.id, request.chain
            )));
        }
        state.layers.push(TurnEffects::default());
        state.layers.len() - 1
    };
    if version.pre.is_event_sourced() {
        state_pop(shared, layer);
        return Err(ActorError::rejected(format!(
            "{} is event-sourced and was called back on its own call chain {}: event-sourced actors are not \
             re-entrant (their state is the fold of their events, which a second instance cannot share); \
             restructure the calls, or tell instead of call",
            shared.id, request.chain
        )));
    }
    let result = match instantiate(host, shared, &version, layer).await {
        Ok(mut live) => run_handler(&mut live, request, turn_deadline(request, &version)).await,
        Err(e) => Err(HandlerFailure::Returned(e)),
    };
    let mut state = shared.state.lock();
    let still_open = shared.busy_chain.is(request.chain) && state.layers.len() == layer + 1;
    match result {
        Ok(reply) if still_open => {
            let mine = state.layers.pop().unwrap_or_default();
            state.layers[layer - 1].merge(mine);
            Ok(reply)
        }
        Ok(_) => {
            state.layers.truncate(layer);
            Err(ActorError::timeout(format!(
                "the turn of {} that call chain {} re-entered ended before this nested call finished; its effects are discarded",
                shared.id, request.chain
            )))
        }
        Err(HandlerFailure::Returned(e) | HandlerFailure::Broken(e)) => {
            state.layers.truncate(layer);
            Err(e)
        }
    }
}


/// Drops the effect layer a nested turn pushed before it ran.
fn state_pop(shared: &ActivationShared, layer: usize) {
    shared.state.lock().layers.truncate(layer);
}
