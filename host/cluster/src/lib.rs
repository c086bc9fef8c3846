//! Quark's cluster: several hosts on one shared store (PostgreSQL, Redis)
//! serving every actor from exactly one of them.
//!
//! A [`Cluster`] is one host's part in it:
//! - **membership** ([`membership`]): it joins the members' rows, renews
//!   its lease with a heartbeat, reaps members whose lease lapsed, keeps a
//!   snapshot of the others, and leaves (handing its actors off) on stop;
//! - **the directory as the runtime sees it** ([`quark_runtime::directory`]):
//!   an activation claims its actor before it reads the state, and commits
//!   under the claim's epoch (the fence);
//! - **placement** ([`placement`]): where an actor no live host owns goes;
//! - **routing** ([`router`]): [`ClusterRouter`] answers the runtime's
//!   "where does this request run?" from a cache of owners, forwarding
//!   over the host-to-host **transport** ([`transport`]: one multiplexed
//!   connection per peer) to the owner; a stale entry is answered `moved`
//!   and retried once;
//! - **memory** (issue 17): activations go where they fit; actors move
//!   between hosts ([`migration`]), to even out memory ([`rebalance`],
//!   `--rebalance`) and off a host past its high watermark whose memory
//!   is held by busy actors (`relief`, always on);
//! - **deploys** reach every host: each looks at the store's active
//!   versions twice a second and at once when a peer says it deployed.
//!
//! The rules that keep one owner per actor, and what they cost, are in
//! `docs/cluster.md`; the rows and their transactions are the store's
//! ([`quark_store::cluster`]).

#![warn(missing_docs)]

pub mod locality;
pub mod membership;
pub mod migration;
mod owners;
pub mod placement;
pub mod rebalance;
mod relief;
pub mod router;
pub mod transport;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quark_core::ActorError;
use quark_core::id::ActorId;
use quark_runtime::directory::{ActorDirectory, Placement as Claimed};
use quark_runtime::{Host, WeakHost};
use quark_store::StoreError;
use quark_store::cluster::{ClusterStore, HostInfo, HostLoad, Member, MemberState, Ownership};

pub use self::membership::{DEFAULT_HEARTBEAT, DEFAULT_LEASE};
use self::owners::{Owner, Owners};
use self::placement::Placement;
pub use self::router::ClusterRouter;
use self::transport::Peers;
use self::wire::Outcome;

/// How long a leaving host waits for its turns in flight to finish
/// before it gives its actors up anyway.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// How often a host looks for versions deployed through another host
/// (the deploying host also asks each to look at once).
const VERSION_POLL: Duration = Duration::from_millis(500);

/// Longest a deploy waits for the other hosts to confirm they serve it.
pub const DEPLOY_CONFIRM: Duration = Duration::from_secs(2);

/// How a host takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This host's id; a fresh one per process when `None`.
    pub host_id: Option<String>,
    /// Where clients reach this host's API (`host:port`).
    pub api: String,
    /// Where this host listens for other hosts (`host:port`; port 0 picks one).
    pub peer_listen: String,
    /// The address other hosts dial, when it is not the one bound (a
    /// NAT, a container's published port, a proxy); `None`: the bound one.
    pub peer_advertise: Option<String>,
    /// How long the host holds its actors without a heartbeat.
    pub lease: Duration,
    /// How often it renews its lease.
    pub heartbeat: Duration,
    /// Where new activations go.
    pub placement: Arc<dyn Placement>,
    /// How often the rebalancer ([`rebalance`]) runs; `None`: it does not.
    pub rebalance: Option<Duration>,
    /// How often the locality repartitioner ([`locality`]) pairs with a
    /// peer; `None`: it does not (calls are still sampled).
    pub repartition: Option<Duration>,
}

impl ClusterConfig {
    /// The defaults, for a host whose API listens on `api`: peers reach it
    /// on an ephemeral loopback port, actors are placed by hash.
    pub fn new(api: impl Into<String>) -> Self {
        ClusterConfig {
            host_id: None,
            api: api.into(),
            peer_listen: "127.0.0.1:0".into(),
            peer_advertise: None,
            lease: DEFAULT_LEASE,
            heartbeat: DEFAULT_HEARTBEAT,
            placement: Arc::new(placement::HashPlacement),
            rebalance: None,
            repartition: None,
        }
    }
}

