//! Stateless workers (Orleans' `[StatelessWorker]`): a type deployed with
//! `stateless_workers: N` runs up to N activations per id side by side, on
//! the host the call arrives at, with no directory entry; it keeps nothing,
//! so a turn that writes state, events, jobs or outbox messages is refused
//! with nothing committed, and so are idempotency keys, event-sourced
//! components and a new version that changes the kind of a type.

use std::collections::BTreeSet;

use serde_json::json;

use quark::Manifest;
use quark::runtime::{Control, InboxTurn};

use crate::cluster_calls::Hosts;
use crate::support::*;

/// The misbehave test actor as a stateless worker type `spread` with up to
/// `workers` activations per id, beside it as the stateful type `misbehave`.
async fn workers_host(dir: &std::path::Path, workers: &str) -> quark::Node {
    let node = sqlite_host(dir).await;
    node.host().deploy("misbehave", component("misbehave"), manifest_with("16MiB", "5s")).await.unwrap();
    let worker = manifest_with("16MiB", "5s").with_stateless_workers(Some(workers)).unwrap();
    node.host().deploy("spread", component("misbehave"), worker).await.unwrap();
    node
}

/// `count` concurrent `hold` calls of `ms` to `actor`: the instance
/// tokens they answered with.
async fn concurrent_holds(node: &quark::Node, actor: &str, count: usize, ms: u64) -> BTreeSet<u64> {
    let calls = (0..count).map(|_| ask(node, actor, "hold", json!({ "ms": ms })));
    futures::future::join_all(calls).await.into_iter().map(|r| r.expect("hold").as_u64().expect("a token")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_worker_runs_several_activations_per_id() {
    let dir = tempdir().unwrap();
    let node = workers_host(dir.path(), "3").await;
    // Six overlapping calls to one id: three workers take them (the last
    // three queue behind the shortest mailbox), never more.
    let tokens = concurrent_holds(&node, "spread/one", 6, 300).await;
    assert_eq!(tokens.len(), 3, "six overlapping calls ran on three activations: {tokens:?}");
    let listed = node.host().actors().into_iter().filter(|a| a.id == "spread/one").count();
    assert_eq!(listed, 3, "three activations of spread/one are listed");
    // The same component as a stateful type: one activation per id.
    let tokens = concurrent_holds(&node, "misbehave/one", 3, 100).await;
    assert_eq!(tokens.len(), 1, "a stateful actor has one activation: {tokens:?}");
    // Another id has its own workers; one call at a time reuses one.
    let first = concurrent_holds(&node, "spread/two", 1, 0).await;
    let second = concurrent_holds(&node, "spread/two", 1, 0).await;
    assert_eq!(first, second, "an idle worker is reused");
    assert!(first.is_disjoint(&tokens), "spread/two is not misbehave/one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_worker_commits_nothing_and_takes_no_idempotency_key() {
    let dir = tempdir().unwrap();
    let node = workers_host(dir.path(), "2").await;
    assert_eq!(ask(&node, "spread/w", "echo", json!({"a": 1})).await.unwrap(), json!({"a": 1}), "pure compute works");
    // Each durable effect is refused, naming what the turn wrote.
    for (method, body, what) in [
        ("put", json!({"key": "k", "value": 1}), "wrote state"),
        ("audit", json!({"note": "n", "fail": false}), "wrote state, journal events"),
    ] {
        let e = ask(&node, "spread/w", method, body).await.unwrap_err();
        assert_eq!(e.kind, quark::ErrorKind::Rejected, "{method}: {e}");
        assert!(e.message.contains("stateless worker") && e.message.contains(what), "{method}: {e}");
    }
    assert_eq!(ask(&node, "spread/w", "dump", json!(null)).await.unwrap(), json!({}), "nothing was committed");
    let stored = node.host().store().load_state(&id("spread/w")).await.unwrap();
    assert!(stored.is_empty(), "the store holds nothing for spread/w: {stored:?}");
    let events = node.host().store().read_events(&id("spread/w"), 0, 10).await.unwrap();
    assert!(events.is_empty(), "no events for spread/w: {events:?}");
    // A tell is not durable: a worker may fan out.
    ask(&node, "spread/w", "tell", json!({"target": "misbehave/sink", "method": "put", "payload": {"key": "from-worker", "value": 7}, "fail": false}))
        .await
        .unwrap();
    let dump = eventually("the told put", async || ask(&node, "misbehave/sink", "dump", json!(null)).await.unwrap(), |d| d["from-worker"] == 7).await;
    assert_eq!(dump, json!({"from-worker": 7}));
    // An idempotency key promises one turn per key per actor: refused.
    let inbox = Control::Inbox(InboxTurn { sender: String::new(), message_id: "key-1".into(), check: true, lane: None });
    let request = node.host().outside_request(id("spread/w"), "echo", b"1".to_vec(), Some(inbox));
    let e = node.host().ask_request(request).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::BadRequest, "{e}");
    assert!(e.message.contains("idempotency key"), "{e}");
    // The host still serves the worker afterwards.
    assert_eq!(ask(&node, "spread/w", "echo", json!(2)).await.unwrap(), json!(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_keeps_its_kind_and_event_sourced_types_cannot_be_workers() {
    let dir = tempdir().unwrap();
    let node = workers_host(dir.path(), "2").await;
    let stateful = manifest_with("32MiB", "5s");
    let e = node.host().deploy("spread", component("misbehave"), stateful.clone()).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::BadRequest, "{e}");
    assert!(e.message.contains("stateless worker type") && e.message.contains("new type name"), "{e}");
    let worker = stateful.clone().with_stateless_workers(Some("4")).unwrap();
    let e = node.host().deploy("misbehave", component("misbehave"), worker.clone()).await.unwrap_err();
    assert!(e.message.contains("stateful type"), "{e}");
    // Another worker count is a new version of the same kind.
    assert!(node.host().deploy("spread", component("misbehave"), worker.clone()).await.unwrap().created);
    let bank = std::fs::read(root().join("target/samples/bank.wasm")).expect("bank sample built (make guests)");
    let e = node.host().deploy("bank", bank, worker).await.unwrap_err();
    assert!(e.message.contains("event-sourced") && e.message.contains("stateless worker"), "{e}");
    assert!(node.host().actor_types().iter().all(|t| t != "bank"), "nothing deployed");
    assert!(Manifest::parse(None, None).unwrap().with_stateless_workers(Some("1000")).is_err(), "over the most workers");
}

/// In a cluster a worker runs on the host the call arrives at: calls
/// through each host are served by that host's own activations (a
/// stateful actor is active on its one owner only), and `quark versions`
/// shows the worker count.
async fn workers_run_where_called(store: &str) {
    let cluster = tokio::task::block_in_place(|| Hosts::start(store, 2, &[]));
    let path = root().join("target/test-actors/misbehave.wasm");
    let out = cluster.host(0).quark(&["deploy", "spread", path.to_str().unwrap(), "--stateless-workers", "2"]);
    assert!(out.status.success(), "deploy: {}", crate::cli_process::stderr(&out));
    let out = cluster.host(1).quark(&["versions", "spread"]);
    let versions = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        versions.contains("WORKERS") && versions.lines().last().unwrap_or("").trim_end().ends_with('2'),
        "{versions}{}",
        crate::cli_process::stderr(&out)
    );
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for url in &cluster.urls {
        let reply = http.post(format!("{url}/v1/actors/spread/x/hold")).body(r#"{"ms": 0}"#).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        tokens.push(reply.text().await.unwrap());
    }
    assert_ne!(tokens[0], tokens[1], "each host ran its own activation");
    for i in 0..2 {
        let listed = String::from_utf8_lossy(&cluster.host(i).quark(&["actors"]).stdout).into_owned();
        assert!(listed.contains("spread/x "), "spread/x is active on h{i}: {listed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_workers_run_where_called_on_postgres() {
    let Some(store) = shared_store_url("postgres", "stateless_workers_run_where_called_on_postgres").await else { return };
    workers_run_where_called(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_workers_run_where_called_on_redis() {
    let Some(store) = shared_store_url("redis", "stateless_workers_run_where_called_on_redis").await else { return };
    workers_run_where_called(&store).await;
}
