//! The cluster's [`Router`]: every request on this host (an HTTP call, a
//! guest's `call` or `tell`, a job, an outbox delivery, a projection
//! batch) runs where its actor's owner is.
//!
//! The fast path is synchronous: an actor this host owns runs here; one
//! another live host owns is forwarded there; both from the cache of
//! owners. Otherwise a lookup: the placement function picks a host for
//! the actor; if that is this host, it claims the actor in the directory
//! (the claim answers with the live owner if there is one); if another,
//! it reads the directory and forwards to the owner, or to the chosen
//! host, which claims the actor when the request arrives.
//!
//! A forwarded call that finds the actor gone (`moved`: the receiving
//! host does not own it, or is leaving) or the host unreachable (the
//! connection was refused, so nothing ran) is routed again once. A
//! connection that breaks after the request went out is `unknown-outcome`:
//! the turn may have happened, so only a retry with an idempotency key is
//! safe.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use quark_core::ActorError;
use quark_core::id::ActorId;
use quark_runtime::router::{Peer, Reply, Route, Router};
use quark_runtime::{Control, Request};
use quark_store::cluster::Ownership;

use crate::owners::Owner;
use crate::placement::Candidate;
use crate::transport::PeerHost;
use crate::transport::link::LinkError;
use crate::wire::{Frame, Mode, Outcome, WireRequest};
use crate::{Inner, lease_lapsed};

/// The router of a host in a cluster. Create it before the host (the host
/// is started with it), then [`crate::Cluster::join`] attaches the
/// cluster; until then every request runs here.
#[derive(Default)]
pub struct ClusterRouter {
    inner: OnceLock<Arc<Inner>>,
}

impl std::fmt::Debug for ClusterRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRouter").field("attached", &self.inner.get().is_some()).finish()
    }
}

impl ClusterRouter {
    /// A router with no cluster attached yet.
    pub fn new() -> Self {
        ClusterRouter::default()
    }

    pub(crate) fn attach(&self, inner: Arc<Inner>) {
        let _ = self.inner.set(inner);
    }
}

impl Router for ClusterRouter {
    fn route(&self, request: &Request) -> Result<Route, ActorError> {
        let Some(inner) = self.inner.get() else { return Ok(Route::Here) };
        if let Some(found) = inner.cached(&request.target) {
            if let Some(caller) = &request.caller {
                inner.sample_call(caller, &request.target, found.host(inner));
            }
            return Ok(found.into_route(inner));
        }
        let (inner, actor, caller) = (inner.clone(), request.target.clone(), request.caller.clone());
        Ok(Route::Lookup(Box::pin(async move {
            let found = inner.resolve(&actor).await?;
            if let Some(caller) = &caller {
                inner.sample_call(caller, &actor, found.host(&inner));
            }
            Ok(found.into_route(&inner))
        })))
    }
}

/// Where an actor runs, as this host found it.
enum Found {
    Here,
    There(Arc<PeerHost>),
}

impl Found {
    /// The id of the host it runs on.
    fn host<'a>(&'a self, inner: &'a Inner) -> &'a str {
        match self {
            Found::Here => &inner.info.id,
            Found::There(peer) => &peer.id,
        }
    }

    fn into_route(self, inner: &Arc<Inner>) -> Route {
        match self {
            Found::Here => Route::Here,
            Found::There(peer) => Route::Forward(Arc::new(Forward { inner: inner.clone(), peer })),
        }
    }
}

/// Why a forwarded call should be routed again: nothing ran.
struct Reroute(String);

impl Inner {
    /// The owner from the cache, when it is usable as it is.
    fn cached(&self, actor: &ActorId) -> Option<Found> {
        if self.moving.is(actor) {
            return None;
        }
        match self.owners.get(actor)? {
            Owner::Here { incarnation, .. } if self.standing() == Some(incarnation) => Some(Found::Here),
            Owner::There { host } => self.peers.get(&host).filter(|p| p.usable()).map(Found::There),
            Owner::Here { .. } => None,
        }
    }

