//! Every activation on this host: a sharded table from actor id to its
//! mailbox, which routes each message (inline to an idle actor, into the
//! mailbox otherwise, re-entrant on its own call chain) and sheds idle ones.
//!
//! A stateless worker type runs up to its `stateless_workers` activations
//! per id, side by side: the table keys activations by (id, worker slot),
//! and all slots of an id sit in one shard, so choosing among them takes
//! one lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::Request;
use super::activation::{Activation, ActivationShared, Envelope, InlineTurn};
use super::engine::coarse_now_ms;
use crate::Host;
use crate::error::ActorError;
use crate::id::{ActorId, ChainId};

/// Most messages waiting in one actor's mailbox; past it, asks and tells
/// to that actor fail with `unavailable` until it catches up.
pub(crate) const MAX_MAILBOX: usize = 10_000;

/// Pause after a shed that found nothing idle before scanning again.
const SHED_INTERVAL_MS: i64 = 20;

/// Shards of the activation table: enough that two cores rarely contend.
const SHARDS: usize = 64;

/// The table's hold on one activation: its mailbox and shared state.
pub(super) struct Handle {
    pub(super) tx: mpsc::UnboundedSender<Envelope>,
    pub(super) shared: Arc<ActivationShared>,
}

/// A snapshot of one activation, for `quark actors`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ActivationInfo {
    /// `type/key`.
    pub id: String,
    /// Component version it runs.
    pub version: u64,
    /// Linear memory in bytes (what the memory limit counts).
    pub memory_bytes: u64,
    /// What it reserves against the host's memory budget, in bytes.
    #[serde(default)]
    pub reserved_bytes: u64,
    /// Turns it has run since activation.
    pub turns: u64,
    /// Messages waiting or running.
    pub pending: usize,
    /// Milliseconds since its last turn ended.
    pub idle_ms: i64,
}

/// Where a message went.
pub(crate) enum Dispatched {
    /// Into the actor's mailbox; the reply (if one was wanted) comes on
    /// the receiver. Carries the method name for a deadline error.
    Queued(Option<oneshot::Receiver<Result<Vec<u8>, ActorError>>>, String),
    /// The actor is busy on this very call chain: the caller runs the turn
    /// now, on a fresh instance that sees the outer turn's writes.
    Reentrant(Arc<ActivationShared>, Request),
    /// The actor was idle: the caller runs the turn itself.
    Inline(InlineTurn, Request),
}

/// An activation's key: the actor and its worker slot (always 0 but for
/// stateless workers).
type Slot = (ActorId, u16);

/// Every activation on this host, sharded by actor id.
pub(crate) struct ActivationTable {
    shards: Box<[Mutex<HashMap<Slot, Handle>>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Activations in the table, kept without locking every shard.
    len: AtomicUsize,
    /// When a shed last found nothing idle (coarse ms): until
    /// [`SHED_INTERVAL_MS`] later, messages do not scan again.
    last_empty_shed_ms: AtomicI64,
}

impl ActivationTable {
    pub(crate) fn new() -> Self {
        ActivationTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            last_empty_shed_ms: AtomicI64::new(0),
        }
    }

