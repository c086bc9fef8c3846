//! The one way a message reaches an actor.
//!
//! Every ask and tell — from the HTTP API, from a guest's `call`/`tell`,
//! from the job runner, the outbox dispatcher and the projection runners —
//! goes through the host's [`Router`]. [`LocalRouter`] delivers on this
//! host's activations; a cluster's router (issue 16) decides per request
//! whether the actor lives here (and hands it to the same local delivery)
//! or on a peer (and forwards it there).

use futures::future::BoxFuture;

use super::{Host, Request};
use crate::error::ActorError;

/// A reply that arrives once the turn has committed (or its deadline passed).
pub type Reply = BoxFuture<'static, Result<Vec<u8>, ActorError>>;

/// Where a request runs. Methods get the host the request came to, so a
/// router holds only its own state (a directory, peer connections), never
/// the host itself.
pub trait Router: Send + Sync + 'static {
    /// Delivers `request` and waits for its reply or its deadline.
    fn ask<'a>(&'a self, host: &'a Host, request: Request) -> BoxFuture<'a, Result<Vec<u8>, ActorError>>;

    /// Queues `request` on its actor's mailbox, behind the messages queued
    /// before it (never run inline), and returns its reply to await later:
    /// the outbox queues a lane's messages in order this way.
    fn queue_ask(&self, host: &Host, request: Request) -> Result<Reply, ActorError>;

    /// Delivers `request` without waiting for it (a volatile tell).
    fn tell(&self, host: &Host, request: Request) -> Result<(), ActorError>;
}

/// Every actor lives on this host: the single-host router.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRouter;

impl Router for LocalRouter {
    fn ask<'a>(&'a self, host: &'a Host, request: Request) -> BoxFuture<'a, Result<Vec<u8>, ActorError>> {
        Box::pin(host.ask_here(request))
    }

    fn queue_ask(&self, host: &Host, request: Request) -> Result<Reply, ActorError> {
        host.queue_here(request)
    }

    fn tell(&self, host: &Host, request: Request) -> Result<(), ActorError> {
        host.tell_here(request)
    }
}
