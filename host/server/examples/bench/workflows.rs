//! Durable workflows: a 3-step workflow (each step an activity that is a
//! durable actor turn) one after another and from 64 clients, against one
//! durable turn on the same store; and the resume of a 10,000-step history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quark::{Manifest, Node, NodeConfig};
use quark::storage::Store;

use super::{component, id, percentile, scale};

fn start_body(mode: &str, key: &str, n: u32, wait: bool) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "mode": mode, "key": key, "n": n, "wait": wait })).unwrap()
}

async fn run_one(node: &Node, id: &str, n: u32) -> Duration {
    let started = Instant::now();
    let reply = node.host().start_workflow("wf-probe", id, start_body("steps", id, n, false)).await.unwrap();
    let status: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(status["status"], "completed", "{status}");
    started.elapsed()
}

pub(crate) async fn workflows_bench(store: Arc<dyn Store>, dir: &std::path::Path, backend: &str) {
    let node = Node::start(NodeConfig::new(dir), store).await.unwrap();
    let manifest = Manifest::parse(Some("16MiB"), None).unwrap();
    for (name, file) in [("counter", "counter"), ("wf-probe", "wf-probe")] {
        node.host().deploy(name, component(file), manifest.clone()).await.unwrap();
    }
    // One durable turn, sequential: the unit a step is measured against.
    let runs = scale(300);
    let mut turns = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        node.host().ask(id(format!("counter/base-{i}")), "increment", br#"{"by":1}"#.to_vec()).await.unwrap();
        turns.push(started.elapsed());
    }
    turns.sort();
    let mut seq = Vec::with_capacity(runs);
    for i in 0..runs {
        seq.push(run_one(&node, &format!("seq-{i}"), 3).await);
    }
    seq.sort();
    let (turn, p50, p99) = (percentile(&turns, 0.5), percentile(&seq, 0.5), percentile(&seq, 0.99));
    // A 3-step workflow is 3 activity turns and its own turn: 4 commits.
    let per_step = p50.saturating_sub(turn) / 3;
    println!(
        "workflows on {backend}: 3-step workflow, {runs} one after another: p50 {p50:?}, p99 {p99:?}; one durable turn p50 {turn:?}; \
         per-step cost {per_step:?} = {:.2}x one durable turn",
        per_step.as_secs_f64() / turn.as_secs_f64()
    );

    let total = scale(3_000);
    let clients = 64;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (node, next) = (node.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return lat;
                    }
                    lat.push(run_one(&node, &format!("par-{i}"), 3).await);
                }
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "workflows on {backend}: 3-step workflows, {clients} clients: {rate:.0} workflows/s ({:.0} steps/s), p50 {:?}, p99 {:?}",
        rate * 3.0,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // A 10,000-step history, then the instance unloaded: the time of the
    // turn that reloads it, replays every step and completes it.
    let steps = scale(10_000) as u32;
    let started = Instant::now();
    node.host().start_workflow("wf-probe", "long", start_body("steps", "long", steps, true)).await.unwrap();
    loop {
        let status: serde_json::Value = serde_json::from_slice(&node.host().workflow_status("long").await.unwrap()).unwrap();
        if status["steps"].as_u64() == Some(u64::from(steps) + 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let built = started.elapsed();
    // Unloaded, and the host idle again: the ~20,000 counter activations
    // of the runs above are torn down first (freeing their memories takes
    // both cores for a while), so the figure is the resume's alone.
    node.host().deactivate_all();
    while !node.host().actors().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let done: serde_json::Value = serde_json::from_slice(&node.host().signal_workflow("long", "go", b"1".to_vec()).await.unwrap()).unwrap();
    let resumed = started.elapsed();
    assert_eq!(done["status"], "completed", "{done}");
    println!("workflows on {backend}: a {steps}-step history (built in {built:?}) resumed from the store and completed in {resumed:?}");
}