    /// Finds (or chooses) where `actor` runs, asking the store.
    async fn resolve(self: &Arc<Self>, actor: &ActorId) -> Result<Found, ActorError> {
        if self.moving.wait(actor).await
            && let Some(found) = self.cached(actor)
        {
            return Ok(found);
        }
        let Some(incarnation) = self.standing() else { return Err(lease_lapsed(actor)) };
        let need = self.host().and_then(|h| h.memory_need(actor.actor_type())).unwrap_or(0);
        let candidates = self.candidates();
        let by_fit = self.placement.by_fit();
        let fit: Vec<Candidate> =
            candidates.iter().filter(|c| !by_fit || c.free >= need).map(|c| Candidate { id: &c.id, free: c.free }).collect();
        let offered = if fit.is_empty() {
            // Fits nowhere by the figures: the chosen host sheds idle
            // activations to make room, or refuses with `limit-exceeded`.
            candidates.iter().map(|c| Candidate { id: &c.id, free: c.free }).collect()
        } else {
            fit
        };
        let target = self.placement.place(actor, &self.info.id, &offered).to_string();
        self.placed_there(&target, need);
        if target == self.info.id {
            let owner = self.cluster().claim(actor, &self.info.id, incarnation).await?;
            self.learn(actor, &owner);
            self.meet(&owner.host).await;
            return self.found(actor, &owner, incarnation);
        }
        match self.cluster().owner(actor).await? {
            Some(owner) if self.holds(&owner) => {
                self.learn(actor, &owner);
                self.meet(&owner.host).await;
                self.found(actor, &owner, incarnation)
            }
            // No live owner: the chosen host claims it when the request arrives.
            _ => match self.peers.get(&target) {
                Some(peer) => {
                    self.owners.insert(actor.clone(), Owner::There { host: target });
                    Ok(Found::There(peer))
                }
                None => Err(unreachable(actor, &target, self.lease)),
            },
        }
    }

    /// Reads the members again when `host` owns an actor but has no peer
    /// link here: it joined after the last read (up to a heartbeat ago),
    /// and its actors should not fail `unavailable` until the next one.
    async fn meet(&self, host: &str) {
        if host != self.info.id
            && self.peers.get(host).is_none()
            && let Err(e) = self.refresh_members().await
        {
            tracing::debug!(peer = %host, error = %e, "reading the members for a host not met yet failed");
        }
    }

    /// The cached owner, or else a lookup.
    async fn locate(self: &Arc<Self>, actor: &ActorId) -> Result<Found, ActorError> {
        match self.cached(actor) {
            Some(found) => Ok(found),
            None => self.resolve(actor).await,
        }
    }

    /// Whether `owner` still holds the actor, by the members as last read
    /// (a member not read yet is taken to be alive: it just joined).
    fn holds(&self, owner: &Ownership) -> bool {
        if owner.host == self.info.id {
            return self.standing() == Some(owner.incarnation);
        }
        match self.members.read().iter().find(|m| m.host.id == owner.host) {
            Some(member) => member.incarnation == owner.incarnation && member.is_alive(),
            None => true,
        }
    }

    fn found(&self, actor: &ActorId, owner: &Ownership, incarnation: i64) -> Result<Found, ActorError> {
        if owner.host == self.info.id {
            return if owner.incarnation == incarnation { Ok(Found::Here) } else { Err(lease_lapsed(actor)) };
        }
        match self.peers.get(&owner.host) {
            Some(peer) if peer.usable() => Ok(Found::There(peer)),
            _ => Err(unreachable(actor, &owner.host, self.lease)),
        }
    }

    /// Sends `request` to `peer` once. `Err(Reroute)`: nothing ran there,
    /// and the cache was corrected, so routing it again is safe.
    async fn forward_once(&self, peer: &PeerHost, request: &Request) -> Result<Result<Vec<u8>, ActorError>, Reroute> {
        let outcome = peer.link().call(Mode::Ask, WireRequest::from_request(request), request.deadline).await;
        self.settle(peer, request, outcome)
    }

