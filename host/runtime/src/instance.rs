//! Instances of an actor's component and calls into them: creating one
//! under the type's limits, arming the turn deadline, and sorting what a
//! call returned (an error the guest chose, or a trap that ends the instance).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Store, UpdateDeadline};

use super::Request;
use super::activation::{ActivationShared, Live};
use super::registry::LoadedVersion;
use super::turn::{Execution, InstanceState};
use crate::Host;
use crate::capabilities::{ActorInstance, ActorPre, GuestError};
use crate::id::ChainId;
use crate::error::ActorError;
use crate::storage::Manifest;

/// Why a call into the guest did not produce a result.
pub(crate) enum HandlerFailure {
    /// The guest returned an error; the instance is fine.
    Returned(ActorError),
    /// Trap, timeout or memory limit; the instance must be discarded.
    Broken(ActorError),
}

/// When a turn must end: its caller's deadline or its type's turn time
/// limit, whichever comes first.
pub(super) fn turn_deadline(request: &Request, version: &LoadedVersion) -> Instant {
    request.deadline.min(Instant::now() + version.info.manifest.turn_timeout)
}

pub(super) async fn run_handler(live: &mut Live, request: &Request, deadline: Instant) -> Result<Vec<u8>, HandlerFailure> {
    {
        let scope = &mut live.store.data_mut().scope;
        scope.chain = request.chain;
        scope.caller.clone_from(&request.caller);
        scope.deadline = deadline;
        // `clone_from` keeps the buffer: no allocation per turn.
        scope.method.clone_from(&request.method);
        scope.turn = super::turn::next_turn_number();
    }
    prepare_guest_call(live);
    let Some(handler) = &live.bindings.handler else {
        return Err(HandlerFailure::Returned(ActorError::bad_request(format!(
            "{} is a workflow: it has no methods to call; use /v1/workflows (`quark workflow`)",
            request.target
        ))));
    };
    let call = handler.call_handle(&mut live.store, &request.method, &request.payload);
    let outcome = tokio::time::timeout_at(deadline.into(), call).await;
    let what = format!("{} `{}`", request.target, request.method);
    classify_guest_call(outcome, live.store.data(), &what, request.chain)
}

/// Resets the per-call flags and arms the epoch deadline before a call
/// into the guest.
pub(crate) fn prepare_guest_call(live: &mut Live) {
    let data = live.store.data_mut();
    data.limiter.exceeded = false;
    data.timed_out = false;
    data.stderr.clear_tail();
    live.store.set_epoch_deadline(1);
}

/// Sorts the outcome of a call into the guest (`what` names it in errors):
/// a returned error leaves the instance usable; a trap, timeout or memory
/// limit hit does not.
pub(crate) fn classify_guest_call<T>(
    outcome: Result<wasmtime::Result<Result<T, GuestError>>, tokio::time::error::Elapsed>,
    data: &InstanceState,
    what: &str,
    chain: ChainId,
) -> Result<T, HandlerFailure> {
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        // A guest that caught its failed allocation (Python's MemoryError)
        // still failed because of the limit: say so.
        Ok(Ok(Err(guest_error))) if data.limiter.exceeded => {
            let error: ActorError = guest_error.into();
            Err(HandlerFailure::Returned(ActorError::limit_exceeded(format!(
                "{what} could not grow its memory past the limit of its actor type and failed: {}",
                error.message
            ))))
        }
        Ok(Ok(Err(guest_error))) => Err(HandlerFailure::Returned(guest_error.into())),
        Ok(Err(trap)) if data.timed_out => Err(HandlerFailure::Broken(ActorError::timeout(format!(
            "{what} ran past its deadline (turn time limit or call deadline; call chain {chain}) and was stopped ({})",
            trap.root_cause()
        )))),
        Ok(Err(_)) if data.limiter.exceeded => Err(HandlerFailure::Broken(ActorError::limit_exceeded(format!(
            "{what} tried to grow its memory past the limit of its actor type and trapped"
        )))),
        Ok(Err(trap)) => {
            let printed = data.stderr.tail().map(|t| format!("; it printed: {t}")).unwrap_or_default();
            Err(HandlerFailure::Broken(ActorError::internal(format!(
                "{what} trapped (a panic or a bug in the actor): {}{printed}",
                trap.root_cause()
            ))))
        }
        Err(_elapsed) => Err(HandlerFailure::Broken(ActorError::timeout(format!(
            "{what} did not finish before its deadline (turn time limit or call deadline; call chain {chain})"
        )))),
    }
}

/// Creates a fresh instance of `version` for the actor behind `shared`.
pub(crate) async fn instantiate(
    host: &Host,
    shared: &Arc<ActivationShared>,
    version: &LoadedVersion,
    layer: usize,
) -> Result<Live, ActorError> {
    instantiate_as(host, shared, version, layer, Execution::Actor).await
}

/// Like [`instantiate`], for an instance that runs as `execution`.
pub(crate) async fn instantiate_as(
    host: &Host,
    shared: &Arc<ActivationShared>,
    version: &LoadedVersion,
    layer: usize,
    execution: Execution,
) -> Result<Live, ActorError> {
    let reservation = host.reserve_memory(shared, &version.info.manifest).await?;
    let (mut store, bindings) = instantiate_pre(host, shared, &version.pre, &version.info.manifest, layer, execution).await?;
    store.data_mut().limiter.hold(reservation, host.memory_budget().clone());
    Ok(Live { store, bindings, version: version.info.version })
}

/// Instantiates `pre` in a new store under `manifest`'s limits. Also used
/// at deploy time to check that a component can start at all.
pub(crate) async fn instantiate_pre(
    host: &Host,
    shared: &Arc<ActivationShared>,
    pre: &ActorPre,
    manifest: &Manifest,
    layer: usize,
    execution: Execution,
) -> Result<(Store<InstanceState>, ActorInstance), ActorError> {
    let memory_limit = manifest.memory_limit;
    let mut store = Store::new(host.engine(), InstanceState::new(host, shared.clone(), memory_limit, layer, execution));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        if Instant::now() >= ctx.data().scope.deadline {
            ctx.data_mut().timed_out = true;
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    // Instantiation runs guest start code: give it one turn's time.
    store.data_mut().scope.deadline = Instant::now() + manifest.turn_timeout;
    store.set_epoch_deadline(1);
    match pre.instantiate_async(&mut store).await {
        Ok(bindings) => Ok((store, bindings)),
        Err(_) if store.data().timed_out => Err(ActorError::timeout(format!(
            "{} did not start within its turn time limit of {:?}",
            shared.id, manifest.turn_timeout
        ))),
        Err(e) if store.data().limiter.exceeded => Err(ActorError::limit_exceeded(format!(
            "{} needs more memory than its limit of {} bytes just to start: {e:#}",
            shared.id, memory_limit
        ))),
        Err(e) if format!("{e:#}").contains("os error 12") => Err(ActorError::unavailable(format!(
            "{} cannot be activated: this host is out of memory mappings for new instances ({e:#}); \
             idle actors are being shed, and raising vm.max_map_count raises the limit",
            shared.id
        ))),
        Err(e) => Err(ActorError::internal(format!("instantiating {}: {e:#}", shared.id))),
    }
}