/// This host's part in the cluster. Cheap to clone; the heartbeat stops
/// when the last clone (and the router) is gone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.inner.info.id).finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    store: Arc<dyn quark_store::Store>,
    info: HostInfo,
    lease: Duration,
    heartbeat: Duration,
    host: WeakHost,
    status: Mutex<Status>,
    /// The other members as last read (every heartbeat).
    members: RwLock<Arc<Vec<Member>>>,
    owners: Owners,
    peers: Peers,
    placement: Arc<dyn Placement>,
    /// Bytes this host placed on each peer since it last read the members.
    placed: Mutex<std::collections::HashMap<String, u64>>,
    /// Set when the host starts to leave: peers' calls wait, then hear `moved`.
    closing: AtomicBool,
    /// Sent `true` once the host has left (its actors are free to claim).
    left: tokio::sync::watch::Sender<bool>,
    /// Peers' calls admitted and not yet answered.
    incoming: AtomicUsize,
    /// When a peer's last frame arrived (ms since the epoch).
    pub(crate) last_frame_ms: std::sync::atomic::AtomicI64,
    /// Actors being migrated away from this host ([`migration`]).
    pub(crate) moving: migration::Moving,
    /// The sampled call graph and the repartitioner's state ([`locality`]).
    pub(crate) locality: locality::Locality,
}

/// A candidate host for a new activation and its free memory.
pub(crate) struct HostRoom {
    pub(crate) id: String,
    pub(crate) free: u64,
}

/// What changes as the host lives: its incarnation (a new one after it was
/// declared dead), its state and its own lease deadline.
struct Status {
    incarnation: i64,
    state: MemberState,
    lease_until: Instant,
}

