//! Per-activation resource limits, enforced by wasmtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::activation::ActivationShared;
use crate::memory::{MemoryBudget, Reservation};

/// Most table elements (function references) one instance may have; guests
/// rarely need more than a few thousand.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Caps an instance's linear memory at the actor type's memory limit,
/// keeps the activation's memory figures current and holds the
/// instance's reservation against the host's memory budget.
pub struct MemoryLimiter {
    limit: usize,
    /// Linear memory this instance holds now, in bytes.
    current: usize,
    /// Set when the guest asked for more than its limit during this turn.
    pub(crate) exceeded: bool,
    activation: Arc<ActivationShared>,
    /// What the instance holds against the budget (none for the trial
    /// starts of a deploy), and the budget, for its high-water marks.
    reservation: Option<(Reservation, Arc<MemoryBudget>)>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64, activation: Arc<ActivationShared>) -> Self {
        MemoryLimiter { limit: usize::try_from(limit).unwrap_or(usize::MAX), current: 0, exceeded: false, activation, reservation: None }
    }

    /// Makes the instance hold `reservation` (grown to what it holds
    /// already) until it is dropped. The first instance of a type reserved
    /// its declared limit (nothing had been observed); now that it exists,
    /// it keeps only what any later instance reserves.
    pub(crate) fn hold(&mut self, mut reservation: Reservation, budget: Arc<MemoryBudget>) {
        let actor_type = self.activation.id.actor_type();
        budget.observe(actor_type, self.current as u64);
        reservation.shrink_to(budget.reservation_for(actor_type, self.limit as u64));
        reservation.grow_to(self.current as u64);
        self.activation.reserved_bytes.fetch_add(reservation.bytes(), Ordering::Relaxed);
        self.reservation = Some((reservation, budget));
    }

    /// Linear memory the instance holds now, in bytes.
    pub(crate) fn current(&self) -> usize {
        self.current
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // The limit is for all of this instance's memories together.
        if self.current + desired - current > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.activation.memory_bytes.fetch_add((desired - current) as u64, Ordering::Relaxed);
        self.current += desired - current;
        if let Some((reservation, budget)) = &mut self.reservation {
            let before = reservation.bytes();
            reservation.grow_to(self.current as u64);
            self.activation.reserved_bytes.fetch_add(reservation.bytes() - before, Ordering::Relaxed);
            budget.observe(self.activation.id.actor_type(), self.current as u64);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.activation.memory_bytes.fetch_sub(self.current as u64, Ordering::Relaxed);
        if let Some((reservation, _)) = &self.reservation {
            self.activation.reserved_bytes.fetch_sub(reservation.bytes(), Ordering::Relaxed);
        }
    }
}
