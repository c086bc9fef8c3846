//! The cluster's shared state: membership (who is alive) and the actor
//! directory (which host owns which actor, at which epoch). Hosts on one
//! PostgreSQL or Redis are one system through these rows; there is no
//! other consensus.
//!
//! Time is the store's: a lease is "until store time T", so hosts' clocks
//! never need to agree. A host keeps its own, earlier, deadline on its
//! monotonic clock (from before it sent the heartbeat) and stops serving
//! its actors when that passes, before any other host may take them.
//!
//! Ownership is fenced: every claim that changes an actor's owner takes a
//! new epoch from one counter that never repeats, and a turn commit
//! carrying the epoch it was run under ([`crate::TurnCommit::fence`]) is
//! refused once the directory holds another.

use async_trait::async_trait;
use quark_core::id::ActorId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How a host advertises itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's id, unique in the cluster.
    pub id: String,
    /// Where clients reach its HTTP API.
    pub api: String,
    /// Where other hosts reach it.
    pub peer: String,
}

/// A member's state, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Started, not yet serving.
    Joining,
    /// Serving.
    Active,
    /// Its lease lapsed, or a peer could not reach it: no new actors are
    /// placed on it; its actors move once its lease has lapsed.
    Suspect,
    /// Declared dead: its actors belong to whoever claims them next.
    Dead,
    /// Handing its actors off before it stops.
    Leaving,
}

impl MemberState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Leaving => "leaving",
        }
    }
}

impl std::str::FromStr for MemberState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "joining" => MemberState::Joining,
            "active" => MemberState::Active,
            "suspect" => MemberState::Suspect,
            "dead" => MemberState::Dead,
            "leaving" => MemberState::Leaving,
            other => return Err(format!("unknown member state {other:?}")),
        })
    }
}

/// A host as the membership rows hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Id and addresses.
    pub host: HostInfo,
    /// Which start of this host id it is: every join takes a new one.
    pub incarnation: i64,
    /// Its state as stored; [`Member::effective_state`] reads the lease too.
    pub state: MemberState,
    /// When it joined (store time, ms).
    pub started_at_ms: i64,
    /// Its last heartbeat (store time, ms).
    pub heartbeat_ms: i64,
    /// Until when it may serve its actors (store time, ms).
    pub lease_until_ms: i64,
    /// Activations and memory it reported with its last heartbeat.
    pub load: HostLoad,
    /// The store's time when this row was read.
    pub read_at_ms: i64,
}

impl Member {
    /// Whether it holds its actors: not dead, and its lease has not lapsed.
    pub fn is_alive(&self) -> bool {
        self.state != MemberState::Dead && self.lease_until_ms >= self.read_at_ms
    }

    /// The state to show: a lapsed lease makes an active member suspect.
    pub fn effective_state(&self) -> MemberState {
        match self.state {
            MemberState::Joining | MemberState::Active if self.lease_until_ms < self.read_at_ms => MemberState::Suspect,
            other => other,
        }
    }
}

/// What a host reports of itself with each heartbeat: what placement
/// and the rebalancer read of the other hosts. Memory figures in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLoad {
    /// Live activations.
    pub activations: u64,
    /// The host's memory budget (0: not reported).
    pub memory_budget: u64,
    /// What its live activations have reserved of it.
    pub memory_reserved: u64,
    /// Their measured linear memory.
    pub memory_used: u64,
    /// The process's resident set.
    pub rss: u64,
    /// Activations shed for memory since the host started.
    pub shed: u64,
    /// Activations refused for memory since the host started.
    pub refused: u64,
    /// Activations migrated away since the host started.
    pub migrated: u64,
}

impl HostLoad {
    /// What is left of the budget to reserve.
    pub fn memory_free(&self) -> u64 {
        self.memory_budget.saturating_sub(self.memory_reserved)
    }
}

/// Who owns an actor, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The owning host's id.
    pub host: String,
    /// The owner's incarnation when it claimed the actor.
    pub incarnation: i64,
    /// The fencing token: commits for the actor must carry it.
    pub epoch: u64,
}

/// Membership and the actor directory, in the shared store.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Joins as `host`, state `joining`, leased for `lease_ms` of store
    /// time; returns the new incarnation. Refused with a conflict while a
    /// live member holds this id (two processes given one `--host-id`).
    async fn join(&self, host: &HostInfo, lease_ms: i64) -> Result<i64, StoreError>;

    /// Renews the lease of `(id, incarnation)` for `lease_ms` and records
    /// its state and load. Fails with a conflict when that
    /// incarnation is no longer a member (declared dead, or replaced): the
    /// host must then stop serving and join again.
    async fn heartbeat(&self, id: &str, incarnation: i64, state: MemberState, lease_ms: i64, load: &HostLoad) -> Result<(), StoreError>;

    /// Every member.
    async fn members(&self) -> Result<Vec<Member>, StoreError>;

    /// Marks a member suspect (a peer could not reach it): no new actors
    /// are placed on it. Its actors stay its own until its lease lapses.
    async fn suspect(&self, id: &str, incarnation: i64) -> Result<(), StoreError>;

    /// Declares dead the members whose lease lapsed more than `grace_ms`
    /// ago, drops the directory entries of every dead member, and forgets
    /// dead members after `forget_ms`. Returns the ids it declared dead.
    async fn reap(&self, grace_ms: i64, forget_ms: i64) -> Result<Vec<String>, StoreError>;

    /// Leaves: the member's row and directory entries go.
    async fn leave(&self, id: &str, incarnation: i64) -> Result<(), StoreError>;

    /// The owner of `actor`, if any (alive or not: see [`ClusterStore::members`]).
    async fn owner(&self, actor: &ActorId) -> Result<Option<Ownership>, StoreError>;

    /// Claims `actor` for `(id, incarnation)` unless another live member
    /// owns it. Returns the owner after the call: this host with a new
    /// epoch (or the one it holds already), or the live owner. An owner
    /// whose lease lapsed is declared dead by the takeover (on PostgreSQL
    /// that waits for its commit in flight), so none of its commits lands
    /// after the actor moved.
    async fn claim(&self, actor: &ActorId, id: &str, incarnation: i64) -> Result<Ownership, StoreError>;

    /// Gives `actor` up if it is still held at `epoch`; false otherwise.
    async fn release(&self, actor: &ActorId, epoch: u64) -> Result<bool, StoreError>;

    /// Hands `actor`, held at `epoch`, to the live member `(to, incarnation)`
    /// under a new epoch (a migration): from then on only the target's
    /// commits land. `None`, changing nothing, when the actor is no longer
    /// held at `epoch` or the target is not alive.
    async fn hand_off(&self, actor: &ActorId, epoch: u64, to: &str, incarnation: i64) -> Result<Option<Ownership>, StoreError>;
}

/// The error for a batch whose fences did not all hold: named precisely
/// when the batch is one turn (the committer retries a failed batch turn
/// by turn).
pub(crate) fn fence_conflict(batch: &[crate::TurnCommit]) -> StoreError {
    match batch.iter().filter(|c| c.fence.is_some()).collect::<Vec<_>>()[..] {
        [one] => StoreError::Fenced(format!(
            "this host no longer owns {} (its claim, epoch {}, was taken over by another host): the turn did not happen",
            one.actor,
            one.fence.unwrap_or_default()
        )),
        _ => StoreError::Fenced("an actor in this batch is owned by another host now".into()),
    }
}
