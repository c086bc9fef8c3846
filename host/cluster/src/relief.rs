//! Relief under memory pressure (issue 17): a host past its high
//! watermark first sheds its idle activations, oldest first (the
//! runtime's memory watch does that on every host, clustered or not).
//! When that is not enough, because the activations holding the memory
//! are busy, this host migrates busy ones ([`crate::migration`]) to the
//! hosts with the most room, until what is left stands at its low
//! watermark. Busy actors keep working: their queued turns finish here,
//! the calls that arrive meanwhile wait and then run on the new host.
//!
//! - **How much.** [`quark_runtime::Host::memory_overflow`]: what
//!   reserved or measured linear memory would still stand above the low
//!   watermark once every idle activation is shed. The process RSS does
//!   not count: moving actors cannot shrink the host's own memory.
//! - **Which.** The largest reservations first (the fewest moves free
//!   the most), at most [`MAX_MOVES`](crate::rebalance::MAX_MOVES) a
//!   period.
//! - **Where.** The active member with the most room below its own high
//!   watermark, counting what this round already sent it; an actor that
//!   fits under no other host's watermark stays (the host then refuses
//!   new activations with `limit-exceeded` rather than pass its budget).
//!   Migrating never pushes the problem on.
//!
//! It is always on in a cluster (there is nothing to tune: it acts only
//! past the high watermark); on a single host there is nowhere to go, and
//! the host sheds and refuses by the same rules.

use std::sync::Weak;
use std::time::Duration;

use quark_core::id::ActorId;
use quark_runtime::memory::HIGH_WATERMARK;
use quark_store::cluster::MemberState;

use crate::migration::MIGRATION_DRAIN;
use crate::rebalance::MAX_MOVES;
use crate::{Cluster, Inner};

/// How often a host looks for pressure it must migrate away.
const RELIEF_PERIOD: Duration = Duration::from_secs(1);

/// The relief loop; ends with the cluster.
pub(crate) async fn run(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RELIEF_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let cluster = Cluster { inner };
        cluster.relieve_once().await;
    }
}

/// A host that may take activations, and its room below its high
/// watermark, bytes.
struct Room {
    id: String,
    room: u64,
}

impl Cluster {
    /// One look for memory pressure that shedding cannot relieve; moves
    /// busy activations away and says how many.
    pub async fn relieve_once(&self) -> usize {
        let inner = &self.inner;
        let Some(host) = inner.host() else { return 0 };
        if inner.standing().is_none() || inner.closing.load(std::sync::atomic::Ordering::Acquire) {
            return 0;
        }
        let Some(overflow) = host.memory_overflow() else { return 0 };
        let members = inner.members.read().clone();
        let mut rooms: Vec<Room> = members
            .iter()
            .filter(|m| {
                m.host.id != inner.info.id && m.is_alive() && m.effective_state() == MemberState::Active && inner.peers.reachable(&m.host.id)
            })
            .map(|m| {
                let high = (m.load.memory_budget as f64 * HIGH_WATERMARK) as u64;
                Room { id: m.host.id.clone(), room: high.saturating_sub(m.load.memory_reserved) }
            })
            .collect();
        // The busy activations (the idle ones are the memory watch's to
        // shed), largest reservation first.
        let mut busy: Vec<_> = host.actors().into_iter().filter(|a| a.pending > 0 && a.reserved_bytes > 0).collect();
        busy.sort_by_key(|a| std::cmp::Reverse(a.reserved_bytes));
        let (mut moved, mut freed) = (0, 0);
        for actor in busy {
            if freed >= overflow || moved >= MAX_MOVES {
                break;
            }
            let Some(to) = rooms.iter_mut().filter(|r| r.room >= actor.reserved_bytes).max_by_key(|r| r.room) else { continue };
            let Ok(id) = ActorId::parse(&actor.id) else { continue };
            match self.migrate(&id, &to.id, MIGRATION_DRAIN).await {
                Ok(_) => {
                    to.room -= actor.reserved_bytes;
                    inner.placed_there(&to.id, actor.reserved_bytes);
                    moved += 1;
                    freed += actor.reserved_bytes;
                }
                Err(e) => tracing::debug!(actor = %actor.id, to = %to.id, error = %e, "memory pressure: an actor did not move"),
            }
        }
        if moved > 0 {
            tracing::info!(moved, freed, overflow, "memory pressure: moved busy actors to hosts with room");
        } else {
            tracing::debug!(overflow, "memory pressure: no busy actor fits under another host's watermark; shedding and refusing only");
        }
        moved
    }
}
