//! Moving an actor this host serves to another live host (issue 17):
//!
//! 1. The actor is marked *moving* here: requests on this host for it
//!    (from its callers, jobs, outbox lanes) and peers' calls for it wait
//!    for the move instead of reaching its activation.
//! 2. The activation drains: what is already queued on it runs and
//!    commits here (so every waiting caller gets its reply), then it is
//!    removed ([`quark_runtime::Host::retire`]).
//! 3. The directory entry is handed to the target under a new epoch
//!    ([`ClusterStore::hand_off`]): from then on only the target's commits
//!    land, so a straggler here is fenced.
//! 4. The owners cache names the target, and the mark is lifted: the
//!    waiting requests go to the target in the order they came, and peers
//!    that still send here hear `moved` with the new owner. The target
//!    activates on the first one, reading the state from the store.
//!
//! If the drain runs past its limit (a long turn) or the hand-off is
//! refused (the target's lease lapsed), the actor stays here, served as
//! before. No message is lost or run twice, and one actor's messages stay
//! in order: those before the move ran here, those after run there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quark_core::ActorError;
use quark_core::id::ActorId;
use quark_store::cluster::MemberState;
use tokio::sync::watch;

use crate::Cluster;
use crate::owners::Owner;

/// Longest a migration waits for the actor's queued turns, by default.
pub const MIGRATION_DRAIN: Duration = Duration::from_secs(10);

/// A finished migration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Migrated {
    /// `type/key`.
    pub actor: String,
    /// The host it left.
    pub from: String,
    /// The host that serves it now.
    pub to: String,
    /// The epoch its commits carry from now on.
    pub epoch: u64,
    /// Whether it was active here (false: only its directory entry moved).
    pub was_active: bool,
    /// Time spent letting its queued turns finish, in ms.
    pub drain_ms: f64,
    /// The whole migration, in ms (while it lasted, its new requests waited).
    pub took_ms: f64,
}

/// The actors being moved away from this host. Cheap to consult on every
/// request while nothing moves.
#[derive(Default)]
pub(crate) struct Moving {
    count: AtomicUsize,
    actors: Mutex<HashMap<ActorId, watch::Receiver<()>>>,
}

/// The mark on an actor while it moves; lifting it (on drop) wakes
/// everything that waits for it.
struct Mark<'a> {
    moving: &'a Moving,
    actor: ActorId,
    _lifted_on_drop: watch::Sender<()>,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        self.moving.actors.lock().remove(&self.actor);
        self.moving.count.fetch_sub(1, Ordering::AcqRel);
        // The sender goes after this: waiters see the channel closed.
    }
}

impl Moving {
    /// Marks `actor` moving; `None` if it is already.
    fn mark(&self, actor: &ActorId) -> Option<Mark<'_>> {
        let mut actors = self.actors.lock();
        if actors.contains_key(actor) {
            return None;
        }
        let (tx, rx) = watch::channel(());
        actors.insert(actor.clone(), rx);
        self.count.fetch_add(1, Ordering::AcqRel);
        Some(Mark { moving: self, actor: actor.clone(), _lifted_on_drop: tx })
    }

    /// Whether `actor` is moving now.
    pub(crate) fn is(&self, actor: &ActorId) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.actors.lock().contains_key(actor)
    }

    /// Waits while `actor` moves; true if it was moving.
    pub(crate) async fn wait(&self, actor: &ActorId) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let Some(mut lifted) = self.actors.lock().get(actor).cloned() else { return false };
        // Never sent on: returns once the mark's sender is dropped.
        let _ = lifted.changed().await;
        true
    }
}

