//! Deployed component versions: compiled, validated against the `actor`
//! world, pre-instantiated, and which one is active per actor type.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::engine::CompiledCache;
use super::turn::InstanceState;
use crate::capabilities::ActorPre;
use crate::error::ActorError;
use crate::storage::{ComponentVersion, Manifest};

/// The export every actor component must have.
pub const HANDLER_EXPORT: &str = "quark:actor/handler@0.1.0";

/// Versions of a type kept compiled in memory besides the active one and
/// those in use: the newest few (a rollback is instant); older ones load
/// again from the store (and the disk cache) when a replay asks for them.
pub const KEEP_LOADED_VERSIONS: usize = 3;

/// A component version ready to instantiate.
pub struct LoadedVersion {
    /// What the store knows about it.
    pub info: ComponentVersion,
    pub(crate) pre: ActorPre,
}

struct TypeEntry {
    active: Arc<LoadedVersion>,
    loaded: HashMap<u64, Arc<LoadedVersion>>,
}

impl TypeEntry {
    /// Forgets loaded versions beyond the active one, the newest
    /// [`KEEP_LOADED_VERSIONS`] and those an activation or a replay holds
    /// (they are freed when it lets go).
    fn evict_unused(&mut self) {
        let mut versions: Vec<u64> = self.loaded.keys().copied().collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let newest: Vec<u64> = versions.iter().copied().take(KEEP_LOADED_VERSIONS).collect();
        let active = self.active.info.version;
        self.loaded.retain(|v, loaded| *v == active || newest.contains(v) || Arc::strong_count(loaded) > 1);
    }
}

/// The active version of an actor's type as of a registry generation
/// (see [`ComponentRegistry::active_cached`]).
pub(crate) struct CachedVersion {
    generation: u64,
    version: Arc<LoadedVersion>,
}

/// Every actor type's loaded versions and its active one.
pub struct ComponentRegistry {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: CompiledCache,
    types: RwLock<HashMap<String, TypeEntry>>,
    /// Bumped whenever any type's active version changes.
    generation: std::sync::atomic::AtomicU64,
    /// Set once any stateless worker type is active: until then, routing
    /// never looks a type up to ask.
    any_stateless: std::sync::atomic::AtomicBool,
}

