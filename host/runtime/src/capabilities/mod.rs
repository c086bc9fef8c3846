//! The host side of each WIT interface in `wit/`, one file per interface.
//!
//! Every import is implemented on [`InstanceState`], the data of one actor's
//! wasmtime store. Backend failures never trap a guest: they come back as the
//! WIT `error` variant.

pub(crate) mod jobs;
mod journal;
mod log;
mod outbox;
mod runtime;
mod state;
mod workflow;

use crate::error::{ActorError, ErrorKind};
use crate::turn::InstanceState;

/// Bindings generated from `wit/` for the `quark-host` world: every
/// import, and every export a component may have. An actor has `handler`
/// (and `aggregate` if it is event-sourced), a workflow `workflow-run`,
/// so the exports are looked up one interface at a time (see [`ActorPre`]).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "quark-host",
        imports: {
            "quark:actor/runtime.call": async,
            "quark:actor/journal.append": async,
            "quark:actor/journal.version": async,
            "quark:actor/journal.read": async,
            "quark:actor/jobs.cancel": async,
            // A workflow's waits stop the guest (a trap the host sorts out).
            "quark:actor/workflow.start-activity": trappable,
            "quark:actor/workflow.start-child": trappable,
            "quark:actor/workflow.await-all": async | trappable,
            "quark:actor/workflow.await-any": async | trappable,
            "quark:actor/workflow.sleep": trappable,
            "quark:actor/workflow.wait-signal": trappable,
            "quark:actor/workflow.now": trappable,
            "quark:actor/workflow.random": trappable,
            "quark:actor/workflow.continue-as-new": trappable,
        },
        exports: { default: async },
    });
}

pub(crate) use bindings::exports::quark::actor::aggregate::Guest as AggregateExport;
pub(crate) use bindings::exports::quark::actor::handler::Guest as HandlerExport;
pub(crate) use bindings::exports::quark::actor::workflow_run::Guest as WorkflowExport;
pub(crate) use bindings::quark::actor::journal::{Event as GuestEvent, RecordedEvent as GuestRecordedEvent};
pub(crate) use bindings::quark::actor::types::Error as GuestError;
use bindings::exports::quark::actor::{aggregate, handler, workflow_run};
pub(crate) use journal::to_guest as to_guest_event;

impl bindings::quark::actor::types::Host for InstanceState {}

/// The export an event-sourced actor adds.
pub const AGGREGATE_EXPORT: &str = "quark:actor/aggregate@0.1.0";

/// The export a workflow has instead of `handler`.
pub const WORKFLOW_EXPORT: &str = "quark:actor/workflow-run@0.1.0";

/// Adds every Quark capability, and the WASI interfaces Rust's standard
/// library expects, to `linker`.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<InstanceState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::QuarkHost::add_to_linker::<InstanceState, wasmtime::component::HasSelf<InstanceState>>(linker, |state| state)?;
    Ok(())
}

/// A component linked and checked, ready to instantiate: its `handler`
/// export, and its `aggregate` export if it is event-sourced; or, for a
/// workflow, its `workflow-run` export.
#[derive(Clone)]
pub(crate) struct ActorPre {
    pre: wasmtime::component::InstancePre<InstanceState>,
    handler: Option<handler::GuestIndices>,
    aggregate: Option<aggregate::GuestIndices>,
    workflow: Option<workflow_run::GuestIndices>,
}

/// A live instance's exports.
pub(crate) struct ActorInstance {
    /// An actor's entry point (none in a workflow).
    pub(crate) handler: Option<HandlerExport>,
    pub(crate) aggregate: Option<AggregateExport>,
    /// A workflow's entry point.
    pub(crate) workflow: Option<WorkflowExport>,
}

impl ActorPre {
    /// Finds the exports; fails when neither `handler` nor `workflow-run`
    /// is there, or when one has the wrong shape.
    pub(crate) fn new(pre: wasmtime::component::InstancePre<InstanceState>) -> wasmtime::Result<Self> {
        let exported = |name: &str| pre.component().get_export_index(None, name).is_some();
        if exported(WORKFLOW_EXPORT) && !exported(crate::registry::HANDLER_EXPORT) {
            let workflow = Some(workflow_run::GuestIndices::new(&pre)?);
            return Ok(ActorPre { pre, handler: None, aggregate: None, workflow });
        }
        let handler = Some(handler::GuestIndices::new(&pre)?);
        let aggregate = if exported(AGGREGATE_EXPORT) { Some(aggregate::GuestIndices::new(&pre)?) } else { None };
        Ok(ActorPre { pre, handler, aggregate, workflow: None })
    }

    /// True when the component exports `aggregate`.
    pub(crate) fn is_event_sourced(&self) -> bool {
        self.aggregate.is_some()
    }

    /// True when the component is a workflow (it exports `workflow-run`).
    pub(crate) fn is_workflow(&self) -> bool {
        self.workflow.is_some()
    }

    /// Instantiates it in `store`.
    pub(crate) async fn instantiate_async(
        &self,
        mut store: impl wasmtime::AsContextMut<Data = InstanceState>,
    ) -> wasmtime::Result<ActorInstance> {
        let instance = self.pre.instantiate_async(&mut store).await?;
        let handler = self.handler.as_ref().map(|h| h.load(&mut store, &instance)).transpose()?;
        let aggregate = self.aggregate.as_ref().map(|a| a.load(&mut store, &instance)).transpose()?;
        let workflow = self.workflow.as_ref().map(|w| w.load(&mut store, &instance)).transpose()?;
        Ok(ActorInstance { handler, aggregate, workflow })
    }
}

/// How a guest says "the caller sent something wrong": the WIT `error`
/// variant has no case of its own for it (adding one would break every
/// deployed component), so a `rejected` whose message starts with these words
/// is the caller's mistake, `bad-request` to the host and its callers. The
/// SDKs' payload decoding and their `bad_request`/`BadRequest` helpers write
/// it; a host `bad-request` handed to a guest keeps it.
pub const BAD_REQUEST_PREFIX: &str = "bad request";

impl From<ActorError> for GuestError {
    fn from(e: ActorError) -> Self {
        let ActorError { kind, message } = e;
        match kind {
            ErrorKind::NotFound => GuestError::NotFound(message),
            ErrorKind::BadRequest if !message.starts_with(BAD_REQUEST_PREFIX) => GuestError::Rejected(format!("{BAD_REQUEST_PREFIX}: {message}")),
            ErrorKind::Rejected | ErrorKind::Conflict | ErrorKind::BadRequest | ErrorKind::Unauthorized | ErrorKind::Forbidden => {
                GuestError::Rejected(message)
            }
            ErrorKind::Timeout => GuestError::Timeout(message),
            ErrorKind::Unavailable | ErrorKind::UnknownOutcome => GuestError::Unavailable(message),
            ErrorKind::LimitExceeded | ErrorKind::PayloadTooLarge => GuestError::LimitExceeded(message),
            ErrorKind::Internal => GuestError::Internal(message),
        }
    }
}

impl From<GuestError> for ActorError {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::NotFound(m) => ActorError::not_found(m),
            GuestError::Rejected(m) if m.starts_with(BAD_REQUEST_PREFIX) => ActorError::bad_request(m),
            GuestError::Rejected(m) => ActorError::rejected(m),
            GuestError::Timeout(m) => ActorError::timeout(m),
            GuestError::Unavailable(m) => ActorError::unavailable(m),
            GuestError::LimitExceeded(m) => ActorError::limit_exceeded(m),
            GuestError::Internal(m) => ActorError::internal(m),
        }
    }
}
