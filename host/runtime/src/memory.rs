//! The host's memory budget (`--memory-budget`), fed by each guest's
//! declared memory limit.
//!
//! Every live instance **reserves** bytes against the budget when it is
//! created: by default the type's observed high-water use on this host
//! times an overcommit factor (2; never more than the declared limit,
//! never less than what the instance holds, and the limit itself until
//! one instance of the type has run), or, strictly, the declared limit.
//! Strict reservation guarantees that no instance can take the host past
//! its budget, but at the default 64 MiB limit it would cap a 24 GiB host
//! at 300 activations; the overcommitted default sheds under pressure
//! instead when instances grow toward their limits. A new
//! instance that does not fit first sheds idle activations, oldest first;
//! if it still does not fit, it is refused with `limit-exceeded` naming
//! the budget, instead of the process running out of memory. Under
//! pressure (reserved or measured linear memory above the high watermark,
//! or the process RSS at the budget) the host sheds idle activations,
//! oldest first, down to the low watermark: Orleans' 80% / 75% by default.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

/// The default overcommit factor.
pub const DEFAULT_OVERCOMMIT: f64 = 2.0;
/// Share of the machine's RAM the budget defaults to.
pub const DEFAULT_BUDGET_SHARE: f64 = 0.8;
/// Above this share of the budget a host sheds idle activations.
pub const HIGH_WATERMARK: f64 = 0.80;
/// Shedding under pressure stops at this share of the budget.
pub const LOW_WATERMARK: f64 = 0.75;
/// Smallest reservation, one wasm page.
const MIN_RESERVATION: u64 = 64 * 1024;

/// The memory settings of a host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    /// Bytes the host's activations may reserve in all.
    pub budget: u64,
    /// Reserve the type's observed high water times this factor instead
    /// of its declared limit (`--memory-overcommit`); `None`: the limit
    /// (strict).
    pub overcommit: Option<f64>,
    /// Count the process's RSS reaching the budget as pressure. Right for
    /// a process that is one host (`quark serve`); not for several hosts
    /// in one process (tests, benchmarks), which share one RSS.
    pub shed_on_rss: bool,
}

impl MemoryConfig {
    /// 80% of this machine's RAM, overcommitted by [`DEFAULT_OVERCOMMIT`].
    pub fn from_machine() -> Self {
        MemoryConfig { budget: (total_ram_bytes() as f64 * DEFAULT_BUDGET_SHARE) as u64, overcommit: Some(DEFAULT_OVERCOMMIT), shed_on_rss: true }
    }
}

/// This machine's RAM, in bytes (from the OS).
pub fn total_ram_bytes() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    system.total_memory()
}

/// What a host's memory holds: `GET /v1/cluster` (`memory`) and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemoryReport {
    /// The budget, bytes.
    pub budget: u64,
    /// Reserved by the live instances, bytes.
    pub reserved: u64,
    /// Linear memory the live instances hold (measured), bytes.
    pub used: u64,
    /// The process's resident set size, bytes.
    pub rss: u64,
    /// Activations shed for memory since the host started.
    pub shed: u64,
    /// Instances refused for want of memory since the host started.
    pub refused: u64,
    /// Activations migrated to other hosts since the host started.
    pub migrated: u64,
    /// Per actor type with live activations, by type name (known for the
    /// host that answers; another host's arrive empty).
    pub types: Vec<TypeMemory>,
}

impl From<&quark_store::cluster::HostLoad> for MemoryReport {
    /// What another host reported with its last heartbeat.
    fn from(load: &quark_store::cluster::HostLoad) -> Self {
        MemoryReport {
            budget: load.memory_budget,
            reserved: load.memory_reserved,
            used: load.memory_used,
            rss: load.rss,
            shed: load.shed,
            refused: load.refused,
            migrated: load.migrated,
            types: Vec::new(),
        }
    }
}

/// One actor type's share of a host's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypeMemory {
    /// The actor type.
    pub actor_type: String,
    /// Its activations on this host.
    pub activations: u64,
    /// Reserved by them, bytes.
    pub reserved: u64,
    /// Linear memory they hold, bytes.
    pub used: u64,
    /// The most linear memory one of its instances has held here, bytes.
    pub high_water: u64,
}

/// The budget and what is reserved against it; shared by the host and
/// every reservation.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    config: MemoryConfig,
    reserved: AtomicU64,
    /// Per type: the most linear memory one instance has held.
    high_water: Mutex<HashMap<String, u64>>,
    /// Activations shed for memory (the `/metrics` counter).
    pub(crate) shed: Counter,
    /// Instances refused for want of memory (the `/metrics` counter).
    pub(crate) refused: Counter,
    /// The process's RSS at the last memory watch.
    pub(crate) rss: AtomicU64,
}

impl MemoryBudget {
    pub(crate) fn new(config: MemoryConfig, metrics: &crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(MemoryBudget {
            config,
            reserved: AtomicU64::new(0),
            high_water: Mutex::default(),
            shed: metrics.memory_shed.clone(),
            refused: metrics.memory_refused.clone(),
            rss: AtomicU64::new(0),
        })
    }

    pub(crate) fn budget(&self) -> u64 {
        self.config.budget
    }

    pub(crate) fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// What a new instance of `actor_type`, declared `limit`, reserves.
    pub(crate) fn reservation_for(&self, actor_type: &str, limit: u64) -> u64 {
        let Some(factor) = self.config.overcommit else { return limit };
        match self.high_water.lock().get(actor_type) {
            // Not seen yet: its limit, until one instance has run.
            None => limit,
            Some(&seen) => ((seen as f64 * factor) as u64).clamp(MIN_RESERVATION, limit.max(MIN_RESERVATION)),
        }
    }

    /// Reserves `bytes` if they fit in the budget.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut reserved = self.reserved.load(Ordering::Acquire);
        loop {
            if reserved.saturating_add(bytes) > self.config.budget {
                return None;
            }
            match self.reserved.compare_exchange_weak(reserved, reserved + bytes, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Reservation { budget: self.clone(), bytes }),
                Err(now) => reserved = now,
            }
        }
    }

    /// Notes that an instance of `actor_type` holds `bytes` of linear memory.
    pub(crate) fn observe(&self, actor_type: &str, bytes: u64) {
        let mut high_water = self.high_water.lock();
        match high_water.get_mut(actor_type) {
            Some(seen) => *seen = (*seen).max(bytes),
            None => {
                high_water.insert(actor_type.to_string(), bytes);
            }
        }
    }

    pub(crate) fn high_water(&self, actor_type: &str) -> u64 {
        self.high_water.lock().get(actor_type).copied().unwrap_or(0)
    }

    /// Bytes to free to get back under the low watermark, if reserved,
    /// used or the RSS is past its line.
    pub(crate) fn pressure(&self, used: u64, rss: u64) -> Option<u64> {
        let budget = self.config.budget as f64;
        let (high, low) = ((budget * HIGH_WATERMARK) as u64, (budget * LOW_WATERMARK) as u64);
        let reserved = self.reserved();
        let over = [
            (reserved > high).then(|| reserved - low),
            (used > high).then(|| used - low),
            (self.config.shed_on_rss && rss >= self.config.budget).then(|| rss - low),
        ];
        over.into_iter().flatten().max()
    }
}

/// Bytes held against the budget by one instance, returned when it drops.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to `bytes` (an overcommitted instance grew
    /// past what it reserved). It may pass the budget: the instance is
    /// within its declared limit, and pressure shedding makes room.
    pub(crate) fn grow_to(&mut self, bytes: u64) {
        if bytes > self.bytes {
            self.budget.reserved.fetch_add(bytes - self.bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
