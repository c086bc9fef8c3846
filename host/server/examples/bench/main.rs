//! Quark's benchmarks: `make bench` (or `cargo run --release -p quark --example bench`).
//!
//! Prints one line per figure with the machine it ran on. Absolute numbers
//! drift on a shared 2-core machine; compare within one run.
//! Set `QUARK_BENCH_QUICK=1` for a short smoke run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quark::storage::postgres::PostgresStore;
use quark::storage::redis::RedisStore;
use quark::storage::sqlite::SqliteStore;
use quark::storage::{EventRecord, JournalAppend, Store, TurnCommit};
use quark::{ActorId, Manifest, Node, NodeConfig};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod cluster;
mod locality;
mod memory;
mod queues;
mod relay;
mod workflows;

mod raw {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "actor",
        imports: { "quark:actor/runtime.call": async },
        exports: { default: async },
    });
}

fn quick() -> bool {
    std::env::var("QUARK_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn scale(n: usize) -> usize {
    if quick() { (n / 20).max(10) } else { n }
}

fn component(name: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ["target/samples", "target/test-actors"]
        .iter()
        .find_map(|dir| std::fs::read(root.join(dir).join(format!("{name}.wasm"))).ok())
        .unwrap_or_else(|| panic!("component {name} missing: run `make samples`"))
}

/// The PostgreSQL the bench uses (`QUARK_TEST_POSTGRES_URL`, as the tests).
fn pg_url() -> String {
    std::env::var("QUARK_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis the bench uses (`QUARK_TEST_REDIS_URL`, as the tests).
fn redis_url() -> String {
    std::env::var("QUARK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

/// A bare wasmtime embedding of the same component: the baseline for the
/// cost Quark adds to a call.
struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
    state: HashMap<String, Vec<u8>>,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

use raw::quark::actor::types::Error as RawError;

impl raw::quark::actor::types::Host for RawState {}
impl raw::quark::actor::log::Host for RawState {
    fn log(&mut self, _: raw::quark::actor::log::Level, _: String) {}
}
impl raw::quark::actor::state::Host for RawState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, RawError> {
        Ok(self.state.get(&key).cloned())
    }
    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), RawError> {
        self.state.insert(key, value);
        Ok(())
    }
    fn delete(&mut self, key: String) -> Result<(), RawError> {
        self.state.remove(&key);
        Ok(())
    }
    fn keys(&mut self) -> Result<Vec<String>, RawError> {
        Ok(self.state.keys().cloned().collect())
    }
}
impl raw::quark::actor::journal::Host for RawState {
    fn append(&mut self, _: Vec<raw::quark::actor::journal::Event>) -> Result<u64, RawError> {
        Err(RawError::Rejected("raw".into()))
    }
    fn version(&mut self) -> Result<u64, RawError> {
        Ok(0)
    }
    fn read(&mut self, _: u64, _: u32) -> Result<Vec<raw::quark::actor::journal::RecordedEvent>, RawError> {
        Ok(Vec::new())
    }
    fn request_snapshot(&mut self) {}
}
impl raw::quark::actor::jobs::Host for RawState {
    fn schedule(&mut self, _: raw::quark::actor::jobs::Job) -> Result<String, RawError> {
        Err(RawError::Rejected("raw".into()))
    }
    fn cancel(&mut self, _: String) -> Result<bool, RawError> {
        Ok(false)
    }
    fn current(&mut self) -> Option<(String, u32)> {
        None
    }
    fn progress(&mut self, _: u8, _: String) {}
}
impl raw::quark::actor::outbox::Host for RawState {
    fn send(&mut self, _: raw::quark::actor::outbox::Message) -> Result<String, RawError> {
        Err(RawError::Rejected("raw".into()))
    }
    fn current(&mut self) -> Option<(String, String)> {
        None
    }
}
impl raw::quark::actor::runtime::Host for RawState {
    fn self_id(&mut self) -> String {
        "counter/raw".into()
    }
    fn caller(&mut self) -> Option<String> {
        None
    }
    async fn call(&mut self, _: String, _: String, _: Vec<u8>) -> Result<Vec<u8>, RawError> {
        Err(RawError::NotFound("raw".into()))
    }
    fn tell(&mut self, _: String, _: String, _: Vec<u8>) -> Result<(), RawError> {
        Ok(())
    }
    fn now(&mut self) -> u64 {
        0
    }
}

async fn raw_call_ns(n: usize) -> f64 {
    // Same engine settings as the host, so the ratio is Quark's own cost.
    let engine = wasmtime::Engine::new(&quark::runtime::engine::engine_config()).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    raw::Actor::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
    let comp = wasmtime::component::Component::new(&engine, component("counter")).unwrap();
    let pre = raw::ActorPre::new(linker.instantiate_pre(&comp).unwrap()).unwrap();
    let mut store = wasmtime::Store::new(
        &engine,
        RawState { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), state: HashMap::new() },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let actor = pre.instantiate_async(&mut store).await.unwrap();
    let started = Instant::now();
    for _ in 0..n {
        actor.quark_actor_handler().call_handle(&mut store, "get", &b"null".to_vec()).await.unwrap().unwrap();
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

async fn host_on(store: Arc<dyn Store>, dir: &std::path::Path) -> Node {
    host_with(store, NodeConfig::new(dir)).await
}

async fn host_with(store: Arc<dyn Store>, config: NodeConfig) -> Node {
    let host = Node::start(config, store).await.unwrap();
    host.host().deploy("counter", component("counter"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
    host
}

fn id(s: String) -> ActorId {
    ActorId::parse(&s).unwrap()
}

/// [`throughput_to`] actors `counter/k0`… `counter/k{actors - 1}`.
async fn throughput(host: &Node, method: &'static str, body: &'static [u8], actors: usize, total: usize, concurrency: usize) -> (f64, Duration, Duration) {
    let actors: Vec<ActorId> = (0..actors).map(|k| id(format!("counter/k{k}"))).collect();
    throughput_to(std::slice::from_ref(host), &actors, method, body, total, concurrency).await
}

/// 16 clients each send sequential increments to their own actor; v2 of
/// `counter` is deployed mid-way. Reports the longest single call (the
/// pause a client saw) and checks every increment landed exactly once.
async fn hot_swap(host: &Node) {
    let calls = scale(2_000);
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..16 {
        let host = host.clone();
        clients.push(tokio::spawn(async move {
            let actor = id(format!("counter/swap{c}"));
            let mut longest = Duration::ZERO;
            let mut values = Vec::with_capacity(calls);
            for _ in 0..calls {
                let s = Instant::now();
                let v = host.host().ask(actor.clone(), "increment", br#"{"by":1}"#.to_vec()).await.unwrap();
                longest = longest.max(s.elapsed());
                values.push(serde_json::from_slice::<i64>(&v).unwrap());
            }
            (longest, values)
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let swap_started = Instant::now();
    host.host().deploy("counter", component("counter-v2"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
    let deploy_took = swap_started.elapsed();
    let mut longest = Duration::ZERO;
    let mut out_of_order = 0;
    let mut total = 0;
    for c in clients {
        let (l, values) = c.await.unwrap();
        longest = longest.max(l);
        out_of_order += values.windows(2).filter(|w| w[1] != w[0] + 1).count();
        total += values.len();
    }
    let mut lost_or_duplicated = 0i64;
    for a in 0..16 {
        let v = host.host().ask(id(format!("counter/swap{a}")), "get", b"null".to_vec()).await.unwrap();
        lost_or_duplicated += (serde_json::from_slice::<i64>(&v).unwrap() - calls as i64).abs();
    }
    let version = host.host().ask(id("counter/swap0".into()), "version", b"null".to_vec()).await.unwrap();
    println!(
        "hot swap under load: {total} increments in {:?}, deploy took {deploy_took:?}, longest call {longest:?}, \
         lost or duplicated {lost_or_duplicated}, out-of-order replies {out_of_order}, now on version {}",
        started.elapsed(),
        String::from_utf8_lossy(&version)
    );
    host.host().rollback("counter").await.unwrap();
}

/// 100 ledger actors, each with `callers` concurrent callers, append
/// `per_turn` events of about 200 bytes per turn; prints events/s and turn
/// latency. With several callers an actor runs its next turn while the
/// last one commits, so group commits grow past one turn per actor.
async fn journal_append(store: Arc<dyn Store>, dir: &std::path::Path, backend: &str, per_turn: usize, callers: usize) {
    let host = Node::start(NodeConfig::new(dir), store).await.unwrap();
    host.host().deploy("ledger", component("ledger"), Manifest::parse(Some("64MiB"), None).unwrap()).await.unwrap();
    let actors = 100;
    let tasks_total = actors * callers;
    let turns = scale(if per_turn == 1 { 200_000 } else { 20_000 }) / tasks_total * tasks_total;
    // `{"recorded":{"note":"xxx…"}}`: 200 bytes of event data.
    let body = serde_json::to_vec(&serde_json::json!({"count": per_turn, "note": "x".repeat(176)})).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_total {
        let (host, body) = (host.clone(), body.clone());
        let actor = id(format!("ledger/{backend}-{per_turn}-{callers}-{}", t % actors));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(turns / tasks_total);
            for _ in 0..turns / tasks_total {
                let s = Instant::now();
                host.host().ask(actor.clone(), "record_many", body.clone()).await.unwrap();
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    println!(
        "journal append on {backend}, 100 actors x {callers} caller(s), {per_turn} event(s) of 200 B per turn: {:.0} events/s ({:.0} turns/s), turn p50 {:?}, p99 {:?}",
        (turns * per_turn) as f64 / elapsed.as_secs_f64(),
        turns as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}

/// Writes `count` bank deposit events for `actor` straight to the store,
/// after version `from`.
async fn seed_bank_events(store: &Arc<dyn Store>, actor: &ActorId, from: u64, count: u64) {
    let mut version = from;
    while version < from + count {
        let n = 1000.min(from + count - version);
        let events = (version + 1..=version + n)
            .map(|v| EventRecord {
                version: v,
                event_type: "deposited".into(),
                schema_version: 1,
                data: br#"{"deposited":{"amount":1}}"#.to_vec(),
                recorded_at_ms: 1_700_000_000_000 + v as i64,
                correlation_id: "bench".into(),
                causation_id: format!("seed-{v}"),
                caller: None,
                method: "deposit".into(),
            })
            .collect();
        let commit = TurnCommit { journal: Some(JournalAppend { expected_version: version, events }), ..TurnCommit::state_only(actor.clone(), vec![]) };
        store.commit(&[commit]).await.unwrap();
        version += n;
    }
}

/// Rebuilds of a 100,000-event bank account (full replay, and from a
/// snapshot with 999 events after it), then replays of a 10,000-event one.
async fn rebuild_and_replay(dir: &std::path::Path) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("rebuild.db")).await.unwrap());
    let host = Node::start(NodeConfig::new(dir), store.clone()).await.unwrap();
    let manifest = Manifest::parse(Some("64MiB"), Some("30s")).unwrap().with_journal(Some("1000000"), None).unwrap();
    host.host().deploy("bank", component("bank"), manifest).await.unwrap();
    let big = id("bank/big".into());
    let events = scale(100_000) as u64;
    seed_bank_events(&store, &big, 0, events).await;
    let s = Instant::now();
    let balance = host.host().ask(big.clone(), "balance", b"null".to_vec()).await.unwrap();
    let full = s.elapsed();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&balance).unwrap()["balance"], serde_json::json!(events));
    println!(
        "rebuild without snapshot: {events} events in {full:?} = {:.0} events/s through `apply` (batches of 1000, SQLite)",
        events as f64 / full.as_secs_f64()
    );
    host.host().snapshot(&big).await.unwrap();
    seed_bank_events(&store, &big, events, 999).await;
    let mut lat = Vec::new();
    for _ in 0..scale(40).max(5) {
        host.host().deactivate_all();
        let s = Instant::now();
        host.host().ask(big.clone(), "balance", b"null".to_vec()).await.unwrap();
        lat.push(s.elapsed());
    }
    lat.sort();
    println!(
        "activation of a {}-event actor snapshotted every 1000 events (restore + 999 events): p50 {:?}, p99 {:?}",
        events + 999,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    let stream = id("bank/replay10k".into());
    seed_bank_events(&store, &stream, 0, 10_000).await;
    for (label, snapshot) in [("no snapshot", false), ("snapshot at 10,000", true)] {
        if snapshot {
            host.host().snapshot(&stream).await.unwrap();
        }
        let mut lat = Vec::new();
        for _ in 0..scale(40).max(5) {
            let s = Instant::now();
            host.host().replay(&stream, quark::runtime::journal::ReplayTarget::Version(10_000), None).await.unwrap();
            lat.push(s.elapsed());
        }
        lat.sort();
        println!("replay to version 10,000 of a 10,000-event stream ({label}): p50 {:?}, p99 {:?}", percentile(&lat, 0.5), percentile(&lat, 0.99));
    }
}

fn job_request(target: String, method: &str) -> quark::jobs::JobRequest {
    quark::jobs::JobRequest {
        target: id(target),
        method: method.into(),
        payload: b"null".to_vec(),
        when: quark::jobs::When::Delay(0),
        time_zone: None,
        max_attempts: None,
        backoff_ms: None,
        max_backoff_ms: None,
        timeout_ms: None,
        priority: 0,
        queue: None,
        idempotency_key: None,
        catch_up: Default::default(),
    }
}

/// Runs `total` asks spread over `actors` from `concurrency` tasks, caller
/// `t` through `hosts[t % hosts.len()]`; returns (asks/s, p50, p99).
async fn throughput_to(hosts: &[Node], actors: &[ActorId], method: &'static str, body: &'static [u8], total: usize, concurrency: usize) -> (f64, Duration, Duration) {
    let actors = Arc::new(actors.to_vec());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (host, actors) = (hosts[t % hosts.len()].host().clone(), actors.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(total / concurrency + 1);
                let mut i = t;
                while i < total {
                    let s = Instant::now();
                    host.ask(actors[i % actors.len()].clone(), method, body.to_vec()).await.unwrap();
                    lat.push(s.elapsed());
                    i += concurrency;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    (total as f64 / elapsed.as_secs_f64(), percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// One `counter` per language (Rust, Python, JavaScript): component size,
/// compile time cold and from the on-disk cache, activation, ask latency
/// and memory per activation.
async fn languages_bench(dir: &std::path::Path, name: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(bytes) = std::fs::read(root.join("target/samples").join(format!("{name}.wasm"))) else {
        println!("SKIP languages {name}: not built (make samples builds it when its toolchain installs)");
        return;
    };
    let size = bytes.len();
    let manifest = Manifest::parse(Some("128MiB"), None).unwrap();
    // Cold: a deploy compiles (cranelift) and starts one trial instance.
    let cold = {
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("quark.db")).await.unwrap());
        let host = Node::start(NodeConfig::new(dir), sqlite).await.unwrap();
        let started = Instant::now();
        host.host().deploy(name, bytes, manifest).await.unwrap();
        started.elapsed()
    };
    // Cached: a restart loads the compiled code from DATA_DIR/compiled.
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("quark.db")).await.unwrap());
    let started = Instant::now();
    let host = Node::start(NodeConfig::new(dir), sqlite).await.unwrap();
    let cached = started.elapsed();
    assert!(host.metrics_text().contains("quark_component_cache_hits_total 1"), "{name} was not loaded from the cache");

    let n = scale(200);
    let before = quark::runtime::resident_memory_bytes();
    let mut activations = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        host.host().ask(id(format!("{name}/a{i}")), "get", b"null".to_vec()).await.unwrap();
        activations.push(s.elapsed());
    }
    let after = quark::runtime::resident_memory_bytes();
    activations.sort();
    let live = host.host().actors().len().max(1);
    let linear = host.host().actors().iter().map(|a| a.memory_bytes).sum::<u64>() / live as u64;

    let asks = scale(5_000);
    let mut lat = Vec::with_capacity(asks);
    let target = id(format!("{name}/a0"));
    for _ in 0..asks {
        let s = Instant::now();
        host.host().ask(target.clone(), "increment", br#"{"by":1}"#.to_vec()).await.unwrap();
        lat.push(s.elapsed());
    }
    lat.sort();
    // A read-only turn: no commit, so the guest's own cost shows.
    let mut gets = Vec::with_capacity(asks);
    for _ in 0..asks {
        let s = Instant::now();
        host.host().ask(target.clone(), "get", b"null".to_vec()).await.unwrap();
        gets.push(s.elapsed());
    }
    gets.sort();
    println!(
        "languages {name}: {:.1} MB component; deploy cold (compile + trial start) {:.2} s, restart from the compiled cache {:.0} ms; \
         activation + first turn p50 {:?}; increment ask p50 {:?}, p99 {:?}; get ask p50 {:?}; per activation {:.1} MiB RSS, {:.1} MiB linear memory",
        size as f64 / 1e6,
        cold.as_secs_f64(),
        cached.as_secs_f64() * 1e3,
        percentile(&activations, 0.5),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&gets, 0.5),
        after.saturating_sub(before) as f64 / live as f64 / (1 << 20) as f64,
        linear as f64 / (1 << 20) as f64,
    );
}

fn main() {
    // `QUARK_LOG=warn` (say) shows the hosts' logs; off by default, so the figures stand alone.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("QUARK_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let mut builder = match std::env::var("QUARK_BENCH_THREADS").ok().and_then(|t| t.parse::<usize>().ok()) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().unwrap().block_on(run());
}

/// True when `QUARK_BENCH_ONLY` (comma-separated) is unset or names `part`.
fn wanted(part: &str) -> bool {
    std::env::var("QUARK_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p == part))
}

async fn run() {
    run_parts().await;
    drop_bench_data().await;
}

/// Drops the PostgreSQL schemas and Redis keys this run created (their
/// names end in the process id), so runs do not pile up data that later
/// runs (and autovacuum) trip over.
async fn drop_bench_data() {
    use sqlx::Connection;
    let suffix = format!("_{}", std::process::id());
    let pg_url = pg_url();
    let conn = sqlx::PgConnection::connect(&pg_url).await;
    if let Err(e) = &conn {
        println!("note: could not connect to drop the bench schemas: {e}");
    }
    if let Ok(mut conn) = conn {
        let schemas: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'quark_bench%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
        for schema in schemas.iter().filter(|s| s.ends_with(&suffix)) {
            if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await {
                println!("note: could not drop the bench schema {schema}: {e}");
            }
        }
    }
    let redis_url = redis_url();
    if let Ok(mut conn) = redis::Client::open(redis_url).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS").arg("quark_bench*").query(&mut conn).unwrap_or_default();
        for chunk in keys.iter().filter(|k| k.split(':').next().is_some_and(|p| p.ends_with(&suffix))).collect::<Vec<_>>().chunks(1000) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// A directory for this run's data, removed when dropped. (Not the
/// `tempfile` crate: as a dev-dependency of the host crate it gave the host's
/// build a second fingerprint, so building this example and then the
/// `quark` binary, as CI does, compiled the host twice.)
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("quark-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_parts() {
    println!("# quark bench — {} — {}", machine(), if quick() { "QUICK" } else { "full" });
    let dir = ScratchDir::new();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).await.unwrap());
    let host = host_on(sqlite, dir.path()).await;

    // 1. Raw wasmtime call vs Quark ask, single caller.
    if wanted("ask") {
    let n = scale(200_000);
    let raw_ns = raw_call_ns(n).await;
    // The caller is a task on a worker thread, as an HTTP handler or another
    // actor is (the `block_on` thread is not a worker: every hop from it
    // crosses threads).
    let caller = host.clone();
    let ask_ns = tokio::spawn(async move {
        let target = id("counter/single".into());
        caller.host().ask(target.clone(), "get", b"null".to_vec()).await.unwrap();
        let started = Instant::now();
        for _ in 0..n {
            caller.host().ask(target.clone(), "get", b"null".to_vec()).await.unwrap();
        }
        started.elapsed().as_nanos() as f64 / n as f64
    })
    .await
    .unwrap();
    println!("raw wasmtime call (counter.get): {:.2} µs; quark ask: {:.2} µs; ratio raw/ask = {:.2}", raw_ns / 1e3, ask_ns / 1e3, raw_ns / ask_ns);
    }

    // 2. Volatile ask throughput, 1,000 actors.
    if wanted("volatile") {
        let (rate, p50, p99) = throughput(&host, "get", b"null", 1000, scale(1_000_000), 64).await;
        println!("volatile asks (counter.get), 1000 actors, 64 callers: {rate:.0} turns/s, p50 {p50:?}, p99 {p99:?}");
    }

    // 3. Cold activation: new keys, component cached.
    if wanted("cold") {
    let n = scale(5_000);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        host.host().ask(id(format!("counter/cold{i}")), "get", b"null".to_vec()).await.unwrap();
        lat.push(s.elapsed());
    }
    lat.sort();
    println!("cold activation + first turn: p50 {:?}, p99 {:?} ({n} new keys)", percentile(&lat, 0.5), percentile(&lat, 0.99));
    // Its parts: the store read that loads an actor's state.
    let mut reads = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        host.host().store().load_state(&id(format!("counter/absent{i}"))).await.unwrap();
        reads.push(s.elapsed());
    }
    reads.sort();
    println!("  of which the SQLite state read of a new key: p50 {:?}, p99 {:?}", percentile(&reads, 0.5), percentile(&reads, 0.99));
    host.host().deactivate_all();
    }

    // 4. Resident memory per idle activation.
    if wanted("memory") {
    host.host().deactivate_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = scale(10_000);
    let before = quark::runtime::resident_memory_bytes();
    for i in 0..n {
        host.host().ask(id(format!("counter/idle{i}")), "get", b"null".to_vec()).await.unwrap();
    }
    let after = quark::runtime::resident_memory_bytes();
    let maps = std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0);
    let live = host.host().actors().len();
    let linear: u64 = host.host().actors().iter().map(|a| a.memory_bytes).sum::<u64>() / live.max(1) as u64;
    println!(
        "idle counter activations: {:.1} KiB RSS each ({live} live of {n} activated; linear memory per instance {:.0} KiB, mostly untouched; {maps} memory maps in the process)",
        (after.saturating_sub(before)) as f64 / live.max(1) as f64 / 1024.0,
        linear as f64 / 1024.0
    );
    host.host().deactivate_all();
    }

    // 5. Hot swap under load: clients increment while v2 is deployed.
    if wanted("swap") {
        hot_swap(&host).await;
    }

    // 6. Durable turns with group commit.
    if wanted("durable") {
        let (rate, p50, p99) = throughput(&host, "increment", br#"{"by":1}"#, 1000, scale(200_000), 256).await;
        println!("durable turns (counter.increment) on SQLite, 1000 actors, 256 callers: {rate:.0} turns/s, p50 {p50:?}, p99 {p99:?}");
    }
    drop(host);

    // 7. Journal: append throughput on every backend, rebuilds, replays.
    if wanted("journal") {
        for (per_turn, callers) in [(1, 1), (1, 8), (10, 1), (10, 4)] {
            let sub = dir.path().join(format!("journal-{per_turn}-{callers}"));
            let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&sub.join("journal.db")).await.unwrap());
            journal_append(sqlite, &sub, "SQLite", per_turn, callers).await;
            let pg_url = pg_url();
            match PostgresStore::connect(&pg_url, Some(&format!("quark_bench_j{per_turn}_{callers}_{}", std::process::id()))).await {
                Ok(pg) => journal_append(Arc::new(pg), &sub, "PostgreSQL", per_turn, callers).await,
                Err(e) => println!("SKIP journal append on PostgreSQL: {e}"),
            }
            let redis_url = redis_url();
            match RedisStore::connect(&redis_url, Some(&format!("quark_bench_{per_turn}_{callers}_{}", std::process::id()))).await {
                Ok(redis) => journal_append(Arc::new(redis), &sub, "Redis", per_turn, callers).await,
                Err(e) => println!("SKIP journal append on Redis: {e}"),
            }
        }
    }
    if wanted("rebuild") {
        rebuild_and_replay(&dir.path().join("rebuild")).await;
    }
    if wanted("jobs") {
        let sub = dir.path().join("jobs");
        // QUARK_BENCH_JOBS_ON=sqlite,postgres,redis picks backends (all by default).
        let on = |backend: &str| std::env::var("QUARK_BENCH_JOBS_ON").map_or(true, |on| on.split(',').any(|b| b == backend));
        if on("sqlite") {
            let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&sub.join("jobs.db")).await.unwrap());
            queues::jobs_bench(sqlite, &sub, "SQLite").await;
        }
        let pg_url = pg_url();
        match PostgresStore::connect(&pg_url, Some(&format!("quark_bench_jobs_{}", std::process::id()))).await {
            Ok(pg) if on("postgres") => queues::jobs_bench(Arc::new(pg), &sub, "PostgreSQL").await,
            Ok(_) => {}
            Err(e) => println!("SKIP jobs on PostgreSQL: {e}"),
        }
        let redis_url = redis_url();
        match RedisStore::connect(&redis_url, Some(&format!("quark_bench_jobs_{}", std::process::id()))).await {
            Ok(redis) if on("redis") => queues::jobs_bench(Arc::new(redis), &sub, "Redis").await,
            Ok(_) => {}
            Err(e) => println!("SKIP jobs on Redis: {e}"),
        }
    }
    if wanted("outbox") {
        let sub = dir.path().join("outbox");
        // QUARK_BENCH_OUTBOX_ON=sqlite,postgres,redis,sink picks parts (all by default).
        let on = |backend: &str| std::env::var("QUARK_BENCH_OUTBOX_ON").map_or(true, |on| on.split(',').any(|b| b == backend));
        if on("sqlite") {
            let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&sub.join("outbox.db")).await.unwrap());
            queues::outbox_bench(sqlite, &sub, "SQLite").await;
        }
        let pg_url = pg_url();
        match PostgresStore::connect(&pg_url, Some(&format!("quark_bench_outbox_{}", std::process::id()))).await {
            Ok(pg) if on("postgres") => queues::outbox_bench(Arc::new(pg), &sub, "PostgreSQL").await,
            Ok(_) => {}
            Err(e) => println!("SKIP outbox on PostgreSQL: {e}"),
        }
        let redis_url = redis_url();
        match RedisStore::connect(&redis_url, Some(&format!("quark_bench_outbox_{}", std::process::id()))).await {
            Ok(redis) if on("redis") => queues::outbox_bench(Arc::new(redis), &sub, "Redis").await,
            Ok(_) => {}
            Err(e) => println!("SKIP outbox on Redis: {e}"),
        }
        if on("sink") {
            queues::sink_bench(&sub).await;
        }
    }
    if wanted("directory") {
        let pg_url = pg_url();
        match PostgresStore::connect(&pg_url, Some(&format!("quark_bench_directory_{}", std::process::id()))).await {
            Ok(pg) => cluster::directory_bench(Arc::new(pg), "PostgreSQL").await,
            Err(e) => println!("SKIP directory on PostgreSQL: {e}"),
        }
        let redis_url = redis_url();
        match RedisStore::connect(&redis_url, Some(&format!("quark_bench_directory_{}", std::process::id()))).await {
            Ok(redis) => cluster::directory_bench(Arc::new(redis), "Redis").await,
            Err(e) => println!("SKIP directory on Redis: {e}"),
        }
    }
    if wanted("cluster") {
        let pg_url = pg_url();
        cluster::cluster_bench(dir.path(), &pg_url).await;
    }
    if wanted("cluster-durable") {
        let pg_url = pg_url();
        cluster::cluster_durable_bench(dir.path(), &pg_url).await;
    }
    if wanted("migration") {
        let pg_url = pg_url();
        cluster::migration_bench(dir.path(), &pg_url).await;
    }
    if wanted("locality") {
        let pg_url = pg_url();
        locality::locality_bench(dir.path(), &pg_url).await;
    }
    if wanted("oversubscription") {
        let pg_url = pg_url();
        memory::oversubscription_bench(dir.path(), &pg_url).await;
    }
    if wanted("failover") {
        let pg_url = pg_url();
        // The default lease, and a short one: the time is the lease's.
        for lease in ["10s", "2s"] {
            cluster::failover_bench(dir.path(), &pg_url, lease).await;
        }
    }
    if wanted("workflows") {
        let sub = dir.path().join("workflows");
        for d in ["sqlite", "postgres"] {
            std::fs::create_dir_all(sub.join(d)).unwrap();
        }
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&sub.join("workflows.db")).await.unwrap());
        workflows::workflows_bench(sqlite, &sub.join("sqlite"), "SQLite").await;
        match PostgresStore::connect(&pg_url(), Some(&format!("quark_bench_workflows_{}", std::process::id()))).await {
            Ok(pg) => workflows::workflows_bench(Arc::new(pg), &sub.join("postgres"), "PostgreSQL").await,
            Err(e) => println!("SKIP workflows on PostgreSQL: {e}"),
        }
    }
    if wanted("languages") {
        for name in ["counter", "counter-py", "counter-js"] {
            languages_bench(&dir.path().join(format!("languages-{name}")), name).await;
        }
    }
    if !wanted("postgres") {
        return;
    }

    let pg_url = pg_url();
    let schema = format!("quark_bench_{}", std::process::id());
    match PostgresStore::connect(&pg_url, Some(&schema)).await {
        Ok(pg) => {
            let host = host_on(Arc::new(pg), dir.path()).await;
            let (rate, p50, p99) = throughput(&host, "increment", br#"{"by":1}"#, 1000, scale(100_000), 256).await;
            println!("durable turns (counter.increment) on PostgreSQL, 1000 actors, 256 callers: {rate:.0} turns/s, p50 {p50:?}, p99 {p99:?}");
        }
        Err(e) => println!("SKIP PostgreSQL durable turns: {e}"),
    }
}
