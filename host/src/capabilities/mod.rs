//! The host side of each WIT interface in `wit/`, one file per interface.
//!
//! Every import is implemented on [`TurnState`], the data of one actor's
//! wasmtime store. Backend failures never trap a guest: they come back as the
//! WIT `error` variant.

mod log;
mod runtime;
mod state;

use crate::error::{ActorError, ErrorKind};
use crate::runtime::turn::TurnState;

/// Bindings generated from `wit/` for the `actor` world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "actor",
        imports: {
            "quark:actor/runtime.call": async,
        },
        exports: { default: async },
    });
}

pub(crate) use bindings::quark::actor::types::Error as GuestError;
pub(crate) use bindings::{Actor, ActorPre};

impl bindings::quark::actor::types::Host for TurnState {}

/// Adds every Quark capability, and the WASI interfaces Rust's standard
/// library expects, to `linker`.
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<TurnState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Actor::add_to_linker::<TurnState, wasmtime::component::HasSelf<TurnState>>(linker, |state| state)?;
    Ok(())
}

impl From<ActorError> for GuestError {
    fn from(e: ActorError) -> Self {
        let ActorError { kind, message } = e;
        match kind {
            ErrorKind::NotFound => GuestError::NotFound(message),
            ErrorKind::Rejected | ErrorKind::BadRequest | ErrorKind::Unauthorized => GuestError::Rejected(message),
            ErrorKind::Timeout => GuestError::Timeout(message),
            ErrorKind::Unavailable => GuestError::Unavailable(message),
            ErrorKind::LimitExceeded | ErrorKind::PayloadTooLarge => GuestError::LimitExceeded(message),
            ErrorKind::Internal => GuestError::Internal(message),
        }
    }
}

impl From<GuestError> for ActorError {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::NotFound(m) => ActorError::not_found(m),
            GuestError::Rejected(m) => ActorError::rejected(m),
            GuestError::Timeout(m) => ActorError::timeout(m),
            GuestError::Unavailable(m) => ActorError::unavailable(m),
            GuestError::LimitExceeded(m) => ActorError::limit_exceeded(m),
            GuestError::Internal(m) => ActorError::internal(m),
        }
    }
}
