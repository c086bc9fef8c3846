//! Cluster membership: a host on a shared store (PostgreSQL, Redis) joins
//! the membership rows, renews its lease with a heartbeat, declares dead
//! the members whose lease lapsed long enough ago, and leaves when it
//! stops. The rows and the lease rules are the store's
//! ([`crate::storage::cluster`]); this service keeps them current.
//!
//! The host's own lease deadline is kept on its monotonic clock, from the
//! moment before each heartbeat was sent: it passes before the store's, so
//! while it holds its lease by that clock ([`ActorDirectory::standing`]
//! is `Some`), no other host can own its actors.
//!
//! The membership is also the runtime's [`ActorDirectory`]: each actor is
//! claimed before it is activated here and its commits are fenced with
//! the claim's epoch. A call for an actor another live host serves is
//! answered with that host (routing calls between hosts comes next; see
//! issue 16).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::runtime::WeakHost;
use crate::runtime::directory::{ActorDirectory, Placement};
use crate::{ActorError, ActorId};
use crate::storage::StoreError;
use crate::storage::cluster::{ClusterStore, HostInfo, Member, MemberState};
use crate::{Host, storage::Store};

/// Default lease: how long a member holds its actors without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Dead members' rows are forgotten this long after their lease lapsed.
const FORGET_DEAD_AFTER: Duration = Duration::from_secs(3600);

/// How a host takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This host's id; a fresh one per process when `None`.
    pub host_id: Option<String>,
    /// Where clients reach this host's API (`host:port`).
    pub api: String,
    /// How long the host holds its actors without a heartbeat.
    pub lease: Duration,
    /// How often it renews its lease.
    pub heartbeat: Duration,
}

impl ClusterConfig {
    /// The defaults, for a host whose API listens on `api`.
    pub fn new(api: impl Into<String>) -> Self {
        ClusterConfig { host_id: None, api: api.into(), lease: DEFAULT_LEASE, heartbeat: DEFAULT_HEARTBEAT }
    }
}

/// This host's membership. Cheap to clone; the heartbeat stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    info: HostInfo,
    lease: Duration,
    heartbeat: Duration,
    host: WeakHost,
    status: Mutex<Status>,
}

/// What changes as the host lives: its incarnation (a new one after it was
/// declared dead), its state and its own lease deadline.
struct Status {
    incarnation: i64,
    state: MemberState,
    lease_until: Instant,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("id", &self.inner.info.id).finish_non_exhaustive()
    }
}

impl Membership {
    /// Joins the cluster on `host`'s store (state `joining`) and starts the
    /// heartbeat. Fails when the store is single-host, or the id is taken
    /// by a live member.
    pub async fn join(host: &Host, config: ClusterConfig) -> anyhow::Result<Membership> {
        let store = host.store().clone();
        let cluster = store
            .cluster_store()
            .ok_or_else(|| anyhow::anyhow!("the {} store is single-host: a cluster needs PostgreSQL or Redis", store.backend_name()))?;
        let id = config.host_id.clone().unwrap_or_else(|| format!("host-{}", &quark_core::jobs::new_lease()[..12]));
        let info = HostInfo { id, api: config.api.clone(), peer: String::new() };
        let sent = Instant::now();
        let incarnation = cluster.join(&info, config.lease.as_millis() as i64).await?;
        tracing::info!(host = %info.id, incarnation, "joined the cluster");
        let inner = Arc::new(Inner {
            store,
            info,
            lease: config.lease,
            heartbeat: config.heartbeat,
            host: host.downgrade(),
            status: Mutex::new(Status { incarnation, state: MemberState::Joining, lease_until: sent + config.lease }),
        });
        tokio::spawn(beat(Arc::downgrade(&inner)));
        Ok(Membership { inner })
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.inner.info.id
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

    /// Leaves the cluster: this host's row and directory entries go.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let incarnation = {
            let mut status = self.inner.status.lock();
            status.state = MemberState::Leaving;
            status.incarnation
        };
        self.inner.cluster().leave(&self.inner.info.id, incarnation).await?;
        tracing::info!(host = %self.inner.info.id, "left the cluster");
        Ok(())
    }
}

/// The directory the runtime claims actors in: the shared store's, under
/// this host's id and incarnation.
#[async_trait::async_trait]
impl ActorDirectory for Membership {
    async fn claim(&self, actor: &ActorId, incarnation: i64) -> Result<Placement, ActorError> {
        let owner = self.inner.cluster().claim(actor, self.id(), incarnation).await?;
        if owner.host == self.id() && owner.incarnation == incarnation {
            return Ok(Placement::Here { epoch: owner.epoch });
        }
        let api = self.members().await?.into_iter().find(|m| m.host.id == owner.host).map(|m| m.host.api).unwrap_or_default();
        Ok(Placement::Elsewhere { host: owner.host, api })
    }

    fn standing(&self) -> Option<i64> {
        let status = self.inner.status.lock();
        (Instant::now() < status.lease_until).then_some(status.incarnation)
    }
}

impl Inner {
    fn cluster(&self) -> &dyn ClusterStore {
        self.store.cluster_store().expect("a member's store is a cluster store")
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
        let activations = self.host.upgrade().map_or(0, |h| h.actors().len() as u64);
        let sent = Instant::now();
        let lease_ms = self.lease.as_millis() as i64;
        match self.cluster().heartbeat(&self.info.id, incarnation, state, lease_ms, activations).await {
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

/// The heartbeat, and every lease a reaping of members whose lease lapsed
/// a lease ago: any member may reap, and a reap is idempotent.
async fn beat(inner: Weak<Inner>) {
    let mut last_reap = Instant::now();
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.renew().await {
            tracing::warn!(host = %inner.info.id, error = %e, "heartbeat failed; retrying (this host stops serving when its lease runs out)");
        }
        if last_reap.elapsed() >= inner.lease {
            last_reap = Instant::now();
            let grace = inner.lease.as_millis() as i64;
            match inner.cluster().reap(grace, FORGET_DEAD_AFTER.as_millis() as i64).await {
                Ok(dead) if !dead.is_empty() => tracing::warn!(hosts = ?dead, "declared hosts dead: their leases lapsed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reaping dead hosts failed; retrying later"),
            }
        }
        let period = inner.heartbeat;
        drop(inner);
        tokio::time::sleep(period).await;
    }
}