    fn shard(&self, id: &ActorId) -> &Mutex<HashMap<Slot, Handle>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Delivers `request` to its actor, activating it if needed (an unknown
    /// actor type is `not-found`).
    /// `wants_reply` is false for tells.
    pub(crate) fn dispatch(&self, host: &Host, request: Request, wants_reply: bool, inline: bool) -> Result<Dispatched, ActorError> {
        let mut shard = self.shard(&request.target).lock();
        let workers = host.registry().stateless_workers(request.target.actor_type());
        let slot = if workers > 1 { Self::pick_worker(&shard, &request, workers) } else { 0 };
        let handle = match shard.entry((request.target.clone(), slot)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                host.registry().active(request.target.actor_type())?;
                self.len.fetch_add(1, Ordering::Relaxed);
                e.insert(Activation::spawn(host, request.target.clone()))
            }
        };
        if request.chain != ChainId::NONE && handle.shared.busy_chain.is(request.chain) {
            return Ok(Dispatched::Reentrant(handle.shared.clone(), request));
        }
        if wants_reply
            && inline
            && handle.shared.pending.load(Ordering::Acquire) == 0
            && let Some(core) = handle.shared.core.lock().take()
        {
            handle.shared.pending.fetch_add(1, Ordering::AcqRel);
            let turn = InlineTurn::new(host.clone(), handle.shared.clone(), core);
            return Ok(Dispatched::Inline(turn, request));
        }
        let (reply, receiver) = if wants_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let waiting = handle.shared.pending.load(Ordering::Acquire);
        if waiting >= MAX_MAILBOX {
            // Backpressure: a full mailbox refuses more, so an actor that
            // floods another (or itself) cannot grow host memory without bound.
            host.metrics().record_mailbox_full();
            return Err(ActorError::unavailable(format!(
                "the mailbox of {} is full ({waiting} messages waiting); retry later",
                request.target
            )));
        }
        let method = if wants_reply { request.method.clone() } else { String::new() };
        handle.shared.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(envelope)) = handle.tx.send(Envelope { request, reply }) {
            // The activation task died (a host bug); replace it.
            tracing::error!(actor = %envelope.request.target, "activation task gone; restarting it");
            let fresh = Activation::spawn(host, envelope.request.target.clone());
            fresh.shared.pending.fetch_add(1, Ordering::AcqRel);
            let _ = fresh.tx.send(envelope);
            *handle = fresh;
        }
        Ok(Dispatched::Queued(receiver, method))
    }

    /// The worker slot of a stateless worker's id that takes `request`:
    /// the one running its call chain (re-entry), else an idle one, else
    /// a new one while fewer than `workers` run, else the shortest queue.
    fn pick_worker(shard: &HashMap<Slot, Handle>, request: &Request, workers: u32) -> u16 {
        let mut vacant = None;
        let mut shortest: Option<(usize, u16)> = None;
        for slot in 0..workers.min(u32::from(u16::MAX)) as u16 {
            let Some(handle) = shard.get(&(request.target.clone(), slot)) else {
                vacant.get_or_insert(slot);
                continue;
            };
            if request.chain != ChainId::NONE && handle.shared.busy_chain.is(request.chain) {
                return slot;
            }
            let pending = handle.shared.pending.load(Ordering::Acquire);
            if pending == 0 {
                return slot;
            }
            if shortest.is_none_or(|(least, _)| pending < least) {
                shortest = Some((pending, slot));
            }
        }
        vacant.or(shortest.map(|(_, slot)| slot)).unwrap_or(0)
    }

    /// Removes activations idle for at least `idle_ms` with empty mailboxes;
    /// their tasks end once they see the mailbox closed.
    pub(crate) fn sweep_idle(&self, idle_ms: i64) -> usize {
        let now = coarse_now_ms();
        let mut removed = 0;
        for shard in self.shards.iter() {
            shard.lock().retain(|_, h| {
                let idle = h.shared.is_quiet() && now - h.shared.last_active_ms.load(Ordering::Relaxed) >= idle_ms;
                removed += usize::from(idle);
                !idle
            });
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Removes `id`'s activation if it is quiet (nothing queued, running or
    /// committing): `Some(true)` removed, `Some(false)` busy (left in
    /// place), `None` when it is not active here. Its task ends once it
    /// sees the mailbox closed, dropping the instance.
    pub(crate) fn remove_if_quiet(&self, id: &ActorId) -> Option<bool> {
        let mut shard = self.shard(id).lock();
        let slot = (id.clone(), 0);
        let quiet = shard.get(&slot)?.shared.is_quiet();
        if quiet {
            shard.remove(&slot);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        Some(quiet)
    }

    /// Removes up to `count` idle activations, least recently used first.
    pub(crate) fn shed_oldest_idle(&self, count: usize) -> usize {
        let mut idle: Vec<(i64, Slot)> = Vec::new();
        for shard in self.shards.iter() {
            for (slot, h) in shard.lock().iter() {
                if h.shared.is_quiet() {
                    idle.push((h.shared.last_active_ms.load(Ordering::Relaxed), slot.clone()));
                }
            }
        }
        idle.sort_unstable();
        let mut removed = 0;
        for (_, slot) in idle.into_iter().take(count) {
            let mut shard = self.shard(&slot.0).lock();
            if shard.get(&slot).is_some_and(|h| h.shared.is_quiet()) {
                shard.remove(&slot);
                removed += 1;
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        if removed == 0 {
            self.last_empty_shed_ms.store(coarse_now_ms(), Ordering::Relaxed);
        }
        removed
    }

    /// Removes idle activations, least recently used first, until those
    /// removed reserved at least `bytes` of the memory budget (or none
    /// idle is left): how many, and the bytes their instances free once
    /// dropped.
    pub(crate) fn shed_oldest_idle_bytes(&self, bytes: u64) -> (usize, u64) {
        let mut idle: Vec<(i64, Slot)> = Vec::new();
        for shard in self.shards.iter() {
            for (slot, h) in shard.lock().iter() {
                if h.shared.is_quiet() && h.shared.reserved_bytes.load(Ordering::Relaxed) > 0 {
                    idle.push((h.shared.last_active_ms.load(Ordering::Relaxed), slot.clone()));
                }
            }
        }
        idle.sort_unstable();
        let (mut removed, mut freed) = (0, 0);
        for (_, slot) in idle {
            if freed >= bytes {
                break;
            }
            let mut shard = self.shard(&slot.0).lock();
            if shard.get(&slot).is_some_and(|h| h.shared.is_quiet()) {
                let handle = shard.remove(&slot).expect("just seen");
                freed += handle.shared.reserved_bytes.load(Ordering::Relaxed);
                removed += 1;
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        (removed, freed)
    }

    /// What the quiet (sheddable) activations reserve and use, bytes.
    pub(crate) fn idle_bytes(&self) -> (u64, u64) {
        let (mut reserved, mut used) = (0, 0);
        for shard in self.shards.iter() {
            for h in shard.lock().values().filter(|h| h.shared.is_quiet()) {
                reserved += h.shared.reserved_bytes.load(Ordering::Relaxed);
                used += h.shared.memory_bytes.load(Ordering::Relaxed);
            }
        }
        (reserved, used)
    }

    /// Per activation: its actor type, reserved and used memory in bytes.
    pub(crate) fn memory_by_activation(&self) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for h in shard.lock().values() {
                let s = &h.shared;
                out.push((s.id.actor_type().to_string(), s.reserved_bytes.load(Ordering::Relaxed), s.memory_bytes.load(Ordering::Relaxed)));
            }
        }
        out
    }

    /// False for [`SHED_INTERVAL_MS`] after a shed that found nothing idle:
    /// shedding scans every shard, and a host at its limit with every actor
    /// busy must not do that on every message.
    pub(crate) fn may_shed(&self) -> bool {
        coarse_now_ms() - self.last_empty_shed_ms.load(Ordering::Relaxed) >= SHED_INTERVAL_MS
    }

    /// How many activations the table holds.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// A snapshot of every activation.
    pub(crate) fn list(&self) -> Vec<ActivationInfo> {
        let now = coarse_now_ms();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for h in shard.lock().values() {
                let s = &h.shared;
                out.push(ActivationInfo {
                    id: s.id.to_string(),
                    version: s.version.load(Ordering::Relaxed),
                    memory_bytes: s.memory_bytes.load(Ordering::Relaxed),
                    reserved_bytes: s.reserved_bytes.load(Ordering::Relaxed),
                    turns: s.turns.load(Ordering::Relaxed),
                    pending: s.pending.load(Ordering::Relaxed),
                    idle_ms: now - s.last_active_ms.load(Ordering::Relaxed),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Number of activations and their total linear memory.
    pub(crate) fn totals(&self) -> (usize, u64) {
        let mut count = 0;
        let mut memory = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock();
            count += shard.len();
            memory += shard.values().map(|h| h.shared.memory_bytes.load(Ordering::Relaxed)).sum::<u64>();
        }
        (count, memory)
    }
}
