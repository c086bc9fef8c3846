//! Shared helpers: component bytes, hosts on fresh stores, backend skips.

use std::path::PathBuf;
use std::sync::Arc;

use quark::storage::postgres::PostgresStore;
use quark::storage::redis::RedisStore;
use quark::storage::sqlite::SqliteStore;
use quark::storage::{Manifest, Store};
use quark::{ActorId, Node, NodeConfig};

/// A fresh directory under the system's temp directory, removed when
/// dropped. Not the `tempfile` crate: as a dependency of the tests it
/// turned on `fastrand`'s `std` feature, which the `quark` binary's build
/// does not, so `make test` compiled redis, the store, the runtime and the
/// server a second time.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a [`TempDir`] (named after this process and a counter, so
/// parallel tests never share one).
pub(crate) fn tempdir() -> std::io::Result<TempDir> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("quark-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bytes of a guest component built by `make samples`.
pub(crate) fn component(name: &str) -> Vec<u8> {
    for dir in ["target/samples", "target/test-actors"] {
        let path = root().join(dir).join(format!("{name}.wasm"));
        if let Ok(bytes) = std::fs::read(&path) {
            return bytes;
        }
    }
    panic!("component `{name}` is not built: run `make samples` (or `make test`, which builds it first)");
}

/// The bytes of a Python or JavaScript guest, or `None` (after printing
/// SKIP) when its toolchain could not be installed and backends are not
/// required: `make test` builds them when pip and npm reach their registry.
pub(crate) fn guest_in_other_language(name: &str, test: &str) -> Option<Vec<u8>> {
    for dir in ["target/samples", "target/test-actors"] {
        if let Ok(bytes) = std::fs::read(root().join(dir).join(format!("{name}.wasm"))) {
            return Some(bytes);
        }
    }
    let why = format!(
        "component `{name}` is not built (`make samples` builds it once componentize-py / componentize-js can be installed from PyPI / npm)"
    );
    if backends_required() {
        panic!("{test}: {why}; QUARK_REQUIRE_BACKENDS=1 requires it");
    }
    eprintln!("SKIP {test}: {why}; set QUARK_REQUIRE_BACKENDS=1 to fail instead");
    None
}

/// A host on a fresh SQLite store whose compiled components are cached in
/// `target/test-compiled`, shared by every test: a Python or JavaScript
/// component compiles once per build, not once per test.
pub(crate) async fn host_with_shared_compiled_cache(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.host.compiled_dir = root().join("target/test-compiled");
    host_with_config(config).await
}

/// Polls `probe` every 20 ms until `done` holds for what it returns, and
/// returns that; fails after 15 s, showing the last value.
pub(crate) async fn eventually<T: std::fmt::Debug>(what: &str, mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let mut last = probe().await;
    for _ in 0..750 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        last = probe().await;
    }
    panic!("{what} never happened: {last:?}");
}

/// A manifest with the host defaults.
pub(crate) fn manifest() -> Manifest {
    Manifest::parse(None, None).unwrap()
}

/// A manifest with the given limits (`16MiB`, `2s`).
pub(crate) fn manifest_with(memory: &str, timeout: &str) -> Manifest {
    Manifest::parse(Some(memory), Some(timeout)).unwrap()
}

/// `type/key` as an id.
pub(crate) fn id(s: &str) -> ActorId {
    ActorId::parse(s).unwrap()
}

/// A host on a SQLite store in `dir`.
pub(crate) async fn sqlite_host(dir: &std::path::Path) -> Node {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("quark.db")).await.unwrap());
    Node::start(NodeConfig::new(dir), store).await.unwrap()
}

/// A host with `config` on a SQLite store in its data directory.
pub(crate) async fn host_with_config(config: NodeConfig) -> Node {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.host.data_dir.join("quark.db")).await.unwrap());
    Node::start(config, store).await.unwrap()
}

/// A host on a fresh SQLite store with the given components deployed.
pub(crate) async fn host_with(dir: &std::path::Path, components: &[(&str, &str)]) -> Node {
    let host = sqlite_host(dir).await;
    for (actor_type, name) in components {
        host.host().deploy(actor_type, component(name), manifest()).await.unwrap();
    }
    host
}

