//! The error every actor-facing operation returns: one kind from the WIT
//! `error` variant plus a message naming the cause.

use serde::{Deserialize, Serialize};

/// The kind of an [`ActorError`]; the same cases as the WIT `error` variant,
/// plus the HTTP-only ones a guest never sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Unknown actor type, method or component version.
    NotFound,
    /// The actor (or the host, for a deploy) refused the request.
    Rejected,
    /// A deadline passed: turn time limit, call deadline.
    Timeout,
    /// The store (or another dependency) is unavailable.
    Unavailable,
    /// Memory, payload or state size limit exceeded.
    LimitExceeded,
    /// Guest trap or unexpected host failure.
    Internal,
    /// An optimistic-concurrency check failed (a journal moved under the
    /// turn); guests see it as `rejected`.
    Conflict,
    /// Malformed request: bad JSON, bad actor id, bad parameter.
    BadRequest,
    /// Request body over the host's payload limit.
    PayloadTooLarge,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A request from a foreign origin or for a host name this host does
    /// not serve (cross-site requests, DNS rebinding).
    Forbidden,
    /// The store may or may not have committed the turn (its
    /// acknowledgement was lost): only a retry with the same idempotency
    /// key is safe. Guests see it as `unavailable`.
    UnknownOutcome,
}

impl ErrorKind {
    /// The kebab-case name used in JSON error bodies and CLI messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::LimitExceeded => "limit-exceeded",
            ErrorKind::Internal => "internal",
            ErrorKind::Conflict => "conflict",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::UnknownOutcome => "unknown-outcome",
        }
    }
}

/// An error from deploying, calling or inspecting actors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct ActorError {
    /// What went wrong, as a category.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl ActorError {
            $(
                #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
                pub fn $name(message: impl Into<String>) -> Self {
                    ActorError { kind: ErrorKind::$kind, message: message.into() }
                }
            )*
        }
    };
}

constructors! {
    not_found => NotFound,
    rejected => Rejected,
    timeout => Timeout,
    unavailable => Unavailable,
    limit_exceeded => LimitExceeded,
    internal => Internal,
    conflict => Conflict,
    bad_request => BadRequest,
    payload_too_large => PayloadTooLarge,
    unauthorized => Unauthorized,
    forbidden => Forbidden,
    unknown_outcome => UnknownOutcome,
}
