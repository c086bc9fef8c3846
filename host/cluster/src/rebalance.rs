//! The rebalancer (`quark serve --rebalance`, issue 17): evens out the
//! memory the hosts' activations reserve, in proportion to their budgets,
//! by moving activations ([`crate::migration`]).
//!
//! Every host decides for itself, once a period (with a little jitter, so
//! hosts do not act in step), from the members' last heartbeats and its own
//! live figures:
//! - Its **share** of what the cluster reserves is `R * b_i / B`: the
//!   total reserved `R`, spread by budget (`b_i` of `B` in all). Orleans'
//!   rebalancer evens out activation counts weighted by memory; with equal
//!   budgets and one actor type this is the same target.
//! - A host more than the **tolerance band** above its share (10% of the
//!   share, and at least one activation's reservation, so that a single
//!   actor never ping-pongs) moves activations to the host furthest below
//!   its share, up to what brings either one to its share, and at most
//!   [`MAX_MOVES`] per period. It moves the least recently active ones
//!   first: an idle actor moves for the price of a directory write, and
//!   the busy ones keep their warm instances.
//! - Only hosts above their share move anything, and never past it, so
//!   once every host is within its band nothing moves: a steady load
//!   converges and then stops. A host that joins has no activations and
//!   is furthest below its share: the others move activations to it.
//!
//! A moved idle actor reserves nothing on its new host until it is next
//! called; until then the figures show the source lighter, and the target
//! no heavier. That errs toward moving less.

use std::sync::Weak;
use std::time::Duration;

use quark_store::cluster::MemberState;

use crate::migration::MIGRATION_DRAIN;
use crate::{Cluster, Inner};

/// Most activations one host moves per period.
pub const MAX_MOVES: usize = 16;

/// The rebalancer's period by default.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// The band around a host's share inside which it moves nothing, as a
/// fraction of the share.
const TOLERANCE: f64 = 0.10;

/// A host as the rebalancer weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostWeight {
    /// Its id.
    pub id: String,
    /// Its memory budget, bytes (0: not reported yet; counted as the mean).
    pub budget: u64,
    /// What its activations reserve, bytes.
    pub reserved: u64,
}

/// A planned move: this many bytes of reservations to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The host to move activations to.
    pub to: String,
    /// How many bytes of reservations to move there (at most).
    pub bytes: u64,
}

/// What `me` should move, if anything: the host furthest below its share
/// and how much to give it. `unit` is one activation's reservation here
/// (the band is never narrower).
pub fn plan(hosts: &[HostWeight], me: &str, unit: u64) -> Option<Plan> {
    let mean_budget = {
        let known: Vec<u64> = hosts.iter().map(|h| h.budget).filter(|&b| b > 0).collect();
        if known.is_empty() { 1 } else { known.iter().sum::<u64>() / known.len() as u64 }
    };
    let budget = |h: &HostWeight| if h.budget == 0 { mean_budget } else { h.budget } as f64;
    let total_budget: f64 = hosts.iter().map(budget).sum();
    let total_reserved: f64 = hosts.iter().map(|h| h.reserved as f64).sum();
    let share = |h: &HostWeight| total_reserved * budget(h) / total_budget;
    let mine = hosts.iter().find(|h| h.id == me)?;
    let excess = mine.reserved as f64 - share(mine);
    if excess <= (share(mine) * TOLERANCE).max(unit as f64) {
        return None;
    }
    let (to, deficit) = hosts
        .iter()
        .filter(|h| h.id != me)
        .map(|h| (h, share(h) - h.reserved as f64))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    // Filling `to` only to its share, and no fuller than the mover's
    // excess leaves it: half the gap when the two are the only ones apart.
    let bytes = excess.min(deficit);
    (bytes >= unit as f64 && deficit > (share(to) * TOLERANCE).min(unit as f64)).then(|| Plan { to: to.id.clone(), bytes: bytes as u64 })
}

/// The rebalancer loop; ends with the cluster.
pub(crate) async fn run(inner: Weak<Inner>, period: Duration) {
    loop {
        // Up to a fifth of the period either way.
        let jitter = period.mul_f64(0.8 + 0.4 * (quark_core::time::now_ms() % 1000) as f64 / 1000.0);
        tokio::time::sleep(jitter).await;
        let Some(inner) = inner.upgrade() else { return };
        let cluster = Cluster { inner };
        if let Err(e) = cluster.rebalance_once().await {
            tracing::warn!(error = %e, "rebalancing failed; trying again next period");
        }
    }
}

impl Cluster {
    /// One round of the rebalancer on this host: how many activations it
    /// moved.
    pub async fn rebalance_once(&self) -> Result<usize, quark_core::ActorError> {
        let inner = &self.inner;
        let Some(host) = inner.host() else { return Ok(0) };
        if inner.standing().is_none() || inner.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(0);
        }
        let me = host.load();
        let members = inner.members.read().clone();
        let hosts: Vec<HostWeight> = members
            .iter()
            .filter(|m| m.is_alive() && m.effective_state() == MemberState::Active)
            .map(|m| {
                let load = if m.host.id == inner.info.id { &me } else { &m.load };
                HostWeight { id: m.host.id.clone(), budget: load.memory_budget, reserved: load.memory_reserved }
            })
            .collect();
        let mut actors = host.actors();
        actors.retain(|a| a.reserved_bytes > 0);
        if actors.is_empty() {
            return Ok(0);
        }
        let unit = actors.iter().map(|a| a.reserved_bytes).min().unwrap_or(1);
        let Some(plan) = plan(&hosts, &inner.info.id, unit) else { return Ok(0) };
        // Least recently active first.
        actors.sort_by_key(|a| std::cmp::Reverse(a.idle_ms));
        let (mut moved, mut bytes) = (0, 0);
        for actor in actors {
            if moved >= MAX_MOVES || bytes + actor.reserved_bytes > plan.bytes {
                break;
            }
            let Ok(id) = quark_core::id::ActorId::parse(&actor.id) else { continue };
            match self.migrate(&id, &plan.to, MIGRATION_DRAIN).await {
                Ok(_) => {
                    moved += 1;
                    bytes += actor.reserved_bytes;
                }
                Err(e) => tracing::debug!(actor = %actor.id, to = %plan.to, error = %e, "the rebalancer did not move an actor"),
            }
        }
        if moved > 0 {
            tracing::info!(moved, to = %plan.to, bytes, "rebalanced activations");
        }
        Ok(moved)
    }
}