/// Calls and decodes the JSON reply.
pub(crate) async fn ask(host: &Node, actor: &str, method: &str, json: serde_json::Value) -> Result<serde_json::Value, quark::ActorError> {
    let reply = host.host().ask(id(actor), method, serde_json::to_vec(&json).unwrap()).await?;
    Ok(serde_json::from_slice(&reply).unwrap())
}

/// The PostgreSQL URL tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("QUARK_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// True when an absent backend must fail the test rather than skip it (CI).
pub(crate) fn backends_required() -> bool {
    std::env::var("QUARK_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A unique name for a schema, key prefix or stream, so tests do not see
/// each other: `{prefix}_{pid}_{unix seconds}_{nanos}_{n}`.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{prefix}_{}_{}_{}_{}", std::process::id(), now.as_secs(), now.subsec_nanos(), N.fetch_add(1, Ordering::Relaxed))
}

/// A PostgreSQL store in a fresh schema, or `None` (after printing SKIP)
/// when no server answers and backends are not required.
pub(crate) async fn postgres_store(test: &str) -> Option<PostgresStore> {
    postgres_store_at(&postgres_url(), test).await
}

/// True for a name [`unique`] made more than an hour ago: no test runs that
/// long, so its schema or keys are left over from an earlier run (of this
/// machine or another sharing the server). Names of the older form
/// `{prefix}_{pid}_{nanos}_{n}` count when that process has exited here.
fn left_over(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("quark_test_") else { return false };
    let numbers: Vec<u64> = rest.split(['_', ':']).filter_map(|p| p.parse().ok()).collect();
    match numbers[..] {
        [_pid, secs, _, _, ..] if secs > 1_000_000_000 => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            now.saturating_sub(secs) > 3600
        }
        [pid, _, _, ..] => {
            std::path::Path::new("/proc/self").exists()
                && pid != u64::from(std::process::id())
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// Drops the schemas earlier test runs left in the database (once per run,
/// at the first URL a test uses), so repeated `make test` runs do not pile
/// them up.
async fn drop_left_over_schemas(url: &str) {
    use sqlx::{ConnectOptions, Connection};
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else { return };
        let Ok(mut conn) = options.connect().await else { return };
        let names: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'quark\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
        for name in names.into_iter().filter(|n| left_over(n)) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut conn).await;
        }
        let _ = conn.close().await;
    })
    .await;
}

/// Deletes the keys earlier test runs left in Redis (once per run, at the
/// first URL a test uses).
async fn delete_left_over_keys(url: &str) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let Ok(client) = redis::Client::open(url) else { return };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
        let Ok(keys) = redis::cmd("KEYS").arg("quark_test_*").query_async::<Vec<String>>(&mut conn).await else { return };
        let stale: Vec<&String> = keys.iter().filter(|k| left_over(k)).collect();
        for chunk in stale.chunks(1000) {
            let _ = redis::cmd("UNLINK").arg(chunk).query_async::<i64>(&mut conn).await;
        }
    })
    .await;
}

