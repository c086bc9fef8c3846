//! Re-entrant turns: a call back on the actor's own call chain runs on a
//! fresh instance, in an effect layer above the turn it re-entered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ActivationShared, TurnEffects};
use crate::Host;
use crate::error::ActorError;
use crate::id::ChainId;
use crate::instance::{HandlerFailure, instantiate, run_handler, turn_deadline};
use crate::Request;

/// Most re-entrant turns one actor runs at once; each has its own instance
/// and memory, so a runaway recursion must stop somewhere.
const MAX_NESTED_TURNS: usize = 8;

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
