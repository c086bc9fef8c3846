//! One set of assertions, run against every storage backend: the store
//! kit (`quark::storage::conformance`) and, here, checks of a whole node
//! on each store.

use std::sync::Arc;

use quark::storage::sqlite::SqliteStore;
use quark::storage::{ProjectionDef, Store};
use quark::{Node, NodeConfig};
use serde_json::json;

use crate::support::*;

async fn host_turns_commit_and_reload(store: Arc<dyn Store>) {
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("counter/c{}", i % 10)).collect();
    let calls = names.iter().map(|name| ask(&host, name, "increment", json!({"by": 1})));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    drop(host);
    // A second host on the same store: deployed component and state are there.
    let host = Node::start(NodeConfig::new(dir.path()), store).await.unwrap();
    for i in 0..10 {
        assert_eq!(ask(&host, &format!("counter/c{i}"), "get", json!(null)).await.unwrap(), json!(5));
    }
}

/// Event sourcing end to end on the backend: appends, rebuild from a
/// snapshot after a restart, replay, and a projection that catches up.
async fn host_event_sourcing(store: Arc<dyn Store>) {
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("bank", component("bank"), manifest().with_journal(Some("3"), Some("archive")).unwrap()).await.unwrap();
    host.host().deploy("accounts-summary", component("accounts-summary"), manifest()).await.unwrap();
    for (account, amount) in [("a", 10), ("a", 20), ("b", 5), ("a", 30), ("a", 40)] {
        ask(&host, &format!("bank/{account}"), "deposit", json!({"amount": amount})).await.unwrap();
    }
    let def = ProjectionDef { name: "sum".into(), source_type: "bank".into(), target: "accounts-summary/all".into(), method: "project".into() };
    host.projections().create(def).await.unwrap();
    eventually("the projection's total", async || ask(&host, "accounts-summary/all", "total", json!(null)).await.unwrap(), |t| *t == json!(105)).await;
    drop(host);
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    assert_eq!(ask(&host, "bank/a", "balance", json!(null)).await.unwrap(), json!({"balance": 100}));
    // Automatic snapshots are stored in the background once their turn is durable.
    let snapshot = eventually("a snapshot", async || store.latest_snapshot(&id("bank/a"), u64::MAX).await.unwrap(), Option::is_some).await;
    assert_eq!(snapshot.map(|s| s.version), Some(3));
    assert_eq!(host.host().journal(&id("bank/a"), 1, None, 100).await.unwrap().events.len(), 4, "archived events stay in the audit trail");
    let replayed = host.host().replay(&id("bank/a"), quark::runtime::journal::ReplayTarget::Version(2), None).await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&replayed.state).unwrap(), json!({"balance": 30}));
}

/// Claims, leases, completion in the turn's commit, failures, cancel,
/// retry, purge. Backends without a job store say so and pass.
/// Jobs end to end on the backend: scheduled in a turn (once per key),
/// retried after a failed attempt, completed in the turn's commit, and
/// cancelled from a turn.
async fn host_jobs(store: Arc<dyn Store>) {
    use quark::storage::jobs::JobStatus;
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("worker", component("worker"), manifest()).await.unwrap();
    let schedule = json!({"target": "worker/s", "method": "work", "key": "k", "payload": {"fail_until": 2}, "max_attempts": 3});
    let first = ask(&host, "worker/x", "schedule", schedule.clone()).await.unwrap();
    assert_eq!(ask(&host, "worker/x", "schedule", schedule).await.unwrap(), first, "one job per key");
    let id = first.as_str().unwrap().to_string();
    let job = eventually("the job's success", async || host.jobs().get(&id).await.unwrap(), |j| j.status == JobStatus::Succeeded).await;
    assert_eq!((job.status, job.attempts, job.errors.len()), (JobStatus::Succeeded, 2, 1), "{job:?}");
    assert_eq!(ask(&host, "worker/s", "runs", json!(null)).await.unwrap(), json!({"runs": 1, "attempts": [2]}));

    let later = json!({"target": "worker/c", "method": "work", "key": "later", "delay_ms": 3_600_000});
    let later = ask(&host, "worker/x", "schedule", later).await.unwrap();
    let later = later.as_str().unwrap();
    assert_eq!(host.jobs().get(later).await.unwrap().status, JobStatus::Scheduled);
    assert_eq!(ask(&host, "worker/x", "cancel", json!({"id": later})).await.unwrap(), json!(true));
    assert_eq!(host.jobs().get(later).await.unwrap().status, JobStatus::Cancelled);
    assert_eq!(host.jobs().list(None, Some("worker/s"), 10).await.unwrap().len(), 1);

    // A job whose turn has no effect (a read) is completed by the runner's
    // next write, not by a turn commit; it still ends exactly as succeeded.
    let read = quark::jobs::JobSpec {
        target: "worker/s".into(),
        method: "runs".into(),
        payload: json!(null),
        run_at: None,
        delay_ms: None,
        cron: None,
        time_zone: None,
        max_attempts: None,
        backoff_ms: None,
        max_backoff_ms: None,
        timeout_ms: None,
        priority: None,
        queue: None,
        idempotency_key: None,
        catch_up: None,
    };
    let mut starts = host.jobs().starts();
    let read = host.jobs().add(vec![read.into_request().unwrap()]).await.unwrap().remove(0);
    let started = loop {
        let started = starts.recv().await.unwrap();
        if started.id == read.id {
            break started;
        }
    };
    assert_eq!(started.attempt, 1);
    eventually("the job's success", async || host.jobs().get(&read.id).await.unwrap().status, |s| *s == JobStatus::Succeeded).await;
    assert!(host.metrics_text().contains("quark_job_start_delay_seconds_count"), "the scheduling lag is exported");
}

