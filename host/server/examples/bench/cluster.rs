//! The cluster's parts of the benchmark: the directory on each shared
//! store, calls across hosts, durable turns on three hosts against one,
//! and failover after kill -9 of real `quark serve` processes.

use super::*;
use quark::cluster::ClusterConfig;
use quark::cluster::placement::{HashPlacement, LocalPlacement, Placement};

/// Nodes in this process named `names`, each its own cluster member on one
/// new PostgreSQL schema (`quark_bench_{part}_{pid}`) with its own peer
/// listener on loopback, placing new activations with `placement`; the
/// first has `counter` deployed and every node serves it. `None` (after a
/// SKIP line) when PostgreSQL is not there.
async fn cluster_nodes(dir: &std::path::Path, pg_url: &str, part: &str, names: &[&str], placement: Arc<dyn Placement>) -> Option<Vec<Node>> {
    let schema = format!("quark_bench_{part}_{}", std::process::id());
    let mut nodes: Vec<Node> = Vec::new();
    for name in names {
        let store = match PostgresStore::connect(pg_url, Some(&schema)).await {
            Ok(store) => store,
            Err(e) => {
                println!("SKIP {part} on PostgreSQL: {e}");
                return None;
            }
        };
        let mut config = NodeConfig::new(dir.join(format!("{part}-{name}")));
        config.cluster = Some(ClusterConfig { host_id: Some(name.to_string()), placement: placement.clone(), ..ClusterConfig::new("127.0.0.1:1") });
        let node = Node::start(config, Arc::new(store)).await.unwrap();
        if nodes.is_empty() {
            node.host().deploy("counter", component("counter"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
        }
        nodes.push(node);
    }
    // Each node serves the deploy once it has seen it.
    for (i, node) in nodes.iter().enumerate() {
        let started = Instant::now();
        let probe = id(format!("counter/{part}-probe{i}"));
        while node.host().ask(probe.clone(), "get", b"null".to_vec()).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "node {} never served the deploy", names[i]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Some(nodes)
}

/// Makes every node active once it serves `types` (its version watch sees
/// a deploy within half a second), then waits two heartbeats, so that each
/// has read the others as active (until then each places everything on
/// itself).
pub(crate) async fn activate_serving(nodes: &[Node], types: &[&str]) {
    for node in nodes {
        for tries in 0.. {
            if types.iter().all(|t| node.host().active_version(t).is_ok()) {
                break;
            }
            assert!(tries < 200, "a host never served the deploys");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.cluster().unwrap().set_active().await.unwrap();
    }
    tokio::time::sleep(2 * quark::cluster::DEFAULT_HEARTBEAT + Duration::from_millis(500)).await;
}

/// Every node leaves its cluster (its actors handed off, its row gone).
pub(crate) async fn leave_all(nodes: &[Node]) {
    for node in nodes {
        if let Some(cluster) = node.cluster() {
            let _ = cluster.leave(Duration::from_secs(1)).await;
        }
    }
}

/// Runs `op` on each of `0..n` from `callers` concurrent tasks; ops per second.
async fn ops_per_second<F, Fut>(n: usize, callers: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|k| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in (k..n).step_by(callers) {
                    op(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The cluster's actor directory on a shared store: claims of actors no
/// host owns yet (one per activation in a cluster), claims of actors this
/// host owns already, lookups, and what the fence costs a group commit
/// (batches of 64 one-write turns, written one after another, with and
/// without a fence each).
pub(crate) async fn directory_bench(store: Arc<dyn Store>, name: &str) {
    use quark::storage::cluster::HostInfo;
    let cluster = store.cluster_store().expect("a shared store");
    let me = HostInfo { id: "bench".into(), api: "127.0.0.1:1".into(), peer: String::new() };
    let incarnation = cluster.join(&me, 600_000).await.unwrap();
    let n = scale(20_000);
    let callers = 64;
    let actors: Arc<Vec<ActorId>> = Arc::new((0..n).map(|i| id(format!("dir/a{i}"))).collect());
    let epochs: Arc<parking_lot::Mutex<Vec<u64>>> = Arc::new(parking_lot::Mutex::new(vec![0; n]));
    let claim = |record: bool| {
        let (store, actors, epochs) = (store.clone(), actors.clone(), epochs.clone());
        move |i: usize| {
            let (store, actors, epochs) = (store.clone(), actors.clone(), epochs.clone());
            async move {
                let owner = store.cluster_store().unwrap().claim(&actors[i], "bench", incarnation).await.unwrap();
                if record {
                    epochs.lock()[i] = owner.epoch;
                }
            }
        }
    };
    let new = ops_per_second(n, callers, claim(true)).await;
    let again = ops_per_second(n, callers, claim(false)).await;
    let lookups = {
        let (store, actors) = (store.clone(), actors.clone());
        ops_per_second(n, callers, move |i| {
            let (store, actors) = (store.clone(), actors.clone());
            async move {
                store.cluster_store().unwrap().owner(&actors[i]).await.unwrap().unwrap();
            }
        })
        .await
    };
    println!(
        "directory on {name}: {new:.0} claims/s of new actors, {again:.0} claims/s of actors owned already, {lookups:.0} lookups/s ({callers} callers, {n} actors)"
    );
    let batches = scale(300);
    let epochs = epochs.lock().clone();
    let mut rates = Vec::new();
    for fenced in [false, true, false, true] {
        let start = Instant::now();
        for b in 0..batches {
            let batch: Vec<TurnCommit> = (0..64)
                .map(|j| {
                    let i = (b * 64 + j) % n;
                    let write = quark::storage::StateWrite { key: "v".into(), value: Some(b.to_le_bytes().to_vec()) };
                    TurnCommit { fence: fenced.then_some(epochs[i]), ..TurnCommit::state_only(actors[i].clone(), vec![write]) }
                })
                .collect();
            store.commit(&batch).await.unwrap();
        }
        rates.push((batches * 64) as f64 / start.elapsed().as_secs_f64());
    }
    let (plain, fenced) = ((rates[0] + rates[2]) / 2.0, (rates[1] + rates[3]) / 2.0);
    println!(
        "directory on {name}: batches of 64 one-write turns, one writer: {plain:.0} turns/s unfenced, {fenced:.0} turns/s fenced (ratio {:.2}; alternated, 2 runs each)",
        fenced / plain
    );
    cluster.leave("bench", incarnation).await.unwrap();
}

/// Sequential round trips of `n` calls of `op`: (p50, p99).
async fn round_trips<F, Fut>(n: usize, mut op: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 + 1 {
        op().await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        op().await;
        lat.push(s.elapsed());
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// A loopback TCP echo of `reply` bytes for every `request` bytes read:
/// the floor under a remote ask (one round trip of the same bytes, no
/// framing, no codec, no runtime).
async fn raw_tcp_round_trips(n: usize, request: usize, reply: usize) -> (Duration, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.set_nodelay(true).unwrap();
        let (mut got, out) = (vec![0u8; request], vec![7u8; reply]);
        while conn.read_exact(&mut got).await.is_ok() {
            if conn.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let (out, mut got) = (vec![1u8; request], vec![0u8; reply]);
    let conn = &mut conn;
    let (out, got) = (&out, &mut got);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let s = Instant::now();
        conn.write_all(out).await.unwrap();
        conn.read_exact(got).await.unwrap();
        if i >= n / 10 {
            lat.push(s.elapsed());
        }
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Two hosts in this process on one PostgreSQL schema, each its own
/// cluster member with its own peer listener on loopback: a local ask on
/// the owner, a remote ask forwarded from the other host, and a raw TCP
/// round trip of about the same bytes; then asks/s through each.
pub(crate) async fn cluster_bench(dir: &std::path::Path, pg_url: &str) {
    let Some(nodes) = cluster_nodes(dir, pg_url, "cluster", &["a", "b"], Arc::new(LocalPlacement)).await else { return };
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    // b serves the deploy once it has seen it; each actor lives on b (placement `local`).
    let actors: Vec<ActorId> = (0..1000).map(|i| id(format!("counter/remote{i}"))).collect();
    let started = Instant::now();
    while b.host().ask(actors[0].clone(), "get", b"null".to_vec()).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "host b never served the deploy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for actor in &actors {
        b.host().ask(actor.clone(), "get", b"null".to_vec()).await.unwrap();
    }
    let n = scale(20_000);
    let one = actors[0].clone();
    let mut lines = Vec::new();
    // Alternated, twice each.
    for round in 0..2 {
        let (host, target) = (b.host().clone(), one.clone());
        let local = tokio::spawn(async move { round_trips(n, || async { host.ask(target.clone(), "get", b"null".to_vec()).await.unwrap(); }).await }).await.unwrap();
        let (host, target) = (a.host().clone(), one.clone());
        let remote = tokio::spawn(async move { round_trips(n, || async { host.ask(target.clone(), "get", b"null".to_vec()).await.unwrap(); }).await }).await.unwrap();
        // A forwarded ask's frame carries the target, method, payload,
        // caller, chain and deadline (about 60 bytes); the reply about 10.
        let raw = tokio::spawn(raw_tcp_round_trips(n, 64, 12)).await.unwrap();
        lines.push(format!(
            "round {round}: local ask p50 {:?} p99 {:?}; remote ask p50 {:?} p99 {:?}; raw loopback TCP round trip p50 {:?} p99 {:?}; remote/raw p50 {:.2}",
            local.0, local.1, remote.0, remote.1, raw.0, raw.1, remote.0.as_secs_f64() / raw.0.as_secs_f64()
        ));
    }
    for line in lines {
        println!("cluster on PostgreSQL, one caller: {line}");
    }
    let total = scale(200_000);
    for round in 0..2 {
        for (via, node) in [("local (through b)", &b), ("remote (through a)", &a)] {
            let (rate, p50, p99) = throughput_to(std::slice::from_ref(node), &actors, "get", b"null", total, 64).await;
            println!("cluster on PostgreSQL, round {round}: volatile asks to 1000 actors on b, {via}, 64 callers: {rate:.0} asks/s, p50 {p50:?}, p99 {p99:?}");
        }
    }
    leave_all(&nodes).await;
}


/// Durable turns (counter.increment) on a three-host cluster against a
/// one-host cluster, both in this process on the same PostgreSQL: 1,000
/// counters placed by hash over the hosts, 256 callers spread evenly over
/// the hosts (so on three hosts two calls in three are forwarded to the
/// owner). Alternated, twice each.
pub(crate) async fn cluster_durable_bench(dir: &std::path::Path, pg_url: &str) {
    let Some(three) = cluster_nodes(dir, pg_url, "cluster3", &["a", "b", "c"], Arc::new(HashPlacement)).await else { return };
    let Some(one) = cluster_nodes(dir, pg_url, "cluster1", &["solo"], Arc::new(HashPlacement)).await else { return };
    let actors: Vec<ActorId> = (0..1000).map(|i| id(format!("counter/d{i}"))).collect();
    for nodes in [&three, &one] {
        // Activate (and place) every counter before timing.
        throughput_to(nodes, &actors, "get", b"null", actors.len() * 2, 64).await;
    }
    let owners: Vec<usize> = three.iter().map(|n| n.host().actors().iter().filter(|a| a.id.contains("/d")).count()).collect();
    println!("cluster durable turns: the 1000 counters on hosts a, b, c: {owners:?}");
    for (name, nodes) in [("3 hosts", &three), ("1 host", &one)] {
        let (rate, p50, p99) = throughput_to(nodes, &actors, "get", b"null", scale(200_000), 256).await;
        println!("cluster on PostgreSQL: volatile asks (counter.get), 1000 actors, 256 callers over {name}: {rate:.0} asks/s, p50 {p50:?}, p99 {p99:?}");
    }
    let total = scale(60_000);
    let mut rates = (Vec::new(), Vec::new());
    for round in 0..2 {
        for (name, nodes) in [("3 hosts", &three), ("1 host", &one)] {
            let (rate, p50, p99) = throughput_to(nodes, &actors, "increment", br#"{"by":1}"#, total, 256).await;
            println!(
                "cluster on PostgreSQL, round {round}: durable turns (counter.increment), 1000 actors, 256 callers over {name}: {rate:.0} turns/s, p50 {p50:?}, p99 {p99:?}"
            );
            if nodes.len() == 3 { rates.0.push(rate) } else { rates.1.push(rate) }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("cluster on PostgreSQL: durable turns, 3 hosts / 1 host = {:.2} (one machine, 2 cores shared by every host and PostgreSQL)", mean(&rates.0) / mean(&rates.1));
    leave_all(&three).await;
    leave_all(&one).await;
}

/// A `quark serve` child process, killed when dropped.
struct Serve {
    child: std::process::Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free when asked.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `quark serve` on `store` with `extra` flags and waits for `/healthz`.
async fn serve(quark: &std::path::Path, data_dir: &std::path::Path, store: &str, extra: &[&str]) -> Serve {
    let port = free_port();
    std::fs::create_dir_all(data_dir).unwrap();
    let child = std::process::Command::new(quark)
        .args(["serve", "--store", store, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("serve.log")).map(std::process::Stdio::from).unwrap_or_else(|_| std::process::Stdio::null()))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "quark serve did not start; see {}", data_dir.join("serve.log").display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve { child, url }
}

/// POSTs a call; the status and the reply body.
async fn http_call(client: &reqwest::Client, host: &Serve, actor: &str, method: &str, body: &str) -> (u16, String) {
    match client.post(format!("{}/v1/actors/{actor}/{method}", host.url)).body(body.to_string()).send().await {
        Ok(reply) => (reply.status().as_u16(), reply.text().await.unwrap_or_default()),
        // No answer at all (refused, reset): 0.
        Err(_) => (0, String::new()),
    }
}

/// Failover on real processes: hosts a and b, each a `quark serve` on one
/// PostgreSQL schema with `--lease {lease}` and placement `local` (an actor
/// lives on the host that first calls it); 200 counters incremented
/// through b, then, while 16 callers keep asking them through a (a failed
/// call retried after 20 ms), b is killed with kill -9. Prints the time
/// from the kill to the first successful call of a moved actor and to the
/// last actor's, the calls that failed in between by status, and checks
/// every counter kept its committed value.
pub(crate) async fn failover_bench(dir: &std::path::Path, pg_url: &str, lease: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let quark = root.join("target/release/quark");
    if !quark.exists() {
        return println!("SKIP failover: {} is missing (cargo build --release -p quark --bins)", quark.display());
    }
    let schema = format!("quark_bench_failover_{}_{}", lease.replace(|c: char| !c.is_ascii_alphanumeric(), ""), std::process::id());
    if let Err(e) = PostgresStore::connect(pg_url, Some(&schema)).await {
        return println!("SKIP failover on PostgreSQL: {e}");
    }
    let store = format!("{pg_url}#{schema}");
    let counter = format!("counter={}", root.join("target/samples/counter.wasm").display());
    let flags = ["--lease", lease, "--placement", "local"];
    let a = serve(&quark, &dir.join(format!("failover-{lease}-a")), &store, &[&flags[..], &["--deploy", &counter]].concat()).await;
    let b = serve(&quark, &dir.join(format!("failover-{lease}-b")), &store, &flags).await;
    let client = reqwest::Client::new();
    let actors: Vec<String> = (0..200).map(|i| format!("counter/f{i}")).collect();
    let started = Instant::now();
    while http_call(&client, &b, &actors[0], "get", "null").await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "host b never served the deploy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for actor in &actors {
        for _ in 0..3 {
            assert_eq!(http_call(&client, &b, actor, "increment", r#"{"by":1}"#).await.0, 200);
        }
    }
    let mut committed = HashMap::new();
    for actor in &actors {
        let (status, value) = http_call(&client, &a, actor, "get", "null").await;
        assert_eq!(status, 200, "a forwards to b before the kill");
        committed.insert(actor.clone(), value);
    }
    let a = Arc::new(a);
    let killed: Arc<parking_lot::Mutex<Option<Instant>>> = Arc::default();
    // After the kill: each actor's first success (when, and its value); every failed call's status.
    let answered: Arc<parking_lot::Mutex<HashMap<String, (Duration, String)>>> = Arc::default();
    let failed: Arc<parking_lot::Mutex<Vec<u16>>> = Arc::default();
    let slowest: Arc<parking_lot::Mutex<Duration>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..16)
        .map(|t| {
            let (client, a, killed, stop) = (client.clone(), a.clone(), killed.clone(), stop.clone());
            let (answered, failed, slowest) = (answered.clone(), failed.clone(), slowest.clone());
            let mine: Vec<String> = actors.iter().skip(t).step_by(16).cloned().collect();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let actor = &mine[i % mine.len()];
                    i += 1;
                    let s = Instant::now();
                    let (status, value) = http_call(&client, &a, actor, "get", "null").await;
                    let Some(kill) = killed.lock().filter(|k| s >= *k) else { continue };
                    {
                        let mut worst = slowest.lock();
                        *worst = (*worst).max(s.elapsed());
                    }
                    if status == 200 {
                        answered.lock().entry(actor.clone()).or_insert((kill.elapsed(), value));
                    } else {
                        failed.lock().push(status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b = b;
    *killed.lock() = Some(Instant::now());
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let kill = killed.lock().unwrap();
    while answered.lock().len() < actors.len() && kill.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let answered = answered.lock();
    let (first, last) = (answered.values().map(|(t, _)| *t).min(), answered.values().map(|(t, _)| *t).max());
    let lost = answered.iter().filter(|(actor, (_, value))| committed.get(*actor) != Some(value)).count();
    let mut by_status: std::collections::BTreeMap<u16, usize> = Default::default();
    for status in failed.lock().iter() {
        *by_status.entry(*status).or_default() += 1;
    }
    println!(
        "failover on PostgreSQL, --lease {lease}: kill -9 of the owner of 200 counters, 16 callers through the other host: first moved actor answered after {first:?}, all {}/200 after {last:?}; \
         {} calls failed in between (by status, 0 = no answer: {by_status:?}; each retried after 20 ms); slowest call {:?}; counters with a value other than the committed one: {lost}",
        answered.len(),
        failed.lock().len(),
        *slowest.lock(),
    );
    drop(b);
}

/// Migration (issue 17) between two hosts in this process on PostgreSQL:
/// the time to move an actor holding 1 KiB, 1 MiB and 16 MiB of state
/// (values of a state key stop 16 bytes short of the 1 MiB limit)
/// (the move itself, then its first call on the new host, which reads the
/// state), back and forth; then the call latency of 100 counters under
/// load while 10 of them (10%) move, against the same load with none.
pub(crate) async fn migration_bench(dir: &std::path::Path, pg_url: &str) {
    let Some(nodes) = cluster_nodes(dir, pg_url, "migration", &["a", "b"], Arc::new(LocalPlacement)).await else { return };
    let manifest = Manifest::parse(Some("64MiB"), None).unwrap();
    nodes[0].host().deploy("misbehave", component("misbehave"), manifest).await.unwrap();
    let clusters: Vec<_> = nodes.iter().map(|n| n.cluster().unwrap().clone()).collect();
    // b serves the deploy once its version watch (twice a second) sees it.
    for tries in 0.. {
        if nodes[1].host().active_version("misbehave").is_ok() {
            break;
        }
        assert!(tries < 200, "host b never served misbehave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Active, as `quark serve` makes a host once it listens: a joining
    // host takes no actors.
    for cluster in &clusters {
        cluster.set_active().await.unwrap();
    }
    let drain = quark::cluster::migration::MIGRATION_DRAIN;
    for (label, count, bytes) in [("1 KiB", 1, 1024), ("1 MiB", 1, (1 << 20) - 16), ("16 MiB", 16, (1 << 20) - 16)] {
        let actor = id(format!("misbehave/state-{}", label.replace(' ', "")));
        let host = nodes[0].host();
        let flood = format!(r#"{{"count":{count},"bytes":{bytes}}}"#).into_bytes();
        host.ask(actor.clone(), "flood", flood).await.unwrap_or_else(|e| panic!("writing {label} of state on a: {e}"));
        let (mut moves, mut firsts) = (Vec::new(), Vec::new());
        let mut at = 0;
        for _ in 0..scale(10).max(4) {
            let to = 1 - at;
            let moved = clusters[at].migrate(&actor, clusters[to].id(), drain).await.unwrap();
            let first = Instant::now();
            nodes[to].host().ask(actor.clone(), "echo", b"1".to_vec()).await.unwrap();
            moves.push(Duration::from_secs_f64(moved.took_ms / 1e3));
            firsts.push(first.elapsed());
            at = to;
        }
        moves.sort();
        firsts.sort();
        println!(
            "migration on PostgreSQL, actor with {label} of state: the move p50 {:?} (max {:?}); then its first call on the new host (reads the state) p50 {:?} (max {:?})",
            percentile(&moves, 0.5),
            moves.last().unwrap(),
            percentile(&firsts, 0.5),
            firsts.last().unwrap()
        );
    }

    // Call latency under load while a tenth of the actors move.
    let actors: Vec<ActorId> = (0..100).map(|i| id(format!("counter/mig{i}"))).collect();
    for actor in &actors {
        nodes[0].host().ask(actor.clone(), "increment", br#"{"by":1}"#.to_vec()).await.unwrap();
    }
    for moving in [false, true, false, true] {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let callers: Vec<_> = (0..16)
            .map(|c| {
                let (host, actors, stop) = (nodes[c % 2].host().clone(), actors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = c;
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        let s = Instant::now();
                        host.ask(actors[i % actors.len()].clone(), "increment", br#"{"by":1}"#.to_vec()).await.unwrap();
                        lat.push(s.elapsed());
                        i += 16;
                    }
                    lat
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut moved = 0;
        if moving {
            for actor in actors.iter().take(10) {
                let owner = if nodes[0].host().actors().iter().any(|a| a.id == actor.to_string()) { 0 } else { 1 };
                let to = 1 - owner;
                if clusters[owner].migrate(actor, clusters[to].id(), drain).await.is_ok() {
                    moved += 1;
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Release);
        let mut lat = Vec::new();
        for caller in callers {
            lat.extend(caller.await.unwrap());
        }
        lat.sort();
        println!(
            "migration on PostgreSQL: durable increments of 100 counters, 16 callers over 2 hosts, {}: {} calls, p50 {:?}, p99 {:?}, max {:?}",
            if moving { format!("while {moved} of them (10%) move") } else { "nothing moving".to_string() },
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().unwrap()
        );
    }
    leave_all(&nodes).await;
}
