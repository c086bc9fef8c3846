//! Memory-aware placement's part of the benchmark (issue 17): three hosts
//! and a working set twice one host's budget, placed by memory (where it
//! fits, the most free memory first) against placed by count (the
//! rendezvous hash over every host, as Dapr's hash ring or Orleans'
//! random placement would, blind to memory). Alternated, fresh hosts and
//! a fresh PostgreSQL schema each run.

use super::*;
use quark::cluster::ClusterConfig;
use quark::cluster::placement::{Candidate, HashPlacement, MemoryPlacement, Placement};
use quark::runtime::memory::MemoryConfig;

const MIB: u64 = 1 << 20;
/// Each host's memory budget.
const BUDGET: u64 = 256 * MIB;
/// The hosts.
const HOSTS: [&str; 3] = ["a", "b", "c"];
/// The working set: (type, declared limit, MiB each activation grows to,
/// activations). 4 × 64 + 64 × 4 MiB = 512 MiB = twice one budget: by
/// count, a host that draws three of the four big ones is asked for more
/// than it has.
const LOAD: [(&str, u64, u64, usize); 2] = [("big", 64 * MIB, 48, 4), ("small", 4 * MIB, 2, 64)];
/// Runs of each placement, alternated.
const ROUNDS: usize = 5;
/// Calls each actor gets after it has grown.
const CALLS: usize = 20;

/// Placement by count: the rendezvous hash over every live host, whether
/// the activation fits there or not.
#[derive(Debug)]
struct CountPlacement;

