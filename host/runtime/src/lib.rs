//! Quark's actor runtime: the engine, component registry, activations and
//! turns, the group committer, and the host side of each WIT interface.
//!
//! [`Host`] is the entry point. It deploys components, routes messages to
//! activations through its [`router::Router`], and hands each successful
//! turn's writes to the group committer before the reply goes out. What
//! runs beside it (the job runner, the outbox dispatcher, projections) lives
//! in the `quark` crate and learns of commits through [`CommitListener`]s.

#![warn(missing_docs)]

pub mod activation;
pub(crate) mod aggregate;
pub mod capabilities;
pub(crate) mod commit;
pub mod committer;
pub mod directory;
pub mod engine;
mod guest_output;
pub mod inbox;
pub(crate) mod instance;
pub mod journal;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod registry;
mod retire;
pub mod router;
pub mod table;
pub mod turn;
pub mod workflow;

pub use quark_core::{ActorError, ActorId, ErrorKind, Manifest, error, id};
/// The store traits and backends (the `quark-store` crate).
pub use quark_store as storage;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Linker;

use self::committer::Committer;
use self::engine::CompiledCache;
use self::metrics::Metrics;
use self::registry::{ComponentRegistry, content_hash};
use self::router::{Reply, Route};
use self::table::{ActivationInfo, ActivationTable, Dispatched};
use crate::id::{ChainId, validate_type_name};
use crate::storage::{ComponentVersion, Store};

pub use quark_core::manifest::{DEFAULT_MEMORY_LIMIT, DEFAULT_TURN_TIMEOUT};

/// Largest request or reply payload by default: bigger data belongs in a
/// blob store, not in messages that are committed and replayed.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The memory limit of the trial start that measures what a component
/// needs when it cannot start within its own limit.
const TRIAL_MEMORY_CEILING: u64 = 4 << 30;

/// Largest component a deploy accepts, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 128 << 20;

/// Host settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The host's data directory (for SQLite, the database).
    pub data_dir: PathBuf,
    /// Where compiled components are cached (default `data_dir/compiled`);
    /// hosts of one build may share it.
    pub compiled_dir: PathBuf,
    /// An activation with no message for this long is removed from memory.
    pub idle_timeout: Duration,
    /// Longest a call between actors (or from outside) may wait for its reply.
    pub call_timeout: Duration,
    /// Largest request payload, in bytes.
    pub max_payload: usize,
    /// Most activations held at once; past it the oldest idle ones are shed
    /// (their state is durable). Defaults to what the kernel's memory-map
    /// limit allows, with a margin.
    pub max_activations: usize,
    /// Names of the external sinks outbox messages may name; a turn that
    /// sends to another name fails. The `quark` server delivers to them.
    pub sink_names: std::collections::BTreeSet<String>,
    /// The memory budget the activations reserve against ([`memory`]).
    pub memory: memory::MemoryConfig,
}

impl HostConfig {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        HostConfig {
            compiled_dir: data_dir.join("compiled"),
            data_dir,
            idle_timeout: Duration::from_secs(300),
            call_timeout: Duration::from_secs(30),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_activations: engine::activation_capacity().map_or(usize::MAX, |c| (c as usize) * 9 / 10),
            sink_names: Default::default(),
            memory: memory::MemoryConfig::from_machine(),
        }
    }
}

/// One message to an actor.
#[derive(Debug, Clone)]
pub struct Request {
    /// The receiving actor.
    pub target: ActorId,
    /// The method to run.
    pub method: String,
    /// The body (JSON for SDK actors).
    pub payload: Vec<u8>,
    /// Call-chain id; nested calls on the same chain may re-enter.
    pub chain: ChainId,
    /// The calling actor, if any.
    pub caller: Option<ActorId>,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Host work riding on this message instead of (or with) a handler call.
    pub control: Option<Box<Control>>,
}

