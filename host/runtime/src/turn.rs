//! The data of one actor instance's wasmtime store, and the scope of the
//! turn it is running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Request, WeakHost};
use super::activation::ActivationShared;
use super::guest_output::GuestOutput;
use super::limits::MemoryLimiter;
use crate::Host;
use crate::error::ActorError;
use crate::id::{ActorId, ChainId};

/// The job a turn runs.
#[derive(Debug, Clone)]
pub struct JobScope {
    /// The job's id.
    pub id: String,
    /// Which attempt this is (1, 2, …).
    pub attempt: u32,
    /// The run's lease: its progress reports and completion must hold it.
    pub lease: String,
}

/// What the running turn is: its call chain, who called, and its deadline.
#[derive(Debug, Clone)]
pub struct TurnScope {
    /// Call-chain id: nested calls along the same chain may re-enter an actor.
    pub chain: ChainId,
    /// The calling actor, if the message came from one.
    pub caller: Option<ActorId>,
    /// When the turn must be done.
    pub deadline: Instant,
    /// The method being handled (recorded with journal events).
    pub method: String,
    /// This turn's number in this process (the causation id of its events).
    pub turn: u64,
    /// The job this turn runs.
    pub job: Option<JobScope>,
    /// The message id (or idempotency key) this turn handles.
    pub message: Option<String>,
}

impl TurnScope {
    /// A scope for work that is not a message (instantiation, rebuilds).
    pub(crate) fn system(deadline: Instant) -> Self {
        TurnScope { chain: ChainId::NONE, caller: None, deadline, method: String::new(), turn: 0, job: None, message: None }
    }
}

/// What an instance runs as, which decides what its capabilities may do.
pub(crate) enum Execution {
    /// An actor's turns: every capability.
    Actor,
    /// `quark replay`: the journal rebuilds it; it reads, and nothing it
    /// does leaves the sandbox (no messages, appends, jobs or commits).
    Sandbox,
    /// A workflow's run: its history answers recorded steps, and the
    /// actor capabilities (state, calls, tells, jobs, outbox, journal) are
    /// refused: a workflow's effects are its activities. The host's own
    /// writes for it are made after the run, as [`Execution::Actor`].
    Workflow(crate::workflow::SharedRun),
}

impl Execution {
    /// Refuses `what` (e.g. "send messages") outside an actor's turn.
    pub(crate) fn allows(&self, what: &str) -> Result<(), ActorError> {
        match self {
            Execution::Actor => Ok(()),
            Execution::Sandbox => Err(ActorError::rejected(format!("a replay sandbox cannot {what}"))),
            Execution::Workflow(_) => Err(ActorError::rejected(format!(
                "a workflow cannot {what}: its effects go through activities (workflow start-activity, an actor method), \
                 which the host records and runs once"
            ))),
        }
    }

    /// Refuses `what` in a workflow only (a sandbox may read state).
    pub(crate) fn allows_unless_workflow(&self, what: &str) -> Result<(), ActorError> {
        match self {
            Execution::Workflow(_) => self.allows(what),
            _ => Ok(()),
        }
    }
}

