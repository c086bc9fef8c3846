//! Locality's part of the benchmark (issue 18): chat rooms on three
//! hosts in this process (300 rooms of 10 users; each post is an ask from
//! a user to its room, which tells its ten members), placed at random
//! (the rendezvous hash of the id), measured for a window with the
//! repartitioner held, then again once it has converged. Two rounds: the
//! second starts from the placement scrambled again by random migrations.
//! The links between the hosts go through a relay that delays them
//! ([`link_delay`]), as a network would.

use super::*;
use quark::cluster::ClusterConfig;
use quark::cluster::placement::HashPlacement;
use quark::runtime::memory::MemoryConfig;

const ROOMS: usize = 300;
const USERS: usize = 10;
/// Concurrent clients, each posting as a random user through a random host.
const CLIENTS: usize = 64;
/// The repartition period (and sampling window).
const PERIOD: Duration = Duration::from_secs(5);
const HOSTS: [&str; 3] = ["a", "b", "c"];

/// The delay each way on the links between hosts
/// (`QUARK_BENCH_LOCALITY_DELAY_US`, 250 µs: a round trip of half a
/// millisecond, as between servers in one data centre; 0: none, a
/// loopback frame).
fn link_delay() -> Duration {
    Duration::from_micros(std::env::var("QUARK_BENCH_LOCALITY_DELAY_US").ok().and_then(|s| s.parse().ok()).unwrap_or(250))
}