impl Request {
    /// How long the caller still waits. Between hosts a deadline travels
    /// as this duration, never as a clock reading (hosts' clocks differ;
    /// an `Instant` means nothing in another process), and becomes
    /// [`Request::deadline`] again on arrival: `Instant::now() + remaining`.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Host work a message carries, run in the actor's turn order.
#[derive(Debug, Clone)]
pub enum Control {
    /// Runs no handler: snapshots the (event-sourced) actor now.
    Snapshot,
    /// Delivers projection events; the checkpoint moves in the turn's commit.
    Checkpoint(crate::storage::CheckpointAdvance),
    /// Runs a claimed job; its completion commits with the turn.
    Job(JobTurn),
    /// Runs the turn once per message id (or idempotency key): a repeat
    /// gets the first reply from the actor's inbox without running.
    Inbox(InboxTurn),
}

/// A turn under a message id or idempotency key.
#[derive(Debug, Clone)]
pub struct InboxTurn {
    /// The sending actor, or `""` for an HTTP caller's idempotency key:
    /// ids are unique per (receiver, sender).
    pub sender: String,
    /// The message id or idempotency key.
    pub message_id: String,
    /// Look in the inbox first. A message's first delivery skips the look
    /// (nothing can have handled it yet); the commit's inbox entry still
    /// refuses a duplicate.
    pub check: bool,
    /// Set for the messages of one lane queued on their actor together.
    pub lane: Option<LaneTurn>,
}

/// One of several messages of a lane queued on their actor together.
#[derive(Debug, Clone)]
pub struct LaneTurn {
    /// Shared by the lane's queued messages: set once one of their turns
    /// fails, so that the ones behind it do not run (they stay pending, in
    /// order, for the lane's retry).
    pub failed: Arc<std::sync::atomic::AtomicBool>,
    /// The lane's first queued message: it does not build on an earlier
    /// one of them, so only the flag stops it.
    pub first: bool,
}

/// How a job's turn learns which job it runs (the `quark` job runner
/// claims the job; its completion commits with the turn).
#[derive(Debug, Clone)]
pub struct JobTurn {
    /// The job, its lease and its next run if recurring.
    pub completion: crate::storage::jobs::JobCompletion,
    /// Which attempt this is (1, 2, …).
    pub attempt: u32,
    /// Set by the turn when it had no effect at all (no state, events,
    /// jobs, cancels or messages): then nothing needs to commit with the
    /// completion, which the runner writes with its next claim instead (a
    /// crash in between only runs the effect-free turn again).
    pub effect_free: Arc<std::sync::atomic::AtomicBool>,
}

/// What a committed turn did, as [`CommitListener`]s learn it.
#[derive(Debug)]
pub struct CommittedTurn<'a> {
    /// The actor whose turn it was.
    pub actor: &'a ActorId,
    /// Journal events it appended.
    pub events: u64,
    /// It scheduled jobs (now durable).
    pub scheduled_jobs: bool,
    /// It sent outbox messages (now durable).
    pub sent_messages: bool,
}

/// Something that runs beside the runtime and wakes when turns commit:
/// the job runner, the outbox dispatcher, projections.
pub trait CommitListener: Send + Sync {
    /// Called after each successful commit, before the turn's reply goes
    /// out; it must not block.
    fn committed(&self, turn: &CommittedTurn<'_>);
}

/// A router's lookup answered with another lookup where the route must be
/// final (a queued ask or a tell follows one lookup, not a chain of them).
fn nested_lookup(request: &Request) -> ActorError {
    ActorError::internal(format!("the router's lookup for {} answered with another lookup", request.target))
}

/// A queued message's reply, or a timeout at its deadline.
async fn reply_by_deadline(
    rx: tokio::sync::oneshot::Receiver<Result<Vec<u8>, ActorError>>,
    target: ActorId,
    method: String,
    chain: ChainId,
    deadline: Instant,
) -> Result<Vec<u8>, ActorError> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ActorError::internal(format!("the activation of {target} stopped without replying"))),
        Err(_) => Err(ActorError::timeout(format!(
            "no reply from {target} `{method}` before the deadline (call chain {chain}). \
             If actors on different call chains call each other in a cycle, they deadlock and end this way"
        ))),
    }
}


