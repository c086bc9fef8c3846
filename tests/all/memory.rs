//! The memory budget on one host (issue 17): every instance reserves its
//! type's declared limit; one that does not fit sheds idle actors, oldest
//! first, or is refused with `limit-exceeded`; past the high watermark
//! idle actors are shed down to the low one, busy ones kept.

use std::time::{Duration, Instant};

use quark::runtime::memory::MemoryConfig;
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::json;

use crate::support::*;

const MIB: u64 = 1 << 20;

/// A host with a memory budget of `budget_mib` and the misbehave actor
/// deployed with a 16 MiB limit and `turn_timeout`.
async fn budget_host(dir: &std::path::Path, budget_mib: u64, turn_timeout: &str) -> Node {
    let mut config = NodeConfig::new(dir);
    // Strict reservations; the RSS is this test process's, shared by every test's hosts.
    config.host.memory = MemoryConfig { budget: budget_mib * MIB, overcommit: None, shed_on_rss: false };
    let host = host_with_config(config).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("16MiB", turn_timeout)).await.unwrap();
    host
}

fn live(host: &Node) -> Vec<String> {
    host.host().actors().into_iter().map(|a| a.id).collect()
}

async fn put(host: &Node, actor: &str) {
    ask(host, actor, "put", json!({"key": "k", "value": 1})).await.unwrap();
    // Activations are ordered by their last message, on a coarse clock.
    tokio::time::sleep(Duration::from_millis(40)).await;
}

#[tokio::test]
async fn a_new_activation_sheds_the_oldest_idle_one_to_fit_and_is_refused_when_none_is_idle() {
    let dir = tempdir().unwrap();
    // 40 MiB: two 16 MiB activations fit (32 MiB, not past the 80% mark), a third does not.
    let host = budget_host(dir.path(), 40, "2s").await;
    put(&host, "misbehave/a").await;
    put(&host, "misbehave/b").await;
    assert_eq!(host.host().memory().reserved, 32 * MIB);
    put(&host, "misbehave/c").await;
    assert_eq!(live(&host), ["misbehave/b", "misbehave/c"], "a, the oldest idle, was shed to make room for c");
    let memory = host.host().memory();
    assert_eq!((memory.reserved, memory.budget), (32 * MIB, 40 * MIB));
    assert_eq!(memory.types.len(), 1);
    assert_eq!((memory.types[0].activations, memory.types[0].reserved), (2, 32 * MIB));
    assert!(memory.shed >= 1, "{memory:?}");

    // Both live actors busy (each spins until its 2 s turn limit): nothing idle to shed.
    let spins: Vec<_> = ["misbehave/b", "misbehave/c"]
        .into_iter()
        .map(|actor| {
            let host = host.clone();
            tokio::spawn(async move { ask(&host, actor, "spin", json!(null)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = ask(&host, "misbehave/d", "dump", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
    assert!(e.message.contains("misbehave/d") && e.message.contains("memory budget of 40"), "the error names the actor and the budget: {e}");
    assert_eq!(host.host().memory().refused, 1);
    for spin in spins {
        assert_eq!(spin.await.unwrap().unwrap_err().kind, ErrorKind::Timeout);
    }
    // Room again: the shed actor comes back with its committed state, and d serves.
    assert_eq!(ask(&host, "misbehave/a", "dump", json!(null)).await.unwrap(), json!({"k": 1}));
    assert_eq!(ask(&host, "misbehave/d", "dump", json!(null)).await.unwrap(), json!({}));
    assert!(host.host().memory().reserved <= 40 * MIB);
}

// Multi-threaded: the busy actor's turn holds a core for its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_high_watermark_idle_actors_are_shed_oldest_first_and_busy_ones_kept() {
    let dir = tempdir().unwrap();
    // 100 MiB: six 16 MiB activations fit (96 MiB), past the 80 MiB mark;
    // shedding stops at 75 MiB, so two of the idle ones go.
    let host = budget_host(dir.path(), 100, "5s").await;
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { ask(&host, "misbehave/busy", "hold", json!({"ms": 3000})).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=5 {
        put(&host, &format!("misbehave/m{i}")).await;
    }
    let started = Instant::now();
    while host.host().memory().reserved > 75 * MIB {
        assert!(started.elapsed() < Duration::from_secs(2), "no shedding under pressure: {:?}", host.host().memory());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live(&host), ["misbehave/busy", "misbehave/m3", "misbehave/m4", "misbehave/m5"], "the two oldest idle actors went; the busy one stayed");
    assert_eq!(host.host().memory().reserved, 64 * MIB);
    busy.await.unwrap().expect("the busy actor's turn ran to its end");
    assert_eq!(ask(&host, "misbehave/m1", "dump", json!(null)).await.unwrap(), json!({"k": 1}), "a shed actor keeps its state");
}