/// A batch completes each job only under its own lease: a stale lease of
/// one job does not pass because another job of the batch holds the lease
/// that job has now (ids and leases are matched in pairs).
/// The inbox: an entry commits with its turn, a second one for the same
/// message fails the commit (nothing of it lands), and entries expire.
/// `Idempotency-Key` semantics through the host: once per key, the first
/// reply for a repeat (also one sent while the first is committing).
async fn host_idempotent_asks(store: Arc<dyn Store>) {
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let inc = |key: &'static str| {
        let host = host.clone();
        async move { host.host().ask_idempotent(id("counter/k"), "increment", br#"{"by": 5}"#.to_vec(), key).await.unwrap() }
    };
    let (a, b) = tokio::join!(inc("pay-1"), inc("pay-1"));
    assert_eq!(a, b, "both callers get the first reply");
    assert_eq!(inc("pay-1").await, a);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&a).unwrap(), json!(5));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&inc("pay-2").await).unwrap(), json!(10), "another key runs");
    assert_eq!(ask(&host, "counter/k", "get", json!(null)).await.unwrap(), json!(10));
    let e = host.host().ask_idempotent(id("counter/k"), "get", b"null".to_vec(), "").await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::BadRequest);
}

/// The outbox end to end on the backend: a message commits with its
/// sender's turn and runs once on the receiver, after it; messages of one
/// pair arrive in order; a redelivered message id does not run again.
async fn host_outbox_delivery(store: Arc<dyn Store>) {
    if store.outbox_store().is_none() {
        eprintln!("note: the {} store has no outbox yet", store.backend_name());
        return;
    }
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("courier", component("courier"), manifest()).await.unwrap();
    let received = async |actor: &str| ask(&host, actor, "received", json!(null)).await.unwrap().as_array().cloned().unwrap_or_default();
    let wait_for = async |actor: &str, n: usize| eventually(&format!("{n} messages to {actor}"), async || received(actor).await, |got| got.len() >= n).await;
    let ids = ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"hello": 1}, "id": "dup-1"})).await.unwrap();
    assert_eq!(ids, json!(["dup-1"]));
    let got = wait_for("courier/b", 1).await;
    assert_eq!((&got[0]["id"], &got[0]["sender"], &got[0]["payload"]), (&json!("dup-1"), &json!("courier/a"), &json!({"hello": 1})));

    // In order per pair: 30 in one turn, then 10 more.
    ask(&host, "courier/a", "send", json!({"to": "courier/c", "count": 30})).await.unwrap();
    ask(&host, "courier/a", "send", json!({"to": "courier/c", "count": 10})).await.unwrap();
    let got = wait_for("courier/c", 40).await;
    let order: Vec<i64> = got.iter().map(|m| m["payload"]["n"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (0..30).chain(0..10).collect();
    assert_eq!(order, expected);

    // The same id again (a redelivery, as after a crash before the ack):
    // acknowledged from the receiver's inbox, not run again.
    let outbox = async || store.outbox_store().unwrap().messages(None, 10).await.unwrap();
    eventually("the outbox emptied", outbox, Vec::is_empty).await;
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"hello": 2}, "id": "dup-1"})).await.unwrap();
    eventually("the redelivery acknowledged", outbox, Vec::is_empty).await;
    assert_eq!(received("courier/b").await.len(), 1, "the receiver ran once");
}