/// What a deploy did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeployOutcome {
    /// The version now active.
    #[serde(flatten)]
    pub version: ComponentVersion,
    /// False when the same bytes and limits were already active (nothing new stored).
    pub created: bool,
}

struct HostInner {
    config: HostConfig,
    engine: Engine,
    registry: ComponentRegistry,
    table: ActivationTable,
    store: Arc<dyn Store>,
    committer: Committer,
    metrics: Arc<Metrics>,
    /// Serialises deploys and rollbacks so versions are numbered in order.
    deploy_lock: tokio::sync::Mutex<()>,
    /// Told of every committed turn (held weakly: a listener ends with
    /// the service that registered it).
    commit_listeners: parking_lot::RwLock<Vec<Weak<dyn CommitListener>>>,
    /// Where every request runs (see [`router`]).
    router: Arc<dyn router::Router>,
    /// The cluster's directory, on a shared store (see [`directory`]).
    directory: std::sync::OnceLock<Arc<dyn directory::ActorDirectory>>,
    /// What the live instances reserve against the memory budget.
    memory: Arc<memory::MemoryBudget>,
}

/// A running Quark host. Cheap to clone.
#[derive(Clone)]
pub struct Host(Arc<HostInner>);

/// A handle that does not keep the host alive (for background tasks).
#[derive(Clone)]
pub struct WeakHost(Weak<HostInner>);

impl WeakHost {
    /// The host, while it lives.
    pub fn upgrade(&self) -> Option<Host> {
        self.0.upgrade().map(Host)
    }
}

impl Host {
    /// Starts a host on `store`: loads the active version of every deployed
    /// actor type and starts the committer and the idle sweeper. Every
    /// actor runs here ([`router::LocalRouter`]).
    pub async fn start(config: HostConfig, store: Arc<dyn Store>) -> anyhow::Result<Host> {
        Host::start_with_router(config, store, Arc::new(router::LocalRouter)).await
    }