async fn chat_nodes(dir: &std::path::Path, pg_url: &str) -> Option<Vec<Node>> {
    let schema = format!("quark_bench_locality_{}", std::process::id());
    let mut nodes: Vec<Node> = Vec::new();
    for name in HOSTS {
        let store = match PostgresStore::connect(pg_url, Some(&schema)).await {
            Ok(store) => store,
            Err(e) => {
                println!("SKIP locality on PostgreSQL: {e}");
                return None;
            }
        };
        let mut config = NodeConfig::new(dir.join(format!("locality-{name}")));
        config.host.memory = MemoryConfig { budget: 8 << 30, overcommit: Some(2.0), shed_on_rss: false };
        let (peer_listen, peer_advertise) = match link_delay() {
            Duration::ZERO => ("127.0.0.1:0".to_string(), None),
            delay => {
                let listen = format!("127.0.0.1:{}", super::relay::free_port());
                (listen.clone(), Some(super::relay::delaying(listen, delay)))
            }
        };
        config.cluster = Some(ClusterConfig {
            host_id: Some(name.to_string()),
            placement: Arc::new(HashPlacement),
            repartition: Some(PERIOD),
            peer_listen,
            peer_advertise,
            ..ClusterConfig::new("127.0.0.1:1")
        });
        let node = Node::start(config, Arc::new(store)).await.unwrap();
        node.cluster().unwrap().set_repartitioning(false);
        if nodes.is_empty() {
            for actor_type in ["room", "user"] {
                node.host().deploy(actor_type, component("chat"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
            }
        }
        nodes.push(node);
    }
    cluster::activate_serving(&nodes, &["room", "user"]).await;
    Some(nodes)
}

fn user(u: usize) -> (ActorId, Vec<u8>) {
    (id(format!("user/u{u}")), format!(r#"{{"room":"room/r{}"}}"#, u / USERS).into_bytes())
}

/// Posts from [`CLIENTS`] clients until stopped.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>,
    started: Instant,
}

impl Load {
    fn start(nodes: &[Node]) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..CLIENTS)
            .map(|c| {
                let (hosts, stop) = (nodes.iter().map(|n| n.host().clone()).collect::<Vec<_>>(), stop.clone());
                tokio::spawn(async move {
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    let (mut latencies, mut failed) = (Vec::new(), 0);
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (actor, body) = user(seed as usize % (ROOMS * USERS));
                        let host = &hosts[(seed >> 40) as usize % hosts.len()];
                        let started = Instant::now();
                        match host.ask(actor, "post", body).await {
                            Ok(_) => latencies.push(started.elapsed()),
                            Err(_) => failed += 1,
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        Load { stop, clients, started: Instant::now() }
    }

    /// Stops it: posts per second, latencies (sorted), failed posts.
    async fn stop(self) -> (f64, Vec<Duration>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let (mut all, mut failed) = (Vec::new(), 0);
        for client in self.clients {
            let (latencies, f) = client.await.unwrap();
            all.extend(latencies);
            failed += f;
        }
        let rate = all.len() as f64 / self.started.elapsed().as_secs_f64();
        all.sort();
        (rate, all, failed)
    }
}

fn moves(nodes: &[Node]) -> u64 {
    nodes.iter().map(|n| n.host().metrics().locality_moves()).sum()
}

/// One measured window.
struct Window {
    posts_per_s: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
    remote_fraction: f64,
    moves: u64,
}

async fn measure(nodes: &[Node], secs: u64) -> Window {
    let moves_before = moves(nodes);
    let load = Load::start(nodes);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // The last full sampling window lies inside this one.
    let graph = nodes[0].cluster().unwrap().graph().await;
    let (posts_per_s, latencies, failed) = load.stop().await;
    Window {
        posts_per_s,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        failed,
        remote_fraction: graph.remote_fraction,
        moves: moves(nodes) - moves_before,
    }
}

/// Moves every actor to a host picked at random (two in three leave).
async fn scramble(nodes: &[Node]) -> usize {
    let clusters: Vec<_> = nodes.iter().map(|n| n.cluster().unwrap().clone()).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut moved = 0;
    for (i, node) in nodes.iter().enumerate() {
        for actor in node.host().actors() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let to = seed as usize % nodes.len();
            if to != i && clusters[i].migrate(&id(actor.id), clusters[to].id(), quark::cluster::migration::MIGRATION_DRAIN).await.is_ok() {
                moved += 1;
            }
        }
    }
    moved
}

pub(crate) async fn locality_bench(dir: &std::path::Path, pg_url: &str) {
    let secs = std::env::var("QUARK_BENCH_LOCALITY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick() { 10 } else { 60 });
    let Some(nodes) = chat_nodes(dir, pg_url).await else { return };
    // Every user joins its room (its first post), 64 at a time.
    for chunk in (0..ROOMS * USERS).collect::<Vec<_>>().chunks(64) {
        let joins = chunk.iter().map(|&u| {
            let (actor, body) = user(u);
            nodes[u % nodes.len()].host().ask(actor, "post", body)
        });
        for joined in futures::future::join_all(joins).await {
            joined.expect("a user joins its room");
        }
    }
    let line = |label: &str, w: &Window| {
        println!(
            "locality, chat {ROOMS} rooms x {USERS} users on 3 hosts, links delayed {:?} each way, {label}: remote-call fraction {:.1}%, {:.0} posts/s ({:.0} messages/s), \
             post p50 {:?} p99 {:?}, {} failed, {} moves in the window",
            link_delay(),
            w.remote_fraction * 100.0,
            w.posts_per_s,
            w.posts_per_s * (1 + USERS) as f64,
            w.p50,
            w.p99,
            w.failed,
            w.moves
        )
    };
    for round in 0..2 {
        if round > 0 {
            for node in &nodes {
                node.cluster().unwrap().set_repartitioning(false);
            }
            let moved = scramble(&nodes).await;
            println!("locality: scrambled the placement again ({moved} random migrations)");
        }
        let before = measure(&nodes, secs).await;
        line(&format!("round {}, placed at random, {secs} s", round + 1), &before);
        // Converging, under the same load: until the actors the last moves
        // anchored are free to move again and a period more passes without a
        // move (an earlier "two quiet periods" was sometimes only the anchors).
        for node in &nodes {
            node.cluster().unwrap().set_repartitioning(true);
        }
        let load = Load::start(&nodes);
        let (started, first) = (Instant::now(), moves(&nodes));
        let mut quiet = 0u32;
        for _ in 0..60 {
            let at = moves(&nodes);
            tokio::time::sleep(PERIOD).await;
            quiet = if moves(&nodes) == at { quiet + 1 } else { 0 };
            if quiet > quark::cluster::locality::ANCHOR_PERIODS && moves(&nodes) > first {
                break;
            }
        }
        load.stop().await;
        println!(
            "locality: converged in {:.0} s with {} moves ({} quiet periods at the end)",
            started.elapsed().as_secs_f64(),
            moves(&nodes) - first,
            quiet
        );
        let after = measure(&nodes, secs).await;
        line(&format!("round {}, repartitioned, {secs} s", round + 1), &after);
        println!(
            "locality, round {}: remote calls {:.0}% fewer, throughput x{:.2}, p50 x{:.2}, p99 x{:.2} (after / before)",
            round + 1,
            (1.0 - after.remote_fraction / before.remote_fraction.max(1e-9)) * 100.0,
            after.posts_per_s / before.posts_per_s,
            after.p50.as_secs_f64() / before.p50.as_secs_f64(),
            after.p99.as_secs_f64() / before.p99.as_secs_f64()
        );
    }
    cluster::leave_all(&nodes).await;
}