impl Placement for CountPlacement {
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[Candidate<'a>]) -> &'a str {
        HashPlacement.place(actor, this, hosts)
    }

    fn by_fit(&self) -> bool {
        false
    }
}

/// Three active hosts in this process, each with a strict budget (every
/// activation reserves its type's declared limit), on a new schema, all
/// serving `big` and `small` (the misbehave actor under two limits).
async fn budgeted_nodes(dir: &std::path::Path, pg_url: &str, run: &str, placement: Arc<dyn Placement>) -> Option<Vec<Node>> {
    let schema = format!("quark_bench_memory_{run}_{}", std::process::id());
    let mut nodes: Vec<Node> = Vec::new();
    for name in HOSTS {
        let store = match PostgresStore::connect(pg_url, Some(&schema)).await {
            Ok(store) => store,
            Err(e) => {
                println!("SKIP oversubscription on PostgreSQL: {e}");
                return None;
            }
        };
        let mut config = NodeConfig::new(dir.join(format!("memory-{run}-{name}")));
        // Several hosts share this process's RSS: only their own figures count.
        config.host.memory = MemoryConfig { budget: BUDGET, overcommit: None, shed_on_rss: false };
        config.cluster = Some(ClusterConfig { host_id: Some(name.to_string()), placement: placement.clone(), ..ClusterConfig::new("127.0.0.1:1") });
        let node = Node::start(config, Arc::new(store)).await.unwrap();
        if nodes.is_empty() {
            for (actor_type, limit, _, _) in LOAD {
                let manifest = Manifest::parse(Some(&format!("{}MiB", limit / MIB)), None).unwrap();
                node.host().deploy(actor_type, component("misbehave"), manifest).await.unwrap();
            }
        }
        nodes.push(node);
    }
    cluster::activate_serving(&nodes, &LOAD.map(|(t, ..)| t)).await;
    Some(nodes)
}

/// One run's figures.
#[derive(Default)]
struct Outcome {
    ok: usize,
    failed: usize,
    peak_reserved: [u64; 3],
    peak_used: [u64; 3],
    activations: [usize; 3],
    shed: u64,
}

async fn run(nodes: &[Node], run: &str) -> Outcome {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (hosts, stop) = (nodes.iter().map(|n| n.host().clone()).collect::<Vec<_>>(), stop.clone());
        tokio::spawn(async move {
            let (mut reserved, mut used) = ([0u64; 3], [0u64; 3]);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for (i, host) in hosts.iter().enumerate() {
                    let memory = host.memory();
                    reserved[i] = reserved[i].max(memory.reserved);
                    used[i] = used[i].max(memory.used);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (reserved, used)
        })
    };
    let actors: Vec<(ActorId, u64)> = LOAD
        .iter()
        .flat_map(|&(actor_type, _, grow, n)| (0..n).map(move |i| (id(format!("{actor_type}/{run}-{i}")), grow)))
        .collect();
    // Every actor at once, each called through the hosts in turn: grows,
    // then takes its calls.
    let calls = actors.iter().enumerate().map(|(i, (actor, grow))| {
        let host = nodes[i % nodes.len()].host().clone();
        let actor = actor.clone();
        let grow = format!(r#"{{"mib":{grow}}}"#).into_bytes();
        async move {
            let (mut ok, mut failed) = (0, 0);
            let mut count = |result: Result<Vec<u8>, quark::ActorError>| match result {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            };
            count(host.ask(actor.clone(), "alloc", grow).await);
            for c in 0..CALLS {
                let put = format!(r#"{{"key":"k","value":{c}}}"#).into_bytes();
                count(host.ask(actor.clone(), "put", put).await);
            }
            (ok, failed)
        }
    });
    let results = futures::future::join_all(calls).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (peak_reserved, peak_used) = sampler.await.unwrap();
    let mut outcome = Outcome { peak_reserved, peak_used, ..Outcome::default() };
    for (ok, failed) in results {
        outcome.ok += ok;
        outcome.failed += failed;
    }
    for (i, node) in nodes.iter().enumerate() {
        let memory = node.host().memory();
        outcome.activations[i] = node.host().actors().len();
        outcome.shed += memory.shed;
    }
    outcome
}

/// What placement by count asks of each host: the declared limits of the
/// actors the hash sends there (a host without a budget would be asked
/// to hold this much).
fn demand_by_count(run: &str) -> [u64; 3] {
    let candidates: Vec<Candidate> = HOSTS.iter().map(|&id| Candidate { id, free: 0 }).collect();
    let mut demand = [0; 3];
    for (actor_type, limit, _, n) in LOAD {
        for i in 0..n {
            let host = HashPlacement.place(&id(format!("{actor_type}/{run}-{i}")), "a", &candidates);
            demand[HOSTS.iter().position(|&h| h == host).unwrap()] += limit;
        }
    }
    demand
}

pub(crate) async fn oversubscription_bench(dir: &std::path::Path, pg_url: &str) {
    let mib = |bytes: &[u64; 3]| bytes.iter().map(|b| format!("{}", b / MIB)).collect::<Vec<_>>().join("/");
    let total: usize = LOAD.iter().map(|l| l.3 * (1 + CALLS)).sum();
    // Per placement: runs with a failed call, failed calls, the largest
    // peak reserved and the largest ask of any host (bytes).
    let mut summary: HashMap<&str, (usize, usize, u64, u64)> = HashMap::new();
    for round in 0..2 * ROUNDS {
        let by = if round % 2 == 0 { "memory" } else { "count" };
        let placement: Arc<dyn Placement> = if by == "memory" { Arc::new(MemoryPlacement) } else { Arc::new(CountPlacement) };
        let run_name = format!("{by}{round}");
        let Some(nodes) = budgeted_nodes(dir, pg_url, &run_name, placement).await else { return };
        let outcome = run(&nodes, &run_name).await;
        let asked = if by == "count" { demand_by_count(&run_name) } else { outcome.peak_reserved };
        println!(
            "oversubscription, 3 hosts x {} MiB, working set 512 MiB, placed by {by}: {} of {total} calls failed; peak reserved {} MiB, \
             peak used {} MiB per host; activations {:?}; shed {}{}",
            BUDGET / MIB,
            outcome.failed,
            mib(&outcome.peak_reserved),
            mib(&outcome.peak_used),
            outcome.activations,
            outcome.shed,
            if by == "count" { format!("; asked of each host {} MiB", mib(&asked)) } else { String::new() },
        );
        debug_assert_eq!(outcome.ok + outcome.failed, total);
        let entry = summary.entry(by).or_default();
        entry.0 += usize::from(outcome.failed > 0);
        entry.1 += outcome.failed;
        entry.2 = entry.2.max(*outcome.peak_reserved.iter().max().unwrap());
        entry.3 = entry.3.max(*asked.iter().max().unwrap());
        cluster::leave_all(&nodes).await;
    }
    for by in ["memory", "count"] {
        let (runs, failed, reserved, asked) = summary[by];
        println!(
            "oversubscription, placed by {by}: {runs} of {ROUNDS} runs had failed calls ({failed} calls); the fullest host reserved {} MiB \
             of its {} MiB budget, and was asked for {} MiB",
            reserved / MIB,
            BUDGET / MIB,
            asked / MIB
        );
    }
}