    /// [`Host::start`] with the router every request goes through.
    pub async fn start_with_router(config: HostConfig, store: Arc<dyn Store>, router: Arc<dyn router::Router>) -> anyhow::Result<Host> {
        let engine = engine::new_engine().map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        crate::capabilities::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("linking capabilities: {e:#}"))?;
        let cache = CompiledCache::new(&config.compiled_dir, &engine);
        let registry = ComponentRegistry::new(engine.clone(), linker, cache);
        let metrics = Arc::new(Metrics::new());
        let committer = Committer::spawn(store.clone(), metrics.clone());
        let memory = memory::MemoryBudget::new(config.memory, &metrics);
        let host = Host(Arc::new(HostInner {
            memory,
            config,
            engine,
            registry,
            table: ActivationTable::new(),
            store,
            committer,
            metrics,
            deploy_lock: tokio::sync::Mutex::new(()),
            commit_listeners: Default::default(),
            router,
            directory: std::sync::OnceLock::new(),
        }));
        for info in host.0.store.active_versions().await? {
            let (actor_type, version) = (info.actor_type.clone(), info.version);
            // One broken type must not keep the others from serving.
            if let Err(e) = host.load_version(info).await {
                tracing::error!(actor_type, version, error = %format!("{e:#}"), "could not load the active version; this type is unavailable");
            }
        }
        host.prune_compiled_cache();
        host.spawn_idle_sweeper();
        host.spawn_memory_watch();
        tracing::info!(
            budget = %bytesize::ByteSize::b(host.0.config.memory.budget).display().iec(),
            overcommit = ?host.0.config.memory.overcommit,
            "memory budget: new instances reserve against it; idle actors are shed past 80% of it"
        );
        if let Some(capacity) = engine::activation_capacity() {
            tracing::info!(
                capacity,
                max_activations = host.0.config.max_activations,
                "about {capacity} activations fit in this process (vm.max_map_count / {}); idle ones are shed past max_activations",
                engine::MAPS_PER_ACTIVATION
            );
        }
        Ok(host)
    }

    fn spawn_idle_sweeper(&self) {
        let weak = Arc::downgrade(&self.0);
        let idle = self.0.config.idle_timeout;
        let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let removed = inner.table.sweep_idle(idle.as_millis() as i64);
                if removed > 0 {
                    tracing::debug!(removed, "deactivated idle actors");
                }
            }
        });
    }

    /// Versions of `actor_type` compiled in memory (the active one, the
    /// newest few, and any still in use), ascending.
    pub fn loaded_versions(&self, actor_type: &str) -> Vec<u64> {
        self.0.registry.loaded_versions(actor_type)
    }

    /// Prunes the on-disk cache of compiled components in the background.
    fn prune_compiled_cache(&self) {
        let host = self.clone();
        tokio::task::spawn_blocking(move || {
            let removed = host.0.registry.prune_disk_cache();
            if removed > 0 {
                tracing::info!(removed, "pruned compiled components no version uses");
            }
        });
    }

    /// Compiles (cache permitting) and activates a stored version.
    async fn load_version(&self, info: ComponentVersion) -> anyhow::Result<()> {
        let pre = self.prepare_stored(&info).await?;
        self.0.registry.activate(info, pre);
        Ok(())
    }

    /// A stored version of `actor_type`, loaded (and compiled, cache
    /// permitting) if this host has not loaded it yet.
    pub(crate) async fn load_component_version(&self, actor_type: &str, version: u64) -> Result<Arc<registry::LoadedVersion>, ActorError> {
        if let Some(loaded) = self.0.registry.loaded(actor_type, version) {
            return Ok(loaded);
        }
        let info = self
            .0
            .store
            .component_versions(actor_type)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ActorError::not_found(format!("`{actor_type}` has no version {version} (`quark versions {actor_type}`)")))?;
        let pre = self
            .prepare_stored(&info)
            .await
            .map_err(|e| ActorError::internal(format!("loading {actor_type} v{version}: {e:#}")))?;
        Ok(self.0.registry.insert_loaded(info, pre))
    }

    /// Compiles (cache permitting) and validates a stored version.
    async fn prepare_stored(&self, info: &ComponentVersion) -> anyhow::Result<crate::capabilities::ActorPre> {
        let bytes = self
            .0
            .store
            .component_bytes(&info.actor_type, info.version)
            .await?
            .ok_or_else(|| anyhow::anyhow!("component bytes of {} v{} are missing", info.actor_type, info.version))?;
        let host = self.clone();
        let (actor_type, hash) = (info.actor_type.clone(), info.hash.clone());
        let (pre, cached) =
            tokio::task::spawn_blocking(move || host.0.registry.prepare(&actor_type, &hash, &bytes)).await??;
        self.0.metrics.record_component_load(cached);
        Ok(pre)
    }

    /// Deploys `bytes` as the new active version of `actor_type`.
    ///
    /// The component is compiled, checked against the `actor` world and
    /// instantiated once under its memory limit before anything is stored.
    /// Deploying the bytes and limits that are already active changes nothing.
    pub async fn deploy(&self, actor_type: &str, bytes: Vec<u8>, manifest: Manifest) -> Result<DeployOutcome, ActorError> {
        validate_type_name(actor_type)?;
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(ActorError::payload_too_large(format!(
                "component is {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                bytes.len()
            )));
        }
        let _serial = self.0.deploy_lock.lock().await;
        let hash = content_hash(&bytes);
        if let Some(version) = self.0.registry.same_as_active(actor_type, &hash, &manifest) {
            return Ok(DeployOutcome { version, created: false });
        }
        if let Ok(active) = self.0.registry.active(actor_type)
            && active.info.manifest.is_stateless_worker() != manifest.is_stateless_worker()
        {
            // Live activations of the old kind would break the new one's
            // promise (several activations of a stateful actor, or a
            // worker's calls routed through the directory).
            return Err(ActorError::bad_request(format!(
                "`{actor_type}` is a {} type; a new version cannot make it {}: deploy it under a new type name",
                if active.info.manifest.is_stateless_worker() { "stateless worker" } else { "stateful" },
                if manifest.is_stateless_worker() { "a stateless worker" } else { "stateful" },
            )));
        }
        let host = self.clone();
        let (bytes, (pre, cached)) = {
            let (actor_type, hash) = (actor_type.to_string(), hash.clone());
            tokio::task::spawn_blocking(move || {
                let pre = host.0.registry.prepare(&actor_type, &hash, &bytes);
                pre.map(|pre| (bytes, pre))
            })
            .await
            .map_err(|e| ActorError::internal(format!("compiling: {e}")))??
        };
        self.0.metrics.record_component_load(cached);
        self.trial_instantiate(actor_type, &pre, &manifest).await?;
        let info = self.0.store.add_component_version(actor_type, &hash, &bytes, &manifest).await?;
        tracing::info!(actor_type, version = info.version, hash = %&hash[..12], "deployed");
        self.0.registry.activate(info.clone(), pre);
        self.prune_compiled_cache();
        Ok(DeployOutcome { version: info, created: true })
    }

    /// Instantiates a new component once, under its limits, so a component
    /// that cannot even start is rejected at deploy time.
    async fn trial_instantiate(
        &self,
        actor_type: &str,
        pre: &crate::capabilities::ActorPre,
        manifest: &Manifest,
    ) -> Result<(), ActorError> {
        let shared = Arc::new(activation::ActivationShared::new(ActorId::new(actor_type, "deploy-check")?));
        match instance::instantiate_pre(self, &shared, pre, manifest, 0, turn::Execution::Actor).await {
            Ok((_, bindings)) if manifest.is_stateless_worker() && bindings.aggregate.is_some() => Err(ActorError::bad_request(format!(
                "`{actor_type}` is event-sourced and cannot be a stateless worker: its journal needs one writer (deploy it without --stateless-workers)"
            ))),
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::LimitExceeded => {
                // Start it once more without the limit to say what it needs.
                let unlimited = Manifest { memory_limit: TRIAL_MEMORY_CEILING, ..manifest.clone() };
                let needs = match instance::instantiate_pre(self, &shared, pre, &unlimited, 0, turn::Execution::Actor).await {
                    Ok((store, _)) => {
                        let mib = (store.data().limiter.current() as u64).div_ceil(1 << 20);
                        format!(
                            "starting takes {mib} MiB of linear memory, so deploy it with --memory-limit {mib}MiB at least \
                             (more for what its turns allocate)"
                        )
                    }
                    Err(_) => "it did not start within 4 GiB either".to_string(),
                };
                Err(ActorError::rejected(format!(
                    "`{actor_type}` cannot start within its memory limit of {} MiB: {needs} ({})",
                    manifest.memory_limit >> 20,
                    e.message
                )))
            }
            Err(e) => Err(ActorError::rejected(format!("`{actor_type}` failed to start: {}", e.message))),
        }
    }

    /// Serves the version the store says is active for each type where
    /// this host serves another (a deploy or rollback through another host
    /// on the same store): the next turn of each actor runs on it, as after
    /// a deploy here. Returns the types that changed, with their new
    /// version; a type that fails to load is logged and keeps its version.
    pub async fn sync_active_versions(&self) -> Result<Vec<(String, u64)>, ActorError> {
        // Read under the lock: read before, a deploy here in between would
        // be undone by the older list.
        let _serial = self.0.deploy_lock.lock().await;
        let stored = self.0.store.active_versions().await?;
        let mut changed = Vec::new();
        for info in stored {
            let serving = self.0.registry.active(&info.actor_type).ok().map(|v| v.info.version);
            if serving == Some(info.version) {
                continue;
            }
            let pre = match self.0.registry.loaded(&info.actor_type, info.version) {
                Some(loaded) => loaded.pre.clone(),
                None => match self.prepare_stored(&info).await {
                    Ok(pre) => pre,
                    Err(e) => {
                        tracing::error!(actor_type = %info.actor_type, version = info.version, error = %format!("{e:#}"), "could not load the active version");
                        continue;
                    }
                },
            };
            changed.push((info.actor_type.clone(), info.version));
            self.0.registry.activate(info, pre);
        }
        Ok(changed)
    }

    /// Every stored version of `actor_type`, oldest first, and the active one.
    pub async fn versions(&self, actor_type: &str) -> Result<(Vec<ComponentVersion>, u64), ActorError> {
        let active = self.0.registry.active(actor_type)?.info.version;
        Ok((self.0.store.component_versions(actor_type).await?, active))
    }

    /// Makes the version before the active one active again.
    pub async fn rollback(&self, actor_type: &str) -> Result<ComponentVersion, ActorError> {
        let _serial = self.0.deploy_lock.lock().await;
        let active = self.0.registry.active(actor_type)?.info.version;
        let versions = self.0.store.component_versions(actor_type).await?;
        let Some(previous) = versions.into_iter().rfind(|v| v.version < active) else {
            return Err(ActorError::rejected(format!(
                "`{actor_type}` is at its first version (v{active}); there is nothing to roll back to"
            )));
        };
        let pre = match self.0.registry.loaded(actor_type, previous.version) {
            Some(loaded) => loaded.pre.clone(),
            None => self
                .prepare_stored(&previous)
                .await
                .map_err(|e| ActorError::internal(format!("loading v{}: {e:#}", previous.version)))?,
        };
        // The store moves first: if it fails, nothing changed anywhere.
        self.0.store.set_active_version(actor_type, previous.version).await?;
        self.0.registry.activate(previous.clone(), pre);
        tracing::info!(actor_type, version = previous.version, "rolled back");
        Ok(previous)
    }

    /// Sends `payload` to `method` of `target` from outside and waits for the reply.
    pub async fn ask(&self, target: ActorId, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, ActorError> {
        self.ask_request(self.outside_request(target, method, payload, None)).await
    }

    /// Sends `payload` to `method` of `target` from outside without waiting
    /// (volatile, like a guest's `tell`): queued behind the actor's other
    /// messages; a failure is logged and counted, not reported.
    pub fn tell(&self, target: ActorId, method: &str, payload: Vec<u8>) -> Result<(), ActorError> {
        self.tell_request(self.outside_request(target, method, payload, None))
    }

    /// A request from outside any actor, on a fresh call chain, with the
    /// host's call timeout.
    pub fn outside_request(&self, target: ActorId, method: &str, payload: Vec<u8>, control: Option<Control>) -> Request {
        Request {
            target,
            method: method.to_string(),
            payload,
            chain: ChainId::fresh(),
            caller: None,
            deadline: Instant::now() + self.0.config.call_timeout,
            control: control.map(Box::new),
        }
    }

    /// Where `request` runs: a stateless worker on this host, anything
    /// else where the router says.
    fn route(&self, request: &Request) -> Result<Route, ActorError> {
        if self.0.registry.stateless_workers(request.target.actor_type()) > 0 {
            return Ok(Route::Here);
        }
        self.0.router.route(request)
    }

    /// Routes a request and waits for its reply (or its deadline).
    pub async fn ask_request(&self, request: Request) -> Result<Vec<u8>, ActorError> {
        let mut route = self.route(&request)?;
        loop {
            match route {
                Route::Here => return self.ask_here(request).await,
                Route::Forward(peer) => return peer.ask(request).await,
                Route::Lookup(lookup) => route = lookup.await?,
            }
        }
    }

    /// Routes requests to one actor once, then queues them all on its
    /// mailbox in order (never inline), and returns their replies, which
    /// wait for the turns' commits; stops at the first that cannot be
    /// queued. Routing once keeps the order: were each routed on its own,
    /// one that must wait for a lookup would reach the actor after later
    /// ones that found the route cached meanwhile (an outbox lane's
    /// messages overtaking each other after a failover).
    pub async fn queue_asks(&self, requests: Vec<Request>) -> Vec<Reply> {
        let Some(first) = requests.first() else { return Vec::new() };
        debug_assert!(requests.iter().all(|r| r.target == first.target), "one actor's requests");
        let mut route = match self.route(first) {
            Ok(route) => route,
            Err(_) => return Vec::new(),
        };
        while let Route::Lookup(lookup) = route {
            route = match lookup.await {
                Ok(route) => route,
                Err(_) => return Vec::new(),
            };
        }
        let queue = |request| match &route {
            Route::Here => self.queue_here(request),
            Route::Forward(peer) => peer.queue_ask(request),
            Route::Lookup(_) => unreachable!("the lookups were awaited"),
        };
        requests.into_iter().map_while(|request| queue(request).ok()).collect()
    }

    /// Routes a request without waiting for it.
    pub fn tell_request(&self, request: Request) -> Result<(), ActorError> {
        match self.route(&request)? {
            Route::Here => self.tell_here(request),
            Route::Forward(peer) => peer.tell(request),
            Route::Lookup(lookup) => {
                let host = self.clone();
                tokio::spawn(async move {
                    let target = request.target.clone();
                    let sent = match lookup.await {
                        Ok(Route::Here) => host.tell_here(request),
                        Ok(Route::Forward(peer)) => peer.tell(request),
                        Ok(Route::Lookup(_)) => Err(nested_lookup(&request)),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        tracing::warn!(target = %target, error = %e, "a told message could not be routed");
                    }
                });
                Ok(())
            }
        }
    }

    /// Runs a request on this host's activation of its actor and waits for
    /// the reply (or its deadline). For routers: everything else routes.
    pub async fn ask_here(&self, request: Request) -> Result<Vec<u8>, ActorError> {
        self.check_request(&request)?;
        // Only what a queued message's deadline error needs; the inline
        // path takes the request as it is.
        let (target, chain, deadline) = (request.target.clone(), request.chain, request.deadline);
        match self.0.table.dispatch(self, request, true, true)? {
            Dispatched::Inline(turn, request) => turn.run(request).await,
            Dispatched::Queued(None, _) => Err(ActorError::internal("no reply channel for an ask")),
            Dispatched::Queued(Some(rx), method) => reply_by_deadline(rx, target, method, chain, deadline).await,
            Dispatched::Reentrant(shared, request) => activation::run_nested(self, shared, request).await,
        }
    }

    /// Queues a request on this host's activation's mailbox (never run
    /// inline, so that several can be queued in order before the first has
    /// run) and returns its reply, which waits for the turn's commit. For
    /// routers.
    pub fn queue_here(&self, request: Request) -> Result<Reply, ActorError> {
        self.check_request(&request)?;
        let (target, chain, deadline) = (request.target.clone(), request.chain, request.deadline);
        match self.0.table.dispatch(self, request, true, false)? {
            Dispatched::Queued(Some(rx), method) => Ok(Box::pin(reply_by_deadline(rx, target, method, chain, deadline))),
            _ => Err(ActorError::internal(format!("a queued ask to {target} was not queued"))),
        }
    }

    /// Queues a request on this host's activation without waiting for it.
    /// Tells start their own call chain, so they always queue. For routers.
    pub fn tell_here(&self, request: Request) -> Result<(), ActorError> {
        self.check_request(&request)?;
        match self.0.table.dispatch(self, request, false, false)? {
            Dispatched::Queued(..) => Ok(()),
            Dispatched::Reentrant(shared, _) => Err(ActorError::internal(format!(
                "a told message re-entered {} on its own call chain",
                shared.id
            ))),
            Dispatched::Inline(..) => unreachable!("tells carry no reply, so they always queue"),
        }
    }

    /// Makes room for an activation if the table is full, and refuses a
    /// payload over the host's limit.
    fn check_request(&self, request: &Request) -> Result<(), ActorError> {
        if self.0.table.len() >= self.0.config.max_activations && self.0.table.may_shed() {
            let shed = self.shed_idle_activations();
            tracing::debug!(shed, limit = self.0.config.max_activations, "activation limit reached; shed idle actors");
        }
        self.check_payload(request)
    }

    /// Refuses a payload over the host's limit.
    pub(crate) fn check_payload(&self, request: &Request) -> Result<(), ActorError> {
        if request.payload.len() > self.0.config.max_payload {
            return Err(ActorError::payload_too_large(format!(
                "payload is {} bytes; this host's limit is {}",
                request.payload.len(),
                self.0.config.max_payload
            )));
        }
        Ok(())
    }

    /// Every activation on this host.
    pub fn actors(&self) -> Vec<ActivationInfo> {
        self.0.table.list()
    }

    /// Sheds a tenth of the activations (at least 64), oldest idle first,
    /// to make room when the host cannot create more instances.
    pub fn shed_idle_activations(&self) -> usize {
        let count = self.0.table.len();
        self.0.table.shed_oldest_idle((count / 10).max(64).min(count))
    }

    /// Deactivates every activation that is not running or queued (state is
    /// durable; they reactivate on demand). Busy ones are left alone so an
    /// actor is never active twice.
    pub fn deactivate_all(&self) {
        self.0.table.sweep_idle(0);
    }

    /// Prometheus text for `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        let (count, memory) = self.0.table.totals();
        self.0.metrics.set_gauges(count, memory, resident_memory_bytes());
        self.0.metrics.set_memory(&self.0.memory);
        self.0.metrics.encode()
    }

    /// The active version of `actor_type`, from memory.
    pub fn active_version(&self, actor_type: &str) -> Result<ComponentVersion, ActorError> {
        Ok(self.0.registry.active(actor_type)?.info.clone())
    }

    /// Names of the deployed actor types.
    pub fn actor_types(&self) -> Vec<String> {
        self.0.registry.type_names()
    }

    /// The host's settings.
    pub fn config(&self) -> &HostConfig {
        &self.0.config
    }

    /// The storage backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub(crate) fn registry(&self) -> &ComponentRegistry {
        &self.0.registry
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.0.committer
    }

    /// The host's metrics registry (services record into it too).
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Makes this host claim each actor it activates in `directory`, and
    /// fence the actor's commits with the claim. Once only; false if a
    /// directory was set already.
    pub fn set_directory(&self, directory: Arc<dyn directory::ActorDirectory>) -> bool {
        self.0.directory.set(directory).is_ok()
    }

    /// The cluster's directory, if this host is in a cluster.
    pub(crate) fn directory(&self) -> Option<&Arc<dyn directory::ActorDirectory>> {
        self.0.directory.get()
    }

    /// A handle that does not keep the host alive.
    pub fn downgrade(&self) -> WeakHost {
        WeakHost(Arc::downgrade(&self.0))
    }

    /// Tells `listener` of every turn this host commits from now on, for
    /// as long as it lives (the host holds it weakly).
    pub fn add_commit_listener(&self, listener: &Arc<dyn CommitListener>) {
        let mut listeners = self.0.commit_listeners.write();
        listeners.retain(|l| l.strong_count() > 0);
        listeners.push(Arc::downgrade(listener));
    }

    /// Tells the listeners of a committed turn.
    pub(crate) fn committed(&self, turn: &CommittedTurn<'_>) {
        for listener in self.0.commit_listeners.read().iter() {
            if let Some(listener) = listener.upgrade() {
                listener.committed(turn);
            }
        }
    }

}

/// This process's resident set size, in bytes, from the OS.
pub fn resident_memory_bytes() -> u64 {
    let pid = sysinfo::Pid::from_u32(std::process::id());
    let mut system = sysinfo::System::new();
    system.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        true,
        sysinfo::ProcessRefreshKind::nothing().with_memory(),
    );
    system.process(pid).map(|p| p.memory()).unwrap_or(0)
}