/// Hex SHA-256 of component bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentRegistry {
    pub(crate) fn new(engine: Engine, linker: Linker<InstanceState>, cache: CompiledCache) -> Self {
        ComponentRegistry { engine, linker, cache, types: RwLock::new(HashMap::new()), generation: Default::default(), any_stateless: Default::default() }
    }

    /// Compiles (or loads from the cache) and validates a component; does not
    /// register it. Errors name what is wrong with it.
    /// Also says whether the compiled code came from the on-disk cache.
    pub(crate) fn prepare(&self, actor_type: &str, hash: &str, bytes: &[u8]) -> Result<(ActorPre, bool), ActorError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(ActorError::bad_request(format!(
                "the body for `{actor_type}` is not WebAssembly (no `\\0asm` header); build the actor with `cargo build --target wasm32-wasip2`"
            )));
        }
        // Byte 4..8: a core module has version 1, a component has layer 1.
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(ActorError::bad_request(format!(
                "the body for `{actor_type}` is a core WebAssembly module, not a component: build for `wasm32-wasip2` \
                 (or wrap it with `wasm-tools component new`) so it exports `{HANDLER_EXPORT}`"
            )));
        }
        let (component, cached) = self
            .cache
            .load_or_compile(&self.engine, hash, bytes)
            .map_err(|e| ActorError::bad_request(format!("`{actor_type}` is not a valid component: {e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            ActorError::bad_request(format!(
                "`{actor_type}` imports something this host does not provide (it must fit the `quark:actor/actor` world): {e:#}"
            ))
        })?;
        let pre = ActorPre::new(pre).map_err(|e| {
            ActorError::bad_request(format!(
                "`{actor_type}` does not fit the `quark:actor/actor` world: it must export `{HANDLER_EXPORT}` with \
                 `handle(method, payload)`, and an event-sourced actor `{}` with `apply`, `snapshot` and `restore` ({e:#})",
                crate::capabilities::AGGREGATE_EXPORT
            ))
        })?;
        Ok((pre, cached))
    }

    /// Makes `info` (prepared as `pre`) the active version of its type.
    pub(crate) fn activate(&self, info: ComponentVersion, pre: ActorPre) -> Arc<LoadedVersion> {
        let loaded = Arc::new(LoadedVersion { info, pre });
        if loaded.info.manifest.is_stateless_worker() {
            self.any_stateless.store(true, std::sync::atomic::Ordering::Release);
        }
        let mut types = self.types.write();
        let actor_type = loaded.info.actor_type.clone();
        match types.get_mut(&actor_type) {
            Some(entry) => {
                entry.loaded.insert(loaded.info.version, loaded.clone());
                entry.active = loaded.clone();
                entry.evict_unused();
            }
            None => {
                let loaded_map = HashMap::from([(loaded.info.version, loaded.clone())]);
                types.insert(actor_type, TypeEntry { active: loaded.clone(), loaded: loaded_map });
            }
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        loaded
    }

    /// Keeps a prepared older version loaded without making it active
    /// (replays against old code).
    pub(crate) fn insert_loaded(&self, info: ComponentVersion, pre: ActorPre) -> Arc<LoadedVersion> {
        let loaded = Arc::new(LoadedVersion { info, pre });
        if let Some(entry) = self.types.write().get_mut(&loaded.info.actor_type) {
            entry.loaded.insert(loaded.info.version, loaded.clone());
            entry.evict_unused();
        }
        loaded
    }

    /// The versions of `actor_type` compiled in memory, ascending.
    pub fn loaded_versions(&self, actor_type: &str) -> Vec<u64> {
        let mut versions: Vec<u64> = self.types.read().get(actor_type).map(|t| t.loaded.keys().copied().collect()).unwrap_or_default();
        versions.sort_unstable();
        versions
    }

    /// Content hashes of every version compiled in memory.
    pub(crate) fn loaded_hashes(&self) -> std::collections::HashSet<String> {
        self.types.read().values().flat_map(|t| t.loaded.values().map(|v| v.info.hash.clone())).collect()
    }

    /// Deletes compiled files on disk that no loaded version uses and that
    /// were not used for an hour (another host may share the directory).
    pub(crate) fn prune_disk_cache(&self) -> usize {
        self.cache.prune(&self.loaded_hashes(), std::time::Duration::from_secs(3600))
    }

    /// A version already loaded in this host, if any.
    pub(crate) fn loaded(&self, actor_type: &str, version: u64) -> Option<Arc<LoadedVersion>> {
        self.types.read().get(actor_type).and_then(|t| t.loaded.get(&version).cloned())
    }

    /// The active version of `actor_type`.
    pub fn active(&self, actor_type: &str) -> Result<Arc<LoadedVersion>, ActorError> {
        if let Some(entry) = self.types.read().get(actor_type) {
            return Ok(entry.active.clone());
        }
        let known = self.type_names();
        Err(ActorError::not_found(if known.is_empty() {
            format!("unknown actor type `{actor_type}`: nothing is deployed yet (`quark deploy {actor_type} FILE.wasm`)")
        } else {
            format!("unknown actor type `{actor_type}`; deployed types: {}", known.join(", "))
        }))
    }

    /// Up to how many activations per id `actor_type` runs on one host if
    /// it is a stateless worker; 0 for a stateful (or unknown) type. One
    /// atomic load while no stateless worker type is deployed.
    pub(crate) fn stateless_workers(&self, actor_type: &str) -> u32 {
        if !self.any_stateless.load(std::sync::atomic::Ordering::Acquire) {
            return 0;
        }
        self.types.read().get(actor_type).map_or(0, |entry| entry.active.info.manifest.stateless_workers)
    }

    /// Like [`ComponentRegistry::active`], but answers from `cache` while no
    /// version changed anywhere: one atomic load on the turn path.
    pub(crate) fn active_cached(
        &self,
        actor_type: &str,
        cache: &mut Option<CachedVersion>,
    ) -> Result<Arc<LoadedVersion>, ActorError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        match cache {
            Some(cached) if cached.generation == generation => Ok(cached.version.clone()),
            _ => {
                let version = self.active(actor_type)?;
                *cache = Some(CachedVersion { generation, version: version.clone() });
                Ok(version)
            }
        }
    }

    /// Names of every deployed actor type, sorted.
    pub fn type_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.types.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The active version of `actor_type` if it has exactly these bytes and
    /// limits, so a repeated deploy is a no-op.
    pub(crate) fn same_as_active(&self, actor_type: &str, hash: &str, manifest: &Manifest) -> Option<ComponentVersion> {
        let types = self.types.read();
        let active = &types.get(actor_type)?.active.info;
        (active.hash == hash && &active.manifest == manifest).then(|| active.clone())
    }
}
