//! WASI's clocks and randomness for a workflow: every clock read is a
//! recorded step (live the first time, from the history on replay), and
//! both random generators are seeded from the instance record, so a
//! workflow that reads `wasi:clocks` or `wasi:random` directly replays
//! exactly as it ran.

use std::time::Duration;

use rand::SeedableRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::StepKind;
use super::run::SharedRun;

/// Gives `wasi` the recording clocks of `run` and its seeded generators.
pub(crate) fn install(wasi: &mut WasiCtxBuilder, run: &SharedRun) {
    let seed = run.lock().record.seed;
    wasi.wall_clock(WallClock(run.clone()))
        .monotonic_clock(MonotonicClock(run.clone()))
        .secure_random(rand::rngs::StdRng::seed_from_u64(seed))
        .insecure_random(rand::rngs::StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5157_4f52_4b46_4c4f))
        .insecure_random_seed(u128::from(seed) << 64 | u128::from(seed.rotate_left(31)));
}

/// `runtime.now` and `workflow.now`: the wall clock in ms, recorded.
pub(crate) fn wall_ms(run: &SharedRun) -> u64 {
    run.lock().value(StepKind::Clock, "now", || crate::storage::now_ms().max(0) as u64).unwrap_or(0)
}

/// A divergence found in a clock read stops the guest at its next host
/// call (a clock cannot trap): until then it reads 0.
struct WallClock(SharedRun);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        let nanos = self.0.lock().value(StepKind::Clock, "wasi:wall", wall_nanos);
        Duration::from_nanos(nanos.unwrap_or(0))
    }
}

struct MonotonicClock(SharedRun);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        // From the wall clock, so it keeps going forward across restarts
        // and hosts (a process-local origin would start again at zero).
        self.0.lock().value(StepKind::Clock, "wasi:monotonic", wall_nanos).unwrap_or(0)
    }
}

fn wall_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
