//! The data of one actor instance's wasmtime store, and the scope of the
//! turn it is running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Request;
use super::activation::ActivationShared;
use super::guest_output::GuestOutput;
use super::limits::MemoryLimiter;
use crate::Host;
use crate::error::ActorError;
use crate::id::ActorId;

/// What the running turn is: its call chain, who called, and its deadline.
#[derive(Debug, Clone)]
pub struct TurnScope {
    /// Call-chain id: nested calls along the same chain may re-enter an actor.
    pub chain: u64,
    /// The calling actor, if the message came from one.
    pub caller: Option<ActorId>,
    /// When the turn must be done.
    pub deadline: Instant,
}

/// The data of one actor instance's store: the capabilities' host state.
pub struct TurnState {
    pub(crate) actor: ActorId,
    pub(crate) host: Host,
    pub(crate) scope: TurnScope,
    pub(crate) activation: Arc<ActivationShared>,
    /// Which of the actor's effect layers this turn writes: 0 for a turn
    /// from the mailbox, higher for re-entrant turns (see `ActorState`).
    layer: usize,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) timed_out: bool,
    /// The guest's stderr: logged, and its tail quoted when the guest traps.
    pub(crate) stderr: GuestOutput,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl TurnState {
    pub(crate) fn new(host: Host, activation: Arc<ActivationShared>, memory_limit: u64, layer: usize) -> Self {
        let stderr = GuestOutput::new(activation.id.clone(), "stderr");
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(activation.id.clone(), "stdout"))
            .stderr(stderr.clone())
            .build();
        TurnState {
            actor: activation.id.clone(),
            host,
            scope: TurnScope { chain: 0, caller: None, deadline: Instant::now() },
            limiter: MemoryLimiter::new(memory_limit, activation.clone()),
            activation,
            layer,
            timed_out: false,
            stderr,
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
    pub(crate) fn state_write(&mut self, key: String, value: Option<Vec<u8>>) {
        if let Some(layer) = self.activation.state.lock().layers.get_mut(self.layer) {
            layer.writes.insert(key, value);
        }
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
        match self.activation.state.lock().layers.get_mut(self.layer) {
            Some(layer) => push_tell(&mut layer.tells, request),
            None => Err(ActorError::timeout("this turn has already ended")),
        }
    }

    /// A request from this turn to another actor, on the same call chain.
    pub(crate) fn outgoing(&self, target: ActorId, method: String, payload: Vec<u8>) -> Request {
        let deadline = self.scope.deadline.min(Instant::now() + self.host.config().call_timeout);
        Request { target, method, payload, chain: self.scope.chain, caller: Some(self.actor.clone()), deadline }
    }
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

impl WasiView for TurnState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
