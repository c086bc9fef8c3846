//! Calling actors: state, actor-to-actor calls, ordering, re-entrancy,
//! deadlocking cycles, idle deactivation.

use std::time::Duration;

use quark::{ErrorKind, NodeConfig};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn counter_state_survives_deactivation_and_restart() {
    let dir = crate::support::tempdir().unwrap();
    {
        let host = host_with(dir.path(), &[("counter", "counter")]).await;
        assert_eq!(ask(&host, "counter/alice", "increment", json!({"by": 2})).await.unwrap(), json!(2));
        assert_eq!(ask(&host, "counter/alice", "increment", json!({"by": 3})).await.unwrap(), json!(5));
        assert_eq!(ask(&host, "counter/bob", "get", json!(null)).await.unwrap(), json!(0));
        host.host().deactivate_all();
        assert_eq!(ask(&host, "counter/alice", "get", json!(null)).await.unwrap(), json!(5));
    }
    // A new host on the same data directory sees the committed state.
    let host = sqlite_host(dir.path()).await;
    assert_eq!(ask(&host, "counter/alice", "get", json!(null)).await.unwrap(), json!(5));
}

#[tokio::test]
async fn greeter_calls_counter() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter"), ("greeter", "greeter")]).await;
    let first = ask(&host, "greeter/ada", "greet", json!({"name": "Ada"})).await.unwrap();
    assert_eq!(first, json!({"message": "Hello, Ada!", "visits": 1}));
    let second = ask(&host, "greeter/ada", "greet", json!({"name": "Lovelace"})).await.unwrap();
    assert_eq!(second["visits"], json!(2));
    assert_eq!(ask(&host, "counter/ada", "get", json!(null)).await.unwrap(), json!(2));
    assert_eq!(ask(&host, "greeter/ada", "last", json!(null)).await.unwrap(), json!("Lovelace"));
}

#[tokio::test]
async fn turns_of_one_actor_run_in_arrival_order() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter")]).await;
    let calls = (0..200).map(|_| ask(&host, "counter/ordered", "increment", json!({"by": 1})));
    let replies = futures::future::join_all(calls).await;
    let values: Vec<i64> = replies.into_iter().map(|r| r.unwrap().as_i64().unwrap()).collect();
    assert_eq!(values, (1..=200).collect::<Vec<_>>(), "each turn saw the previous one's committed write, in order");
}

#[tokio::test]
async fn reentrant_call_chain_completes_and_commits() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("pingpong", "pingpong")]).await;
    // a -> b -> a -> b: a is re-entered while its first turn waits on b.
    let chain = ask(&host, "pingpong/a", "ping", json!({"peer": "pingpong/b", "depth": 3})).await.unwrap();
    assert_eq!(chain, json!(["pingpong/a", "pingpong/b", "pingpong/a", "pingpong/b"]));
    assert_eq!(ask(&host, "pingpong/a", "pings", json!(null)).await.unwrap(), json!(2));
    assert_eq!(ask(&host, "pingpong/b", "pings", json!(null)).await.unwrap(), json!(2));
    // The nested turn's write was committed with the outer turn: it survives deactivation.
    host.host().deactivate_all();
    assert_eq!(ask(&host, "pingpong/a", "pings", json!(null)).await.unwrap(), json!(2));
}

#[tokio::test]
async fn cycle_across_call_chains_times_out_instead_of_hanging() {
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.call_timeout = Duration::from_secs(2);
    let host = host_with_config(config).await;
    host.host().deploy("pingpong", component("pingpong"), manifest()).await.unwrap();
    // x waits 300 ms then calls y; y does the same towards x; two chains, one cycle.
    let (a, b) = tokio::join!(
        ask(&host, "pingpong/x", "cross", json!({"peer": "pingpong/y", "spin_ms": 300})),
        ask(&host, "pingpong/y", "cross", json!({"peer": "pingpong/x", "spin_ms": 300})),
    );
    let errors: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
    assert!(!errors.is_empty(), "a cross-chain cycle cannot complete");
    for e in &errors {
        assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.message.contains("call chain") || e.message.contains("deadline"), "{e}");
    }
    // The host keeps serving both actors.
    assert_eq!(ask(&host, "pingpong/x", "pings", json!(null)).await.unwrap(), json!(0));
    assert_eq!(ask(&host, "pingpong/y", "pings", json!(null)).await.unwrap(), json!(0));
}

#[tokio::test]
async fn idle_actors_are_deactivated_and_come_back() {
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.idle_timeout = Duration::from_millis(200);
    let host = host_with_config(config).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    ask(&host, "counter/sleepy", "increment", json!({"by": 7})).await.unwrap();
    assert_eq!(host.host().actors().len(), 1);
    assert!(host.host().actors()[0].memory_bytes > 0, "the activation reports its linear memory");
    let mut waited = Duration::ZERO;
    while !host.host().actors().is_empty() {
        assert!(waited < Duration::from_secs(10), "idle actor never deactivated");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(ask(&host, "counter/sleepy", "get", json!(null)).await.unwrap(), json!(7));
}

#[tokio::test]
async fn past_the_activation_limit_the_oldest_idle_actors_are_shed() {
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.max_activations = 5;
    let host = host_with_config(config).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    for i in 0..12 {
        ask(&host, &format!("counter/n{i}"), "increment", json!({"by": i})).await.unwrap();
        assert!(host.host().actors().len() <= 5, "at most the limit is held: {:?}", host.host().actors());
    }
    // The newest actor is still active; shed ones come back with their state.
    assert!(host.host().actors().iter().any(|a| a.id == "counter/n11"));
    for i in 0..12 {
        assert_eq!(ask(&host, &format!("counter/n{i}"), "get", json!(null)).await.unwrap(), json!(i));
    }
}

#[tokio::test]
async fn re_entering_an_actor_twice_on_one_chain_keeps_every_write() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("pingpong", "pingpong")]).await;
    // a -> b -> a -> b -> a -> b: a and b are each re-entered twice, nested.
    let chain = ask(&host, "pingpong/a", "ping", json!({"peer": "pingpong/b", "depth": 5})).await.unwrap();
    assert_eq!(chain.as_array().unwrap().len(), 6);
    host.host().deactivate_all();
    assert_eq!(ask(&host, "pingpong/a", "pings", json!(null)).await.unwrap(), json!(3), "each nested turn saw the one it is nested in");
    assert_eq!(ask(&host, "pingpong/b", "pings", json!(null)).await.unwrap(), json!(3));
}

/// Dropping a host with live actors frees them and the host itself: the
/// activations do not keep it alive, and nothing of it keeps running.
#[tokio::test]
async fn a_dropped_host_frees_its_actors_and_its_store() {
    use std::sync::Arc;
    use quark::storage::Store;
    use quark::storage::sqlite::SqliteStore;
    let dir = crate::support::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("quark.db")).await.unwrap());
    let host = quark::Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    for i in 0..10 {
        ask(&host, &format!("counter/k{i}"), "increment", json!({"by": 1})).await.unwrap();
    }
    assert_eq!(host.host().actors().len(), 10);
    drop(host);
    eventually("the host to let go of its store", async || Arc::strong_count(&store), |n| *n == 1).await;
}

#[test]
fn actor_ids_parse_type_and_key() {
    let id = quark::ActorId::parse("counter/alice/x").unwrap();
    assert_eq!(id.actor_type(), "counter");
    assert_eq!(id.key(), "alice/x");
    assert_eq!(id.to_string(), "counter/alice/x");
    for bad in ["counter", "Counter/a", "counter/"] {
        assert!(quark::ActorId::parse(bad).is_err(), "{bad}");
    }
}
