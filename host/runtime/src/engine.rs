//! The wasmtime engine, its epoch ticker, and the on-disk cache of compiled
//! components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances. A running guest yields to the
/// executor once per tick and its deadline is checked then, so this bounds
/// both how long one guest can hog a thread and how late a timeout fires.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

static COARSE_NOW_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Wall-clock milliseconds since the Unix epoch, at most one [`EPOCH_TICK`]
/// old: an atomic load instead of a clock read, for idle bookkeeping.
pub(crate) fn coarse_now_ms() -> i64 {
    match COARSE_NOW_MS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => crate::storage::now_ms(),
        ms => ms,
    }
}

/// Address space reserved per linear memory. wasmtime's 64-bit default
/// (4 GiB, so bounds checks can be elided) caps a process at about 20,000
/// live instances before the 128 TiB address space runs out; a virtual-actor
/// host needs far more. Memories that grow past this move (rarely).
pub const MEMORY_RESERVATION: u64 = 64 << 20;

/// Guard region after each linear memory.
pub const MEMORY_GUARD: u64 = 2 << 20;

/// Memory mappings one activation holds with these settings (linear memory
/// with its copy-on-write image and guard, and the cached fiber stack), as
/// measured by `make bench`: the kernel's `vm.max_map_count` divided by this
/// bounds how many activations fit in one process.
pub const MAPS_PER_ACTIVATION: u64 = 7;

/// How many activations the kernel's map limit allows, if it can be read.
pub fn activation_capacity() -> Option<u64> {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse::<u64>().ok()?;
    Some(max / MAPS_PER_ACTIVATION)
}

/// The engine settings every component runs with.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config.memory_reservation(MEMORY_RESERVATION);
    config.memory_guard_size(MEMORY_GUARD);
    config
}

/// Builds the engine every component runs on, with its epoch ticker.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let engine = Engine::new(&engine_config())?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("quark-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                COARSE_NOW_MS.store(crate::storage::now_ms(), std::sync::atomic::Ordering::Relaxed);
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| wasmtime::Error::msg(format!("starting the epoch thread: {e}")))?;
    Ok(engine)
}

/// Compiled components on disk, keyed by the component's content hash and
/// the engine's compatibility hash, so a restart does not recompile.
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    /// A cache in `dir` (created on first write) for `engine`.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompiledCache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", hasher.finish()) }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// Loads the compiled form of `bytes` (whose SHA-256 is `hash`), compiling
    /// and caching it on a miss. Returns the component and whether it was cached.
    pub fn load_or_compile(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(hash);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // host into its own data directory, under a name that includes
            // the engine's compatibility hash; wasmtime checks the header too.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Marks it used, so a prune by age leaves it.
                    if let Err(e) = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now())) {
                        tracing::debug!(path = %path.display(), error = %e, "could not mark a compiled component as used");
                    }
                    return Ok((component, true));
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "compiled component unreadable; recompiling"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
        }
        Ok((component, false))
    }

    /// Deletes compiled files whose component hash is not in `keep` (or
    /// that an older engine wrote) and that were not written or loaded
    /// within `unused_for`; returns how many.
    pub fn prune(&self, keep: &std::collections::HashSet<String>, unused_for: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((hash, rest)) = name.split_once('-') else { continue };
            let ours = rest == format!("{}.cwasm", self.engine_key);
            if (ours && keep.contains(hash)) || !(rest.ends_with(".cwasm") || rest.contains(".tmp")) {
                continue;
            }
            let idle = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= unused_for);
            if idle && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Unique per writer: hosts sharing the directory may race on one file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, component.serialize()?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