    /// What a forwarded call's outcome means for its caller, correcting
    /// the cache on the way.
    fn settle(&self, peer: &PeerHost, request: &Request, outcome: Result<Outcome, LinkError>) -> Result<Result<Vec<u8>, ActorError>, Reroute> {
        let actor = &request.target;
        match outcome {
            Ok(Outcome::Ok { reply, effect_free }) => {
                if effect_free && let Some(Control::Job(job)) = request.control.as_deref() {
                    job.effect_free.store(true, Ordering::Release);
                }
                Ok(Ok(reply))
            }
            Ok(Outcome::Err { kind, message }) => Ok(Err(ActorError { kind, message })),
            Ok(Outcome::Moved { owner, leaving }) => {
                if leaving {
                    peer.leaving();
                    self.owners.forget_host(&peer.id);
                } else {
                    self.owners.forget(actor, &peer.id);
                    if let Some(owner) = owner.filter(|o| *o != self.info.id) {
                        self.owners.insert(actor.clone(), Owner::There { host: owner });
                    }
                }
                Err(Reroute(format!("host {} does not serve {actor} (any more)", peer.id)))
            }
            Err(LinkError::NotSent(why)) => {
                tracing::warn!(peer = %peer.id, %why, "a peer host is unreachable; routing its actors elsewhere once its lease lapses");
                peer.refused();
                self.owners.forget_host(&peer.id);
                self.suspect(peer);
                Err(Reroute(format!("host {} is unreachable ({why})", peer.id)))
            }
            Err(LinkError::Lost(why)) => Ok(Err(ActorError::unknown_outcome(format!(
                "{why} after the call to {actor} `{}` was sent to host {}: the turn may have happened; \
                 retry only with an Idempotency-Key",
                request.method, peer.id
            )))),
            Err(LinkError::TimedOut) => Ok(Err(ActorError::timeout(format!(
                "no reply from host {} for {actor} `{}` before the deadline (call chain {}): the turn may have happened",
                peer.id, request.method, request.chain
            )))),
        }
    }

    /// Marks `peer` suspect in the store (no new actors go there), in the background.
    fn suspect(&self, peer: &PeerHost) {
        let (store, id, incarnation) = (self.store.clone(), peer.id.clone(), peer.incarnation());
        tokio::spawn(async move {
            if let Some(cluster) = store.cluster_store()
                && let Err(e) = cluster.suspect(&id, incarnation).await
            {
                tracing::debug!(peer = %id, error = %e, "marking a peer suspect failed");
            }
        });
    }
}

fn unreachable(actor: &ActorId, host: &str, lease: std::time::Duration) -> ActorError {
    ActorError::unavailable(format!(
        "{actor} is served by host {host}, which this host cannot reach now: nothing ran. \
         If that host is gone, its actors move to the others once its lease ({lease:?}) lapses; retry"
    ))
}

/// How many hosts one call is sent to, at most, while it chases an actor
/// that moves (each `moved` answer means nothing ran there).
const REROUTES: usize = 3;

/// A request on its way to another host.
struct Forward {
    inner: Arc<Inner>,
    peer: Arc<PeerHost>,
}

impl Peer for Forward {
    fn ask(&self, request: Request) -> Reply {
        let (inner, peer) = (self.inner.clone(), self.peer.clone());
        Box::pin(async move {
            let mut why = match inner.forward_once(&peer, &request).await {
                Ok(result) => return result,
                Err(Reroute(why)) => why,
            };
            // Nothing ran: again, wherever the actor is now. An actor can
            // move twice while one call chases it (a rebalancer round
            // right after another host's), so it gets a few tries.
            for _ in 1..REROUTES {
                match inner.locate(&request.target).await? {
                    Found::Here => {
                        return match inner.host() {
                            Some(host) => host.ask_here(request).await,
                            None => Err(ActorError::unavailable("this host is stopping")),
                        };
                    }
                    Found::There(peer) => match inner.forward_once(&peer, &request).await {
                        Ok(result) => return result,
                        Err(Reroute(again)) => why = again,
                    },
                }
            }
            Err(ActorError::unavailable(format!("{why}, after {REROUTES} tries: nothing ran; retry")))
        })
    }

    fn queue_ask(&self, request: Request) -> Result<Reply, ActorError> {
        // Queued behind the calls before it on the connection, so it is
        // not routed again on `moved` (it would overtake them): the caller
        // (a lane of the outbox) retries it in order.
        let pending = self.peer.link().call(Mode::Queue, WireRequest::from_request(&request), request.deadline);
        let (inner, peer) = (self.inner.clone(), self.peer.clone());
        Ok(Box::pin(async move {
            let outcome = pending.await;
            inner.settle(&peer, &request, outcome).unwrap_or_else(|Reroute(why)| Err(ActorError::unavailable(format!("{why}: nothing ran"))))
        }))
    }

    fn tell(&self, request: Request) -> Result<(), ActorError> {
        let frame = Frame::Call { id: 0, mode: Mode::Tell, request: WireRequest::from_request(&request) };
        self.peer.link().send(&frame).map_err(|e| ActorError::unavailable(format!("telling {} on host {}: {e:?}", request.target, self.peer.id)))
    }
}
