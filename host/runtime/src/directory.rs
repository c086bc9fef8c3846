//! The actor directory as the runtime sees it: before a host activates an
//! actor it claims it, and every commit of the activation carries the
//! epoch of that claim (its fence). A host on its own has no directory.
//! In a cluster, `quark_cluster::Cluster` implements it on the shared
//! store's directory.

use async_trait::async_trait;

use crate::error::ActorError;
use crate::id::ActorId;

/// Where an actor is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here, under this epoch (the fence of its commits).
    Here {
        /// The claim's epoch.
        epoch: u64,
    },
    /// On another live host.
    Elsewhere {
        /// Its id.
        host: String,
        /// Where its API listens.
        api: String,
    },
}

/// Claims actors for this host.
#[async_trait]
pub trait ActorDirectory: Send + Sync {
    /// Claims `actor` for this host's `incarnation` (from
    /// [`ActorDirectory::standing`]), unless another live host serves it.
    async fn claim(&self, actor: &ActorId, incarnation: i64) -> Result<Placement, ActorError>;

    /// Whether this host may serve its actors now, and under which
    /// membership, read together: `Some(incarnation)` while it holds its
    /// lease, `None` when the lease lapsed. When the incarnation changes
    /// (the host was declared dead and joined again), every activation
    /// drops its instance and cache and claims its actor again.
    fn standing(&self) -> Option<i64>;
}
