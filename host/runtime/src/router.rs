//! The one way a message reaches an actor.
//!
//! Every ask and tell — from the HTTP API, from a guest's `call`/`tell`,
//! from the job runner, the outbox dispatcher and the projection runners —
//! asks the host's [`Router`] where its actor lives. [`LocalRouter`] says
//! "here" for every actor; a cluster's router (issue 16) answers from its
//! directory: here (the request runs on this host's activation), or a
//! [`Peer`] that forwards it, or a lookup to await first.
//!
//! A router only decides; the host delivers. So the local path stays
//! statically dispatched and allocation-free, and only forwarding pays for
//! a boxed future (next to a network round trip, nothing).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Request;
use crate::error::ActorError;

/// A reply that arrives once the turn has committed (or its deadline passed).
pub type Reply = BoxFuture<'static, Result<Vec<u8>, ActorError>>;

/// Where a request runs.
pub enum Route {
    /// On this host's activation of the actor.
    Here,
    /// On another host, through this connection to it.
    Forward(Arc<dyn Peer>),
    /// Not known yet (a directory lookup or claim in the shared store):
    /// await this, then follow the route it gives.
    Lookup(BoxFuture<'static, Result<Route, ActorError>>),
}

/// Decides where each request runs. Called once per request, on the
/// request's path: keep the common case (an actor whose place is known)
/// synchronous and cheap.
pub trait Router: Send + Sync + 'static {
    /// Where `request`'s target actor runs.
    fn route(&self, request: &Request) -> Result<Route, ActorError>;
}

/// Another host that runs some actors, as a router reaches it.
pub trait Peer: Send + Sync {
    /// Delivers `request` there and waits for its reply or its deadline.
    fn ask(&self, request: Request) -> Reply;

    /// Queues `request` there behind the messages queued before it, and
    /// returns its reply to await later.
    fn queue_ask(&self, request: Request) -> Result<Reply, ActorError>;

    /// Delivers `request` there without waiting for it.
    fn tell(&self, request: Request) -> Result<(), ActorError>;
}

/// Every actor lives on this host: the single-host router.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRouter;

impl Router for LocalRouter {
    fn route(&self, _request: &Request) -> Result<Route, ActorError> {
        Ok(Route::Here)
    }
}