/// A peer's call admitted to run here; counted until dropped, so that a
/// leaving host knows when its last one is done.
pub(crate) struct Admitted(Arc<Inner>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.incoming.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Cluster {
    /// Joins the cluster on `host`'s store (state `joining`), listens for
    /// peers, starts the heartbeat and the version watch, and makes
    /// `router` (the host's, see [`ClusterRouter`]) and the host's
    /// directory this cluster. Fails when the store is single-host, the
    /// peer address cannot be bound, or the id is taken by a live member.
    pub async fn join(host: &Host, router: &ClusterRouter, config: ClusterConfig) -> anyhow::Result<Cluster> {
        let store = host.store().clone();
        let cluster = store
            .cluster_store()
            .ok_or_else(|| anyhow::anyhow!("the {} store is single-host: a cluster needs PostgreSQL or Redis", store.backend_name()))?;
        let listener = tokio::net::TcpListener::bind(&config.peer_listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening for peers on {}: {e}", config.peer_listen))?;
        let peer = match &config.peer_advertise {
            Some(advertised) => advertised.clone(),
            None => listener.local_addr()?.to_string(),
        };
        let id = config.host_id.clone().unwrap_or_else(|| format!("host-{}", &quark_core::jobs::new_lease()[..12]));
        let info = HostInfo { id, api: config.api.clone(), peer };
        let sent = Instant::now();
        let incarnation = cluster.join(&info, config.lease.as_millis() as i64).await?;
        tracing::info!(host = %info.id, incarnation, peer = %info.peer, "joined the cluster");
        let inner = Arc::new(Inner {
            store,
            info,
            lease: config.lease,
            heartbeat: config.heartbeat,
            host: host.downgrade(),
            status: Mutex::new(Status { incarnation, state: MemberState::Joining, lease_until: sent + config.lease }),
            members: RwLock::new(Arc::new(Vec::new())),
            owners: Owners::default(),
            peers: Peers::default(),
            placement: config.placement,
            placed: Mutex::default(),
            closing: AtomicBool::new(false),
            left: tokio::sync::watch::channel(false).0,
            incoming: AtomicUsize::new(0),
            last_frame_ms: std::sync::atomic::AtomicI64::new(0),
            moving: Default::default(),
            locality: locality::Locality::new(config.repartition),
        });
        if let Err(e) = inner.refresh_members().await {
            tracing::warn!(error = %e, "reading the cluster's members failed; retrying with the next heartbeat");
        }
        tokio::spawn(transport::server::serve(listener, Arc::downgrade(&inner)));
        tokio::spawn(membership::beat(Arc::downgrade(&inner)));
        tokio::spawn(watch_versions(Arc::downgrade(&inner)));
        if let Some(period) = config.rebalance {
            tokio::spawn(rebalance::run(Arc::downgrade(&inner), period));
        }
        tokio::spawn(relief::run(Arc::downgrade(&inner)));
        tokio::spawn(locality::run(Arc::downgrade(&inner)));
        router.attach(inner.clone());
        host.set_directory(Arc::new(Cluster { inner: inner.clone() }));
        Ok(Cluster { inner })
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.inner.info.id
    }

    /// Where other hosts reach this one.
    pub fn peer_addr(&self) -> &str {
        &self.inner.info.peer
    }

    /// Marks the host active (serving) from its next heartbeat on; now, too.
    pub async fn set_active(&self) -> Result<(), StoreError> {
        self.inner.status.lock().state = MemberState::Active;
        self.inner.renew().await
    }

    /// Every member, as the store sees them now.
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        self.inner.cluster().members().await
    }

    /// Tells the other hosts that this one deployed or rolled back, and
    /// waits (at most [`DEPLOY_CONFIRM`]) until each serves the store's
    /// active versions. Returns the hosts that did not confirm (they find
    /// the change themselves within [`VERSION_POLL`] of reaching the store).
    pub async fn versions_changed(&self) -> Vec<String> {
        let deadline = Instant::now() + DEPLOY_CONFIRM;
        // The members as they are now: a host that joined since the last
        // heartbeat's read must confirm too.
        if let Err(e) = self.inner.refresh_members().await {
            tracing::warn!(error = %e, "reading the members before confirming a deploy failed; asking the hosts known already");
        }
        let asked = self.inner.peers.usable().into_iter().map(|peer| {
            let confirmed = peer.link().versions_changed(deadline);
            async move { (peer.id.clone(), confirmed.await) }
        });
        let mut unconfirmed = Vec::new();
        for (peer, outcome) in futures::future::join_all(asked).await {
            if !matches!(outcome, Ok(wire::Outcome::Ok { .. })) {
                tracing::warn!(peer, outcome = ?outcome, "a host did not confirm that it serves the new versions; it catches up from the store");
                unconfirmed.push(peer);
            }
        }
        unconfirmed
    }

    /// Leaves the cluster, handing this host's actors off: no new
    /// activations are placed here (state `leaving`); peers' calls that
    /// arrive from now on wait; the turns in flight finish (for at most
    /// `drain`); then the host's rows and directory entries go, and the
    /// waiting calls are answered `moved`, so their senders claim the
    /// actors elsewhere. Call it once the host takes no more work of its
    /// own (its API, jobs and outbox stopped).
    pub async fn leave(&self, drain: Duration) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        let incarnation = {
            let mut status = inner.status.lock();
            status.state = MemberState::Leaving;
            status.incarnation
        };
        let lease_ms = inner.lease.as_millis() as i64;
        if let Err(e) = inner.cluster().heartbeat(&inner.info.id, incarnation, MemberState::Leaving, lease_ms, &HostLoad::default()).await {
            tracing::warn!(error = %e, "announcing that this host leaves failed; leaving anyway");
        }
        let started = Instant::now();
        while started.elapsed() < drain && (inner.incoming.load(Ordering::Acquire) > 0 || inner.busy()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = inner.cluster().leave(&inner.info.id, incarnation).await;
        inner.left.send_replace(true);
        left?;
        tracing::info!(host = %inner.info.id, drained_in = ?started.elapsed(), "left the cluster");
        // Peers that cached this host as an actor's owner still send it
        // calls until the `moved` answers (or their next read of the
        // members) tell them: go on answering `moved` until the peers fall
        // quiet, so that none of their calls breaks on a closed connection
        // (its outcome unknown) though it never ran.
        let quiet = (inner.heartbeat * 2).max(Duration::from_millis(100));
        let lingered = Instant::now();
        while lingered.elapsed() < inner.lease && ms_since(inner.last_frame_ms.load(Ordering::Acquire)) < quiet.as_millis() as i64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// The directory the runtime claims actors in: the shared store's, under
/// this host's id and incarnation, with the owners this host knows cached.
#[async_trait::async_trait]
impl ActorDirectory for Cluster {
    async fn claim(&self, actor: &ActorId, incarnation: i64) -> Result<Claimed, ActorError> {
        let inner = &self.inner;
        inner.moving.wait(actor).await;
        // An actor this incarnation claimed is its own until the host is
        // declared dead (a new incarnation) or lets it go.
        if let Some(Owner::Here { incarnation: held, epoch }) = inner.owners.get(actor)
            && held == incarnation
        {
            return Ok(Claimed::Here { epoch });
        }
        let owner = inner.cluster().claim(actor, &inner.info.id, incarnation).await?;
        inner.learn(actor, &owner);
        if owner.host == inner.info.id && owner.incarnation == incarnation {
            return Ok(Claimed::Here { epoch: owner.epoch });
        }
        let api = inner.member(&owner.host).map(|m| m.host.api).unwrap_or_default();
        Ok(Claimed::Elsewhere { host: owner.host, api })
    }

    fn standing(&self) -> Option<i64> {
        self.inner.standing()
    }
}

impl Inner {
    fn cluster(&self) -> &dyn ClusterStore {
        self.store.cluster_store().expect("a member's store is a cluster store")
    }

    pub(crate) fn host(&self) -> Option<Host> {
        self.host.upgrade()
    }

    /// `Some(incarnation)` while this host holds its lease (by its own,
    /// earlier, clock), read in one go.
    fn standing(&self) -> Option<i64> {
        let status = self.status.lock();
        (Instant::now() < status.lease_until).then_some(status.incarnation)
    }

    /// Whether a turn is running or queued on this host.
    fn busy(&self) -> bool {
        self.host().is_some_and(|h| h.actors().iter().any(|a| a.pending > 0))
    }

    /// The member `id` as last read.
    fn member(&self, id: &str) -> Option<Member> {
        self.members.read().iter().find(|m| m.host.id == id).cloned()
    }

    /// Records who owns `actor` as the store just said.
    fn learn(&self, actor: &ActorId, owner: &Ownership) {
        let mine = owner.host == self.info.id && self.standing() == Some(owner.incarnation);
        let entry = if mine { Owner::Here { incarnation: owner.incarnation, epoch: owner.epoch } } else { Owner::There { host: owner.host.clone() } };
        self.owners.insert(actor.clone(), entry);
    }

    /// Lets a peer's call for `target` run here if this host serves the
    /// actor (claiming it when no live host does); otherwise the outcome
    /// to answer with (`moved`, a lapsed lease, a bad id).
    pub(crate) async fn admit(self: &Arc<Self>, target: &str) -> Result<Admitted, Outcome> {
        if self.closing.load(Ordering::Acquire) {
            let mut left = self.left.subscribe();
            let _ = left.wait_for(|left| *left).await;
            return Err(Outcome::Moved { owner: None, leaving: true });
        }
        let actor = ActorId::parse(target).map_err(|e| Outcome::of(Err(e), false))?;
        let Some(incarnation) = self.standing() else {
            return Err(Outcome::of(Err(lease_lapsed(&actor)), false));
        };
        // A call that arrives while the actor moves away waits for the
        // move; then the owner is the target, and it hears `moved`.
        self.moving.wait(&actor).await;
        self.incoming.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.clone());
        if let Some(Owner::Here { incarnation: held, .. }) = self.owners.get(&actor)
            && held == incarnation
        {
            return Ok(admitted);
        }
        match self.cluster().claim(&actor, &self.info.id, incarnation).await {
            Ok(owner) => {
                self.learn(&actor, &owner);
                if owner.host == self.info.id && owner.incarnation == incarnation {
                    Ok(admitted)
                } else {
                    Err(Outcome::Moved { owner: Some(owner.host), leaving: false })
                }
            }
            Err(e) => Err(Outcome::of(Err(e.into()), false)),
        }
    }

    /// The hosts a new activation may go to, with their free memory: the
    /// active members whose lease holds (this one among them unless it is
    /// leaving).
    fn candidates(&self) -> Vec<HostRoom> {
        let members = self.members.read().clone();
        let placed = self.placed.lock();
        let mut hosts: Vec<HostRoom> = members
            .iter()
            .filter(|m| m.host.id != self.info.id && m.effective_state() == MemberState::Active && self.peers.reachable(&m.host.id))
            .map(|m| {
                // A member that has not reported a budget yet is taken to have room.
                let free = if m.load.memory_budget == 0 { u64::MAX } else { m.load.memory_free() };
                HostRoom { free: free.saturating_sub(placed.get(&m.host.id).copied().unwrap_or(0)), id: m.host.id.clone() }
            })
            .collect();
        if !self.closing.load(Ordering::Acquire) {
            let free = self.host().map_or(0, |h| h.memory_free());
            hosts.push(HostRoom { free: free.saturating_sub(placed.get(&self.info.id).copied().unwrap_or(0)), id: self.info.id.clone() });
        }
        hosts
    }

    /// Counts `bytes` placed on `host` against its free memory until the
    /// members are read again: a burst of placements between two reads
    /// does not all go to the host that looked free at the first (this
    /// host included: its reservation is made when the activation starts,
    /// after the placement; until the next read it is counted twice, which
    /// errs to the side of room).
    pub(crate) fn placed_there(&self, host: &str, bytes: u64) {
        *self.placed.lock().entry(host.to_string()).or_default() += bytes;
    }

    /// Reads the members, and opens, replaces or forgets peer connections to match.
    async fn refresh_members(&self) -> Result<(), StoreError> {
        let members = self.cluster().members().await?;
        self.peers.update(&self.info.id, &members);
        *self.members.write() = Arc::new(members);
        // The figures just read include (up to a heartbeat's lag) what
        // this host placed.
        self.placed.lock().clear();
        Ok(())
    }

    /// One heartbeat: renews the lease; after being declared dead, joins
    /// again as a new incarnation.
    async fn renew(&self) -> Result<(), StoreError> {
        let (incarnation, state) = {
            let status = self.status.lock();
            (status.incarnation, status.state)
        };
        if state == MemberState::Leaving {
            return Ok(());
        }
        let load = self.host().map(|h| h.load()).unwrap_or_default();
        let sent = Instant::now();
        let lease_ms = self.lease.as_millis() as i64;
        match self.cluster().heartbeat(&self.info.id, incarnation, state, lease_ms, &load).await {
            Ok(()) => {
                self.status.lock().lease_until = sent + self.lease;
                Ok(())
            }
            Err(StoreError::Fenced(why)) => {
                tracing::error!(host = %self.info.id, %why, "this host was declared dead; joining again as a new incarnation");
                let sent = Instant::now();
                let incarnation = self.cluster().join(&self.info, lease_ms).await?;
                let mut status = self.status.lock();
                status.incarnation = incarnation;
                status.lease_until = sent + self.lease;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Milliseconds since `ms` (since the epoch).
fn ms_since(ms: i64) -> i64 {
    quark_core::time::now_ms() - ms
}

/// The error of a host whose lease lapsed: it serves nothing until it renews.
fn lease_lapsed(actor: &ActorId) -> ActorError {
    ActorError::unavailable(format!(
        "this host's cluster lease has lapsed: it serves no actors until it renews it ({actor} is not served here now)"
    ))
}

/// Serves the versions the store says are active: every [`VERSION_POLL`]
/// (a peer that deployed also asks at once: [`Cluster::versions_changed`]).
async fn watch_versions(inner: Weak<Inner>) {
    loop {
        let Some(host) = inner.upgrade().and_then(|strong| strong.host()) else { return };
        if let Err(e) = serve_active_versions(&host).await {
            tracing::warn!(error = %format!("{e:#}"), "reading the active versions failed; retrying");
        }
        drop(host);
        tokio::time::sleep(VERSION_POLL).await;
    }
}

/// Makes `host` serve the store's active versions, logging each change.
pub(crate) async fn serve_active_versions(host: &Host) -> Result<(), quark_core::ActorError> {
    for (actor_type, version) in host.sync_active_versions().await? {
        tracing::info!(actor_type, version, "serving the version deployed through another host");
    }
    Ok(())
}