static NEXT_TURN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A number for the next turn, unique in this process.
pub(crate) fn next_turn_number() -> u64 {
    NEXT_TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Milliseconds at process start: with the turn number, a causation id
/// that stays unique across restarts.
static PROCESS_EPOCH_MS: std::sync::LazyLock<i64> = std::sync::LazyLock::new(crate::storage::now_ms);

/// The data of one actor instance's wasmtime store, the capabilities' host
/// state. It lives as long as the instance, across its turns; what belongs
/// to the running turn is in `scope`.
pub struct InstanceState {
    pub(crate) actor: ActorId,
    /// Weak: the host owns its activations (and so this state), not the
    /// other way round, so that a dropped host frees them.
    host: WeakHost,
    pub(crate) scope: TurnScope,
    pub(crate) activation: Arc<ActivationShared>,
    /// Which of the actor's effect layers this turn writes: 0 for a turn
    /// from the mailbox, higher for re-entrant turns (see `StateCache`).
    layer: usize,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) timed_out: bool,
    /// What the instance runs as: an actor, a replay sandbox, a workflow.
    pub(crate) execution: Execution,
    /// The guest's stderr: logged, and its tail quoted when the guest traps.
    pub(crate) stderr: GuestOutput,
    /// Job progress reports waiting to be written (coalesced).
    pub(crate) progress: Arc<crate::capabilities::jobs::ProgressSlot>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl InstanceState {
    pub(crate) fn new(host: &Host, activation: Arc<ActivationShared>, memory_limit: u64, layer: usize, execution: Execution) -> Self {
        let stderr = GuestOutput::new(activation.id.clone(), "stderr");
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(activation.id.clone(), "stdout")).stderr(stderr.clone());
        if let Execution::Workflow(run) = &execution {
            // Its clocks and randomness answer from the history on replay.
            crate::workflow::clocks::install(&mut wasi, run);
        }
        let wasi = wasi.build();
        InstanceState {
            actor: activation.id.clone(),
            host: host.downgrade(),
            scope: TurnScope::system(Instant::now()),
            limiter: MemoryLimiter::new(memory_limit, activation.clone()),
            activation,
            layer,
            timed_out: false,
            execution,
            stderr,
            progress: Default::default(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Reads `key`, seeing this turn's own writes first, then those of the
    /// turns it is nested in.
    pub(crate) fn state_get(&self, key: &str) -> Option<Vec<u8>> {
        let state = self.activation.state.lock();
        let visible = &state.layers[..state.layers.len().min(self.layer + 1)];
        match visible.iter().rev().find_map(|l| l.writes.get(key)) {
            Some(v) => v.clone(),
            None => state.committed.get(key).cloned(),
        }
    }

    /// Buffers a write (or a delete, with `None`) for the turn's commit.
    pub(crate) fn state_write(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), ActorError> {
        let mut state = self.activation.state.lock();
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        // A key written again in this turn gives back its earlier bytes.
        let earlier = state.layers.get(self.layer).and_then(|l| l.writes.get(&key)).map_or(0, |v| key.len() + v.as_ref().map_or(0, Vec::len));
        charge(&mut state.layers, self.layer, size.saturating_sub(earlier))?;
        if let Some(layer) = state.layers.get_mut(self.layer) {
            layer.bytes = layer.bytes.saturating_sub(earlier.saturating_sub(size));
            layer.writes.insert(key, value);
        }
        Ok(())
    }

    /// Every key, with this turn's writes (and those it is nested in) applied.
    pub(crate) fn state_keys(&self) -> Vec<String> {
        let state = self.activation.state.lock();
        let mut keys: BTreeSet<&String> = state.committed.keys().collect();
        let visible = &state.layers[..state.layers.len().min(self.layer + 1)];
        for (key, value) in visible.iter().flat_map(|l| l.writes.iter()) {
            if value.is_some() {
                keys.insert(key);
            } else {
                keys.remove(key);
            }
        }
        keys.into_iter().cloned().collect()
    }

    /// Buffers a message to send if this turn commits.
    pub(crate) fn buffer_tell(&mut self, request: Request) -> Result<(), ActorError> {
        let mut state = self.activation.state.lock();
        charge(&mut state.layers, self.layer, request.payload.len())?;
        match state.layers.get_mut(self.layer) {
            Some(layer) => push_tell(&mut layer.tells, request),
            None => Err(ActorError::timeout("this turn has already ended")),
        }
    }

    /// Buffers `events` after the actor's current version (committed plus
    /// what this turn and the turns it is nested in appended); returns the
    /// version of the last one.
    pub(crate) async fn journal_append(&mut self, events: Vec<crate::capabilities::GuestEvent>) -> Result<u64, ActorError> {
        self.execution.allows("append events")?;
        ensure_journal_loaded(&self.host()?, &self.activation).await?;
        let origin = EventOrigin {
            correlation_id: self.scope.chain.to_string(),
            causation_id: format!("{:x}-{:x}", *PROCESS_EPOCH_MS, self.scope.turn),
            caller: self.scope.caller.as_ref().map(ToString::to_string),
            method: self.scope.method.clone(),
        };
        buffer_events(&self.activation, self.layer, events, origin)
    }

    /// The actor's journal version as this turn sees it.
    pub(crate) async fn journal_version(&mut self) -> Result<u64, ActorError> {
        ensure_journal_loaded(&self.host()?, &self.activation).await?;
        let state = self.activation.state.lock();
        let visible = state.layers.len().min(self.layer + 1);
        let buffered: usize = state.layers[..visible].iter().map(|l| l.events.len()).sum();
        Ok(state.journal.version + buffered as u64)
    }

    /// Asks for a snapshot after this turn commits.
    pub(crate) fn journal_request_snapshot(&mut self) {
        if let Some(layer) = self.activation.state.lock().layers.get_mut(self.layer) {
            layer.snapshot_requested = true;
        }
    }

    /// Buffers a job for the turn's commit; returns its id.
    pub(crate) fn schedule_job(&mut self, request: quark_core::jobs::JobRequest) -> Result<String, ActorError> {
        self.execution.allows("schedule jobs")?;
        let host = self.host()?;
        if host.store().job_store().is_none() {
            return Err(ActorError::unavailable(format!(
                "durable jobs are not available on the {} store yet",
                host.store().backend_name()
            )));
        }
        host.registry().active(request.target.actor_type())?;
        let limit = host.config().max_payload;
        if request.payload.len() > limit {
            return Err(ActorError::limit_exceeded(format!(
                "a job payload of {} bytes is larger than the host's limit of {limit} bytes (--max-payload)",
                request.payload.len()
            )));
        }
        let job = quark_core::jobs::plan_for(request, crate::storage::now_ms(), Some(self.activation.id.as_str()))?;
        let id = job.id.clone();
        let mut state = self.activation.state.lock();
        if state.layers.get(self.layer).is_some_and(|l| !l.jobs.iter().any(|j| j.id == id)) {
            charge(&mut state.layers, self.layer, job.payload.len())?;
        }
        let Some(layer) = state.layers.get_mut(self.layer) else {
            return Err(ActorError::timeout("this turn has already ended"));
        };
        if layer.jobs.len() >= MAX_JOBS_PER_TURN {
            return Err(ActorError::limit_exceeded(format!("a turn may schedule at most {MAX_JOBS_PER_TURN} jobs")));
        }
        if !layer.jobs.iter().any(|j| j.id == id) {
            layer.jobs.push(job);
        }
        Ok(id)
    }

    /// Buffers a cancel for the turn's commit; false if there is no such
    /// live job (stored, or scheduled earlier in this turn).
    pub(crate) async fn cancel_job(&mut self, id: String) -> Result<bool, ActorError> {
        {
            let mut state = self.activation.state.lock();
            if let Some(layer) = state.layers.get_mut(self.layer)
                && let Some(i) = layer.jobs.iter().position(|j| j.id == id)
            {
                layer.jobs.remove(i);
                return Ok(true);
            }
        }
        let host = self.host()?;
        let Some(store) = host.store().job_store() else { return Ok(false) };
        let Some(job) = store.job(&id).await? else { return Ok(false) };
        // Only the job's scheduler or its target may cancel it: a job id
        // learnt from elsewhere gives no power over another actor's work.
        let me = self.activation.id.as_str();
        if job.target != me && !job.id.ends_with(&quark_core::jobs::owner_tag(Some(me))) {
            return Err(ActorError::rejected(format!("job {id} was neither scheduled by {me} nor targets it, so {me} cannot cancel it")));
        }
        let live = matches!(
            job.status,
            crate::storage::jobs::JobStatus::Scheduled | crate::storage::jobs::JobStatus::Failed | crate::storage::jobs::JobStatus::Running
        );
        if live && let Some(layer) = self.activation.state.lock().layers.get_mut(self.layer) {
            layer.cancels.push(id);
        }
        Ok(live)
    }

    /// Buffers an outbox message for the turn's commit; returns its id.
    pub(crate) fn send_message(
        &mut self,
        destination: crate::storage::outbox::Destination,
        payload: Vec<u8>,
        id: Option<String>,
        event_type: Option<String>,
    ) -> Result<String, ActorError> {
        use crate::storage::outbox::{Destination, OutboxMessage};
        self.execution.allows("send messages")?;
        let host = self.host()?;
        if host.store().outbox_store().is_none() {
            return Err(ActorError::unavailable(format!("the outbox is not available on the {} store yet", host.store().backend_name())));
        }
        let limit = host.config().max_payload;
        if payload.len() > limit {
            return Err(ActorError::limit_exceeded(format!(
                "a message of {} bytes is larger than the host's limit of {limit} bytes (--max-payload)",
                payload.len()
            )));
        }
        match &destination {
            Destination::Actor { actor, method } => {
                let target = ActorId::parse(actor)?;
                host.registry().active(target.actor_type())?;
                if method.is_empty() {
                    return Err(ActorError::bad_request("a message to an actor needs a method"));
                }
            }
            Destination::Sink { name } if !host.config().sink_names.contains(name) => {
                return Err(ActorError::not_found(format!("no sink named {name:?} is configured on this host (--sink NAME=KIND:TARGET)")));
            }
            Destination::Sink { .. } => {}
        }
        if let Some(id) = &id
            && (id.is_empty() || id.len() > crate::inbox::MAX_KEY_BYTES)
        {
            return Err(ActorError::bad_request(format!("a message id must be 1 to {} bytes", crate::inbox::MAX_KEY_BYTES)));
        }
        let id = id.unwrap_or_else(|| format!("m{:011x}{}", crate::storage::now_ms(), crate::storage::jobs::new_lease()));
        let message = OutboxMessage {
            id: id.clone(),
            sender: self.activation.id.to_string(),
            destination,
            payload,
            event_type,
            created_at_ms: crate::storage::now_ms(),
        };
        let mut state = self.activation.state.lock();
        if state.layers.get(self.layer).is_some_and(|l| !l.messages.iter().any(|m| m.id == id)) {
            charge(&mut state.layers, self.layer, message.payload.len())?;
        }
        let Some(layer) = state.layers.get_mut(self.layer) else {
            return Err(ActorError::timeout("this turn has already ended"));
        };
        if layer.messages.len() >= MAX_MESSAGES_PER_TURN {
            return Err(ActorError::limit_exceeded(format!("a turn may send at most {MAX_MESSAGES_PER_TURN} messages")));
        }
        if !layer.messages.iter().any(|m| m.id == id) {
            layer.messages.push(message);
        }
        Ok(id)
    }

    /// A request from this turn to another actor, on the same call chain.
    pub(crate) fn outgoing(&self, target: ActorId, method: String, payload: Vec<u8>) -> Result<Request, ActorError> {
        let deadline = self.scope.deadline.min(Instant::now() + self.host()?.config().call_timeout);
        Ok(Request { target, method, payload, chain: self.scope.chain, caller: Some(self.actor.clone()), deadline, control: None })
    }

    /// The host, while it exists (always during a turn: the activation
    /// running it holds the host).
    pub(crate) fn host(&self) -> Result<Host, ActorError> {
        self.host.upgrade().ok_or_else(|| ActorError::unavailable("the host is shutting down"))
    }
}

/// Most bytes one turn may buffer for its commit (state writes, events,
/// job and message payloads, tells), with the turns it is nested in; also
/// the largest reply. They sit in host memory, outside the guest's memory
/// limit, until the turn commits: without a bound a guest could grow the
/// host by a thousand 1 MiB messages per turn.
pub(crate) const MAX_TURN_BYTES: usize = 32 << 20;

/// Charges `bytes` to `layer` (one of the actor's effect layers), or fails
/// with `limit-exceeded` if the layers it sees would pass [`MAX_TURN_BYTES`].
pub(crate) fn charge(layers: &mut [super::activation::TurnEffects], layer: usize, bytes: usize) -> Result<(), ActorError> {
    let visible = layers.len().min(layer + 1);
    let used: usize = layers[..visible].iter().map(|l| l.bytes).sum();
    if used + bytes > MAX_TURN_BYTES {
        return Err(ActorError::limit_exceeded(format!(
            "this turn would buffer {} bytes for its commit (state, events, jobs, messages, tells); the limit is {MAX_TURN_BYTES}",
            used + bytes
        )));
    }
    if let Some(l) = layers.get_mut(layer) {
        l.bytes += bytes;
    }
    Ok(())
}

/// Most messages one turn may send: they sit in memory until it commits.
const MAX_MESSAGES_PER_TURN: usize = 1000;

/// Most jobs one turn may schedule: they sit in memory until it commits.
const MAX_JOBS_PER_TURN: usize = 1000;

/// Longest event type name.
const MAX_EVENT_TYPE_BYTES: usize = 256;

/// Largest event body: events are replayed on every rebuild, so big data
/// belongs in state or a blob store, with the event pointing at it.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// Most events one turn may append: they sit in memory until it commits.
const MAX_EVENTS_PER_TURN: usize = 10_000;

/// Where the events of one append come from (stored with each).
#[derive(Default)]
pub(crate) struct EventOrigin {
    pub(crate) correlation_id: String,
    pub(crate) causation_id: String,
    pub(crate) caller: Option<String>,
    pub(crate) method: String,
}

/// Buffers `events` in effect layer `layer` of `activation` (its journal
/// version loaded), within the per-turn limits: the version of the last.
pub(crate) fn buffer_events(
    activation: &ActivationShared,
    layer: usize,
    events: Vec<crate::capabilities::GuestEvent>,
    origin: EventOrigin,
) -> Result<u64, ActorError> {
    for e in &events {
        if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_BYTES {
            return Err(ActorError::rejected(format!("an event type must be 1 to {MAX_EVENT_TYPE_BYTES} bytes, not {}", e.event_type.len())));
        }
        if e.data.len() > MAX_EVENT_BYTES {
            return Err(ActorError::limit_exceeded(format!(
                "event `{}` is {} bytes; the limit is {MAX_EVENT_BYTES}",
                e.event_type,
                e.data.len()
            )));
        }
    }
    let recorded_at_ms = crate::storage::now_ms();
    let mut state = activation.state.lock();
    let visible = state.layers.len().min(layer + 1);
    let buffered: usize = state.layers[..visible].iter().map(|l| l.events.len()).sum();
    if buffered + events.len() > MAX_EVENTS_PER_TURN {
        return Err(ActorError::limit_exceeded(format!("a turn may append at most {MAX_EVENTS_PER_TURN} events")));
    }
    let base = state.journal.version + buffered as u64;
    charge(&mut state.layers, layer, events.iter().map(|e| e.data.len() + e.event_type.len()).sum())?;
    let Some(effects) = state.layers.get_mut(layer) else {
        return Err(ActorError::timeout("this turn has already ended"));
    };
    let count = events.len() as u64;
    for (i, e) in events.into_iter().enumerate() {
        effects.events.push(crate::storage::EventRecord {
            version: base + i as u64 + 1,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
            recorded_at_ms,
            correlation_id: origin.correlation_id.clone(),
            causation_id: origin.causation_id.clone(),
            caller: origin.caller.clone(),
            method: origin.method.clone(),
        });
    }
    Ok(base + count)
}

/// Loads the actor's journal version the first time a turn needs it.
pub(crate) async fn ensure_journal_loaded(host: &Host, activation: &ActivationShared) -> Result<(), ActorError> {
    if activation.state.lock().journal.loaded {
        return Ok(());
    }
    let version = host
        .store()
        .journal_head(&activation.id)
        .await
        .map_err(|e| ActorError::unavailable(format!("reading the journal version of {}: {e}", activation.id)))?;
    let mut state = activation.state.lock();
    if !state.journal.loaded {
        state.journal.loaded = true;
        state.journal.version = version;
    }
    Ok(())
}

/// Most messages one turn may tell: they sit in memory until it commits.
const MAX_TELLS_PER_TURN: usize = 1000;

fn push_tell(tells: &mut Vec<Request>, request: Request) -> Result<(), ActorError> {
    if tells.len() >= MAX_TELLS_PER_TURN {
        return Err(ActorError::limit_exceeded(format!("a turn may tell at most {MAX_TELLS_PER_TURN} messages")));
    }
    tells.push(request);
    Ok(())
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
