//! The host's memory budget (`--memory-budget`), fed by each guest's
//! declared memory limit.
//!
//! Every live instance **reserves** bytes against the budget when it is
//! created: by default the type's observed high-water use on this host
//! times an overcommit factor (2; never more than the declared limit,
//! never less than what the instance holds; the first instance of a type
//! reserves the limit to be let in, then keeps what the later ones
//! reserve), or, strictly, the declared limit.
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
use std::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use crate::{ActorError, Host, Manifest, activation, resident_memory_bytes};

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

/// How often a host looks for memory pressure.
const MEMORY_WATCH_PERIOD: Duration = Duration::from_millis(500);

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
        let (high, low) = self.watermarks();
        let reserved = self.reserved();
        let over = [
            (reserved > high).then(|| reserved - low),
            (used > high).then(|| used - low),
            (self.config.shed_on_rss && rss >= self.config.budget).then(|| rss - low),
        ];
        over.into_iter().flatten().max()
    }

    /// The high and low watermarks, bytes.
    fn watermarks(&self) -> (u64, u64) {
        let budget = self.config.budget as f64;
        ((budget * HIGH_WATERMARK) as u64, (budget * LOW_WATERMARK) as u64)
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

    /// Gives back what the reservation holds past `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.reserved.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
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

/// The host's side of the budget: reserving, shedding, reporting.
impl Host {
    /// Every [`MEMORY_WATCH_PERIOD`]: under memory pressure, sheds idle
    /// activations, oldest first, down to the low watermark.
    pub(crate) fn spawn_memory_watch(&self) {
        let weak = self.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MEMORY_WATCH_PERIOD);
            loop {
                tick.tick().await;
                let Some(host) = weak.upgrade() else { break };
                let (_, used) = host.0.table.totals();
                let rss = tokio::task::spawn_blocking(resident_memory_bytes).await.unwrap_or(0);
                host.0.memory.rss.store(rss, std::sync::atomic::Ordering::Release);
                if let Some(excess) = host.0.memory.pressure(used, rss) {
                    let (shed, freed) = host.0.table.shed_oldest_idle_bytes(excess);
                    host.0.memory.shed.inc_by(shed as u64);
                    if shed > 0 {
                        tracing::info!(shed, freed, used, rss, budget = host.0.memory.budget(), "memory pressure: shed idle actors, oldest first");
                    }
                }
            }
        });
    }

    /// Reserves the memory a new instance of `shared`'s actor under
    /// `manifest` needs, shedding idle activations (oldest first) to make
    /// room; `limit-exceeded` naming the budget when it cannot fit.
    pub(crate) async fn reserve_memory(&self, shared: &activation::ActivationShared, manifest: &Manifest) -> Result<Reservation, ActorError> {
        let budget = &self.0.memory;
        let bytes = budget.reservation_for(shared.id.actor_type(), manifest.memory_limit);
        if let Some(reservation) = budget.try_reserve(bytes) {
            return Ok(reservation);
        }
        let needed = (budget.reserved() + bytes).saturating_sub(budget.budget());
        let (shed, _) = self.0.table.shed_oldest_idle_bytes(needed);
        budget.shed.inc_by(shed as u64);
        if shed > 0 {
            // The shed instances are dropped as their tasks see their
            // mailboxes closed: moments, not a turn.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if let Some(reservation) = budget.try_reserve(bytes) {
                    return Ok(reservation);
                }
            }
        }
        budget.refused.inc();
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        Err(ActorError::limit_exceeded(format!(
            "{} cannot be activated: this host's memory budget of {} is reserved ({} by {} activations, none idle to shed), \
             and {} reserves {} per activation ({}); raise --memory-budget, lower the type's --memory-limit, or add a host",
            shared.id,
            size(budget.budget()),
            size(budget.reserved()),
            self.0.table.len(),
            shared.id.actor_type(),
            size(bytes),
            if bytes == manifest.memory_limit { "its memory limit" } else { "its observed high water times --memory-overcommit" },
        )))
    }

    /// This host's memory: budget, reserved, used, RSS, per type.
    pub fn memory(&self) -> MemoryReport {
        let budget = &self.0.memory;
        let mut types = std::collections::BTreeMap::<String, TypeMemory>::new();
        for (actor_type, reserved, used) in self.0.table.memory_by_activation() {
            let entry = types.entry(actor_type).or_default();
            entry.activations += 1;
            entry.reserved += reserved;
            entry.used += used;
        }
        let types = types
            .into_iter()
            .map(|(actor_type, t)| TypeMemory { high_water: budget.high_water(&actor_type), actor_type, ..t })
            .collect::<Vec<_>>();
        MemoryReport {
            budget: budget.budget(),
            reserved: budget.reserved(),
            used: types.iter().map(|t| t.used).sum(),
            rss: resident_memory_bytes(),
            shed: budget.shed.get(),
            refused: budget.refused.get(),
            migrated: self.metrics().migrations(),
            types,
        }
    }

    /// What this host reports of itself with each cluster heartbeat:
    /// activations, and memory budget, reserved, used and RSS (as of the
    /// last memory watch), without the per-type detail.
    pub fn load(&self) -> quark_store::cluster::HostLoad {
        let budget = &self.0.memory;
        let (activations, used) = self.0.table.totals();
        quark_store::cluster::HostLoad {
            activations: activations as u64,
            memory_budget: budget.budget(),
            memory_reserved: budget.reserved(),
            memory_used: used,
            rss: budget.rss.load(std::sync::atomic::Ordering::Acquire),
            shed: budget.shed.get(),
            refused: budget.refused.get(),
            migrated: self.metrics().migrations(),
        }
    }

    /// What a new activation of `actor_type` would reserve here (its
    /// declared limit, or its observed high water times the overcommit
    /// factor); `None` for a type not deployed.
    pub fn memory_need(&self, actor_type: &str) -> Option<u64> {
        let version = self.0.registry.active(actor_type).ok()?;
        Some(self.0.memory.reservation_for(actor_type, version.info.manifest.memory_limit))
    }

    /// Bytes past the low watermark that shedding this host's idle
    /// activations cannot free: how far reserved or measured linear memory
    /// would still stand above it once every idle activation is gone, when
    /// either is past the high watermark; `None` otherwise. A cluster
    /// migrates this much to hosts with room (issue 17). The process RSS
    /// is not counted: moving actors away cannot shrink the host's own
    /// memory (RSS pressure sheds idle activations only).
    pub fn memory_overflow(&self) -> Option<u64> {
        let budget = &self.0.memory;
        let (high, low) = budget.watermarks();
        let (_, used) = self.0.table.totals();
        let reserved = budget.reserved();
        let (idle_reserved, idle_used) = self.0.table.idle_bytes();
        let over = [
            (reserved > high).then(|| reserved.saturating_sub(idle_reserved).saturating_sub(low)),
            (used > high).then(|| used.saturating_sub(idle_used).saturating_sub(low)),
        ];
        over.into_iter().flatten().max().filter(|&bytes| bytes > 0)
    }

    /// What is left of this host's budget to reserve.
    pub fn memory_free(&self) -> u64 {
        self.0.memory.budget().saturating_sub(self.0.memory.reserved())
    }

    pub(crate) fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.0.memory
    }
}