/// Like [`postgres_store`] at a given URL.
pub(crate) async fn postgres_store_at(url: &str, test: &str) -> Option<PostgresStore> {
    drop_left_over_schemas(url).await;
    match PostgresStore::connect(url, Some(&unique("quark_test"))).await {
        Ok(store) => Some(store),
        Err(e) if !backends_required() => {
            eprintln!("SKIP {test}: PostgreSQL is not reachable at {url} ({e}); set QUARK_REQUIRE_BACKENDS=1 to fail instead");
            None
        }
        Err(e) => panic!("{test}: PostgreSQL is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    }
}

/// The Redis URL tests use.
pub(crate) fn redis_url() -> String {
    std::env::var("QUARK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis store under a fresh key prefix, or `None` (after printing SKIP)
/// when no server answers and backends are not required.
pub(crate) async fn redis_store(test: &str) -> Option<RedisStore> {
    let url = redis_url();
    delete_left_over_keys(&url).await;
    match RedisStore::connect(&url, Some(&unique("quark_test"))).await {
        Ok(store) => Some(store),
        Err(e) if !backends_required() => {
            eprintln!("SKIP {test}: Redis is not reachable at {url} ({e}); set QUARK_REQUIRE_BACKENDS=1 to fail instead");
            None
        }
        Err(e) => panic!("{test}: Redis is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    }
}

/// A NATS client for 127.0.0.1:4222 (or `QUARK_TEST_NATS_URL`), or `None`
/// (after printing SKIP) when no server answers and backends are not required.
pub(crate) async fn nats_client(test: &str) -> Option<(String, async_nats::Client)> {
    let url = std::env::var("QUARK_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let options = async_nats::ConnectOptions::new().connection_timeout(std::time::Duration::from_secs(3));
    match options.connect(url.as_str()).await {
        Ok(client) => Some((url, client)),
        Err(e) if !backends_required() => {
            eprintln!("SKIP {test}: NATS is not reachable at {url} ({e}); set QUARK_REQUIRE_BACKENDS=1 to fail instead");
            None
        }
        Err(e) => panic!("{test}: NATS is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    }
}

/// A store URL for `quark serve --store` on `backend` (`postgres` or
/// `redis`), under a fresh schema or key prefix (`#name`), or `None` (after
/// printing SKIP) when the server does not answer and backends are not
/// required.
pub(crate) async fn shared_store_url(backend: &str, test: &str) -> Option<String> {
    let name = unique("quark_test");
    let (url, reached) = match backend {
        "postgres" => {
            let url = postgres_url();
            drop_left_over_schemas(&url).await;
            let reached = PostgresStore::connect(&url, Some(&name)).await.map(drop);
            (url, reached)
        }
        "redis" => {
            let url = redis_url();
            delete_left_over_keys(&url).await;
            let reached = RedisStore::connect(&url, Some(&name)).await.map(drop);
            (url, reached)
        }
        other => panic!("no shared store {other:?}"),
    };
    match reached {
        Ok(()) => Some(format!("{url}#{name}")),
        Err(e) if !backends_required() => {
            eprintln!("SKIP {test}: {backend} is not reachable at {url} ({e}); set QUARK_REQUIRE_BACKENDS=1 to fail instead");
            None
        }
        Err(e) => panic!("{test}: {backend} is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    }
}

/// A TCP relay in front of a real server (PostgreSQL, Redis), to take it
/// away from one client without touching the server the others share:
/// [`Relay::cut`] drops every connection and refuses new ones (the client
/// sees errors at once); [`Relay::partition`] holds every byte in both
/// directions and answers nothing (the client sees silence, as across a
/// network partition); [`Relay::restore`] heals either.
pub(crate) struct Relay {
    pub(crate) addr: std::net::SocketAddr,
    upstream: &'static str,
    state: Arc<std::sync::atomic::AtomicU8>,
    conns: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

const RELAY_UP: u8 = 0;
const RELAY_CUT: u8 = 1;
const RELAY_PARTITIONED: u8 = 2;

impl Relay {
    /// A relay on an ephemeral loopback port to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: &'static str) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(std::sync::atomic::AtomicU8::new(RELAY_UP));
        let conns = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (state2, conns2) = (state.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if state2.load(Ordering::SeqCst) == RELAY_CUT {
                    continue; // dropped: refused in effect
                }
                let state = state2.clone();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (up_read, up_write) = outbound.into_split();
                    let (down_read, down_write) = inbound.into_split();
                    tokio::join!(Self::pipe(down_read, up_write, state.clone()), Self::pipe(up_read, down_write, state));
                });
                conns2.lock().push(task.abort_handle());
            }
        });
        Relay { addr, upstream, state, conns }
    }

    /// Copies `from` to `to`, holding the bytes while partitioned.
    async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, state: Arc<std::sync::atomic::AtomicU8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while state.load(std::sync::atomic::Ordering::SeqCst) == RELAY_PARTITIONED {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            while state.load(std::sync::atomic::Ordering::SeqCst) == RELAY_PARTITIONED {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// `url` with the upstream's address replaced by the relay's.
    pub(crate) fn url(&self, url: &str) -> String {
        url.replace(self.upstream, &self.addr.to_string())
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.state.store(RELAY_CUT, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    /// Holds every byte, both ways, on every connection, old and new.
    pub(crate) fn partition(&self) {
        self.state.store(RELAY_PARTITIONED, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again.
    pub(crate) fn restore(&self) {
        self.state.store(RELAY_UP, std::sync::atomic::Ordering::SeqCst);
    }
}