/// Message ids are unique per (receiver, sender): two senders that pick
/// the same id both get their message through, and an HTTP caller's
/// idempotency key never swallows an actor's message with that id.
async fn host_message_ids_are_per_sender(store: Arc<dyn Store>) {
    if store.outbox_store().is_none() {
        return;
    }
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), store.clone()).await.unwrap();
    host.host().deploy("courier", component("courier"), manifest()).await.unwrap();
    // An HTTP call with `Idempotency-Key: pay-1` on the receiver first.
    host.host().ask_idempotent(id("courier/bank"), "received", b"null".to_vec(), "pay-1").await.unwrap();
    for sender in ["courier/alice", "courier/bob"] {
        let sent = ask(&host, sender, "send", json!({"to": "courier/bank", "payload": {"from": sender}, "id": "pay-1"})).await.unwrap();
        assert_eq!(sent, json!(["pay-1"]));
    }
    let received = eventually(
        "both messages",
        async || ask(&host, "courier/bank", "received", json!(null)).await.unwrap().as_array().cloned().unwrap_or_default(),
        |got| got.len() >= 2,
    )
    .await;
    let mut senders: Vec<&str> = received.iter().map(|m| m["sender"].as_str().unwrap()).collect();
    senders.sort();
    assert_eq!(senders, ["courier/alice", "courier/bob"], "{received:?}");
    let outbox = async || store.outbox_store().unwrap().messages(None, 10).await.unwrap();
    eventually("the outbox emptied", outbox, Vec::is_empty).await;
    // A redelivery of alice's message is still recognised as hers.
    ask(&host, "courier/alice", "send", json!({"to": "courier/bank", "payload": {"again": true}, "id": "pay-1"})).await.unwrap();
    eventually("the redelivery acknowledged", outbox, Vec::is_empty).await;
    assert_eq!(ask(&host, "courier/bank", "received", json!(null)).await.unwrap().as_array().unwrap().len(), 2, "not run again");
}

/// Outbox lanes at the store: messages commit with their turn into a lane
/// per sender and destination, claims take whole lanes in order, a failure
/// holds its lane until its retry, a dead message lets it move on, and an
/// expired lease hands the lane to the next claim as taken over.
/// A test per backend and check: `case => check`, where `check` takes a
/// fresh store.
macro_rules! conformance {
    ($($case:ident => $check:path),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = crate::support::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("quark.db")).await.unwrap();
                    $check(super::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = crate::support::postgres_store(concat!("postgres::", stringify!($case))).await else { return };
                    $check(super::Arc::new(store)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = crate::support::redis_store(concat!("redis::", stringify!($case))).await else { return };
                    $check(super::Arc::new(store)).await;
                }
            )*
        }
    };
}

// The store-level checks are quark-store's kit (`quark::storage::conformance`),
// for any backend; the host-level ones run a node on the store.
conformance!(
    commit_and_load => quark::storage::conformance::commit_and_load,
    component_versions => quark::storage::conformance::component_versions,
    host_turns_commit_and_reload => crate::storage_conformance::host_turns_commit_and_reload,
    journal_append_read_and_conflict => quark::storage::conformance::journal_append_read_and_conflict,
    snapshots_and_retention => quark::storage::conformance::snapshots_and_retention,
    projections_and_checkpoints => quark::storage::conformance::projections_and_checkpoints,
    host_event_sourcing => crate::storage_conformance::host_event_sourcing,
    jobs_claim_lease_and_complete => quark::storage::conformance::jobs_claim_lease_and_complete,
    host_jobs => crate::storage_conformance::host_jobs,
    job_completions_match_each_lease => quark::storage::conformance::job_completions_match_each_lease,
    inbox_dedup_and_expiry => quark::storage::conformance::inbox_dedup_and_expiry,
    host_idempotent_asks => crate::storage_conformance::host_idempotent_asks,
    host_outbox_delivery => crate::storage_conformance::host_outbox_delivery,
    host_message_ids_are_per_sender => crate::storage_conformance::host_message_ids_are_per_sender,
    outbox_lanes_claim_fail_retry => quark::storage::conformance::outbox_lanes_claim_fail_retry,
    outbox_new_lanes_skip_the_claim => quark::storage::conformance::outbox_new_lanes_skip_the_claim,
    cluster_membership_and_directory => quark::storage::conformance::cluster_membership_and_directory,
    single_host_stores_refuse_fences => quark::storage::conformance::single_host_stores_refuse_fences,
);
