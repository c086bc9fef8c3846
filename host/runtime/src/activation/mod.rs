//! Activations: one per live actor, each a task that runs its turns one at a
//! time from a FIFO mailbox; the table that finds them is `table.rs`.
//!
//! A message is sent under the table shard's lock and an idle activation is
//! removed under the same lock only when its mailbox is empty, so no message
//! can be stranded in a mailbox that nobody reads.
//!
//! One file per responsibility: the mailbox task and inline turns
//! (`mailbox.rs`), one turn from start to enqueued commit (`turns.rs`), the
//! effects a turn buffers (`effects.rs`), the state cache with its effect
//! layers (`state.rs`), and re-entrant turns (`nested.rs`).

mod effects;
mod mailbox;
mod nested;
mod state;
mod turns;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use wasmtime::Store;

pub(crate) use effects::TurnEffects;
pub(crate) use mailbox::{Activation, Envelope, InlineTurn};
pub(crate) use nested::{BusyChain, run_nested};
pub(crate) use state::{JournalCursor, StateCache};

use crate::capabilities::ActorInstance;
use crate::engine::coarse_now_ms;
use crate::id::ActorId;
use crate::registry::CachedVersion;
use crate::turn::InstanceState;

/// What the table, the inspection API and re-entrant calls see of an activation.
pub(crate) struct ActivationShared {
    pub(crate) id: ActorId,
    /// The call chain of the running turn, `ChainId::NONE` when idle.
    pub(crate) busy_chain: BusyChain,
    /// Messages queued or running.
    pub(crate) pending: AtomicUsize,
    /// Linear memory of this actor's instances, in bytes.
    pub(crate) memory_bytes: AtomicU64,
    /// What its instances reserve against the host's memory budget, bytes.
    pub(crate) reserved_bytes: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) last_active_ms: AtomicI64,
    /// The component version of the live instance (0 before the first turn).
    pub(crate) version: AtomicU64,
    /// Re-entrant turns running now (each on its own instance).
    pub(crate) nested_turns: AtomicUsize,
    /// Turns whose commit is enqueued and not yet resolved.
    pub(crate) commits_in_flight: AtomicUsize,
    /// The instance and its version; `None` while a turn holds them.
    pub(super) core: Mutex<Option<Core>>,
    /// Signalled when an inline turn puts the core back.
    core_returned: tokio::sync::Notify,
    pub(crate) state: Mutex<StateCache>,
}

impl ActivationShared {
    /// No message queued or running and no commit in flight: safe to
    /// deactivate (a new activation reads everything from the store).
    pub(super) fn is_quiet(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && self.commits_in_flight.load(Ordering::Acquire) == 0
    }

    pub(crate) fn new(id: ActorId) -> Self {
        ActivationShared {
            id,
            busy_chain: BusyChain::default(),
            pending: AtomicUsize::new(0),
            memory_bytes: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
            turns: AtomicU64::new(0),
            last_active_ms: AtomicI64::new(coarse_now_ms()),
            version: AtomicU64::new(0),
            nested_turns: AtomicUsize::new(0),
            commits_in_flight: AtomicUsize::new(0),
            core: Mutex::new(Some(Core::default())),
            core_returned: tokio::sync::Notify::new(),
            state: Mutex::new(StateCache::default()),
        }
    }
}

/// A live wasm instance of an actor.
pub(crate) struct Live {
    pub(crate) store: Store<InstanceState>,
    pub(crate) bindings: ActorInstance,
    pub(crate) version: u64,
}

/// What runs an actor's turns: its live instance and the version it was
/// made from. Exactly one holder at a time, in `ActivationShared::core`:
/// the mailbox task, or a caller running a turn inline.
#[derive(Default)]
pub(crate) struct Core {
    live: Option<Live>,
    /// The active version of this actor's type, as of a registry generation.
    version: Option<CachedVersion>,
}