impl Cluster {
    /// Moves `actor`, which this host serves, to the live host `to` (see
    /// the module docs): its queued turns finish here first, for at most
    /// `drain`. Refused (nothing changes) when this host does not serve
    /// the actor, `to` is not an active live member, or the actor is
    /// already moving.
    pub async fn migrate(&self, actor: &ActorId, to: &str, drain: Duration) -> Result<Migrated, ActorError> {
        let inner = &self.inner;
        let started = Instant::now();
        let Some(host) = inner.host() else { return Err(ActorError::unavailable("this host is stopping")) };
        if to == inner.info.id {
            return Err(ActorError::bad_request(format!("{actor} is served by {to} already")));
        }
        let ready = |m: &quark_store::cluster::Member| m.is_alive() && m.effective_state() == MemberState::Active;
        if !inner.member(to).is_some_and(|m| ready(&m)) {
            // It may have joined, or become active, since the last heartbeat's read.
            inner.refresh_members().await?;
        }
        let target = match inner.member(to) {
            Some(m) if ready(&m) => m,
            Some(m) => return Err(ActorError::conflict(format!("host {to} is {:?}, not active: it takes no actors", m.effective_state()))),
            None => return Err(ActorError::not_found(format!("no host {to} in the cluster"))),
        };
        let Some(incarnation) = inner.standing() else { return Err(crate::lease_lapsed(actor)) };
        let epoch = match inner.owners.get(actor) {
            Some(Owner::Here { incarnation: held, epoch }) if held == incarnation => epoch,
            _ => match inner.cluster().owner(actor).await? {
                Some(o) if o.host == inner.info.id && o.incarnation == incarnation => o.epoch,
                Some(o) => return Err(ActorError::conflict(format!("{actor} is served by host {}, not {}", o.host, inner.info.id))),
                None => return Err(ActorError::not_found(format!("no host serves {actor}: it is placed when it is next called"))),
            },
        };
        let Some(mark) = inner.moving.mark(actor) else {
            return Err(ActorError::conflict(format!("{actor} is moving already")));
        };
        let drained = Instant::now();
        let was_active = match host.retire(actor, drain).await {
            Ok(was_active) => was_active,
            Err(e) => {
                drop(mark);
                host.metrics().record_migration(false, started.elapsed());
                return Err(e);
            }
        };
        let drain_ms = drained.elapsed().as_secs_f64() * 1e3;
        let owner = match inner.cluster().hand_off(actor, epoch, to, target.incarnation).await {
            Ok(Some(owner)) => owner,
            Ok(None) => {
                drop(mark);
                host.metrics().record_migration(false, started.elapsed());
                return Err(ActorError::conflict(format!(
                    "{actor} was not handed to {to}: its lease lapsed or the actor moved meanwhile; it stays where the directory says"
                )));
            }
            Err(e) => {
                // The outcome may be unknown: the next request reads the directory.
                inner.owners.remove(actor);
                drop(mark);
                host.metrics().record_migration(false, started.elapsed());
                return Err(e.into());
            }
        };
        inner.owners.insert(actor.clone(), Owner::There { host: owner.host.clone() });
        drop(mark);
        // A request that raced the mark may have activated it again: its
        // commits are fenced now; let it go as soon as it is quiet.
        let _ = host.retire(actor, Duration::ZERO).await;
        let took = started.elapsed();
        host.metrics().record_migration(true, took);
        tracing::info!(%actor, to, epoch = owner.epoch, ?took, "actor migrated");
        Ok(Migrated {
            actor: actor.to_string(),
            from: inner.info.id.clone(),
            to: owner.host,
            epoch: owner.epoch,
            was_active,
            drain_ms,
            took_ms: took.as_secs_f64() * 1e3,
        })
    }

    /// Who serves `actor` now, by the directory: its host id and API
    /// address, or `None` when no host does.
    pub async fn owner_of(&self, actor: &ActorId) -> Result<Option<(String, String)>, ActorError> {
        let Some(owner) = self.inner.cluster().owner(actor).await? else { return Ok(None) };
        let api = if owner.host == self.inner.info.id {
            self.inner.info.api.clone()
        } else {
            self.inner.member(&owner.host).map(|m| m.host.api).unwrap_or_default()
        };
        Ok(Some((owner.host, api)))
    }
}
