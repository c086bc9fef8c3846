//! Per-activation resource limits, enforced by wasmtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::activation::ActivationShared;

/// Most table elements (function references) one instance may have; guests
/// rarely need more than a few thousand.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Caps an instance's linear memory at the actor type's memory limit and
/// keeps the activation's memory figure current.
pub struct MemoryLimiter {
    limit: usize,
    /// Linear memory this instance holds now, in bytes.
    current: usize,
    /// Set when the guest asked for more than its limit during this turn.
    pub(crate) exceeded: bool,
    activation: Arc<ActivationShared>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64, activation: Arc<ActivationShared>) -> Self {
        MemoryLimiter { limit: usize::try_from(limit).unwrap_or(usize::MAX), current: 0, exceeded: false, activation }
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
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.activation.memory_bytes.fetch_sub(self.current as u64, Ordering::Relaxed);
    }
}
