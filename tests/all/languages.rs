//! Actors in Python and JavaScript next to Rust: the same `counter`, a call
//! chain through all three languages, hot swap across languages, and the
//! failure paths (exceptions, memory limits). The components are built by
//! `make test` with componentize-py and componentize-js; where those cannot
//! be installed the tests print SKIP (and fail under QUARK_REQUIRE_BACKENDS=1).

use quark::runtime::DeployOutcome;
use quark::{ActorError, ErrorKind, Node, Manifest};
use serde_json::{Value, json};

use crate::support::*;

/// Deploys one at a time across these tests: the first deploy of a
/// component compiles it (seconds for a Python one) into the shared cache,
/// and the others then load it instead of compiling it in parallel.
async fn deploy(host: &Node, actor_type: &str, bytes: Vec<u8>, manifest: Manifest) -> Result<DeployOutcome, ActorError> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    host.host().deploy(actor_type, bytes, manifest).await
}

/// `name`'s bytes for each of `names`, or `None` when one is not built.
fn guests(names: &[&str], test: &str) -> Option<Vec<Vec<u8>>> {
    names.iter().map(|name| guest_in_other_language(name, test)).collect()
}

#[tokio::test]
async fn python_and_javascript_counters_behave_like_the_rust_one() {
    let Some(components) = guests(&["counter-py", "counter-js"], "python_and_javascript_counters_behave_like_the_rust_one") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    deploy(&host, "counter", component("counter"), manifest()).await.unwrap();
    for (name, bytes) in ["counter-py", "counter-js"].into_iter().zip(components) {
        deploy(&host, name, bytes, manifest()).await.unwrap();
    }
    for actor_type in ["counter", "counter-py", "counter-js"] {
        let actor = format!("{actor_type}/a");
        assert_eq!(ask(&host, &actor, "get", json!(null)).await.unwrap(), json!(0), "{actor_type}");
        assert_eq!(ask(&host, &actor, "increment", json!({"by": 5})).await.unwrap(), json!(5), "{actor_type}");
        assert_eq!(ask(&host, &actor, "increment", json!({"by": -2})).await.unwrap(), json!(3), "{actor_type}");
        assert_eq!(ask(&host, &format!("{actor_type}/b"), "increment", json!({"by": 1})).await.unwrap(), json!(1), "{actor_type}");

        let e = ask(&host, &actor, "reset", json!(null)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{actor_type}: {e}");
        assert!(e.message.contains("unknown method `reset`"), "{actor_type}: {e}");
        assert!(e.message.contains("get") && e.message.contains("increment"), "{actor_type}: lists the methods: {e}");
    }
    // The state is durable: a new activation of each reads it back.
    host.host().deactivate_all();
    for actor_type in ["counter", "counter-py", "counter-js"] {
        assert_eq!(ask(&host, &format!("{actor_type}/a"), "get", json!(null)).await.unwrap(), json!(3), "{actor_type}");
    }
}

#[tokio::test]
async fn a_call_chain_through_rust_python_and_javascript_and_back() {
    let Some(components) = guests(&["polyglot-py", "polyglot-js"], "a_call_chain_through_rust_python_and_javascript_and_back") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    deploy(&host, "polyglot", component("polyglot"), manifest()).await.unwrap();
    for (name, bytes) in ["polyglot-py", "polyglot-js"].into_iter().zip(components) {
        deploy(&host, name, bytes, manifest()).await.unwrap();
    }

    // Rust calls Python, which calls JavaScript, which calls back into the
    // Rust actor that started the chain (a re-entrant call on the same chain).
    let path = json!({"path": ["polyglot-py/b", "polyglot-js/c", "polyglot/a"]});
    let visits = ask(&host, "polyglot/a", "hop", path.clone()).await.unwrap();
    assert_eq!(
        visits,
        json!([
            {"actor": "polyglot/a", "language": "rust", "hops": 1, "caller": null},
            {"actor": "polyglot-py/b", "language": "python", "hops": 1, "caller": "polyglot/a"},
            {"actor": "polyglot-js/c", "language": "javascript", "hops": 1, "caller": "polyglot-py/b"},
            {"actor": "polyglot/a", "language": "rust", "hops": 2, "caller": "polyglot-js/c"},
        ])
    );
    // Each language's state committed; a second run counts on from it.
    let visits = ask(&host, "polyglot/a", "hop", path).await.unwrap();
    let hops: Vec<_> = visits.as_array().unwrap().iter().map(|v| v["hops"].clone()).collect();
    assert_eq!(hops, vec![json!(3), json!(2), json!(2), json!(4)]);

    // The other way round: JavaScript → Python → Rust.
    let visits = ask(&host, "polyglot-js/x", "hop", json!({"path": ["polyglot-py/y", "polyglot/z"]})).await.unwrap();
    let languages: Vec<_> = visits.as_array().unwrap().iter().map(|v| v["language"].clone()).collect();
    assert_eq!(languages, vec![json!("javascript"), json!("python"), json!("rust")]);

    host.host().deactivate_all();
    for (actor, hops) in [("polyglot/a", 4), ("polyglot-py/b", 2), ("polyglot-js/c", 2), ("polyglot-js/x", 1), ("polyglot/z", 1)] {
        assert_eq!(ask(&host, actor, "hops", json!(null)).await.unwrap(), json!(hops), "{actor}");
    }
}

#[tokio::test]
async fn hot_swap_from_rust_to_python_to_javascript_keeps_the_state() {
    let Some(components) = guests(&["counter-py", "counter-js"], "hot_swap_from_rust_to_python_to_javascript_keeps_the_state") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    deploy(&host, "counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/s", "increment", json!({"by": 5})).await.unwrap(), json!(5));

    let mut expected = 5;
    for (version, bytes) in [2, 3].into_iter().zip(components) {
        let deployed = deploy(&host, "counter", bytes, manifest()).await.unwrap();
        assert_eq!(deployed.version.version, version);
        assert_eq!(ask(&host, "counter/s", "get", json!(null)).await.unwrap(), json!(expected), "version {version} reads the state");
        expected += 10;
        assert_eq!(ask(&host, "counter/s", "increment", json!({"by": 10})).await.unwrap(), json!(expected));
    }
    // And back to Rust (a rollback to Python first), still the same state.
    assert_eq!(host.host().rollback("counter").await.unwrap().version, 2);
    assert_eq!(ask(&host, "counter/s", "increment", json!({"by": 1})).await.unwrap(), json!(expected + 1));
    deploy(&host, "counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/s", "get", json!(null)).await.unwrap(), json!(expected + 1));
}

#[tokio::test]
async fn python_and_javascript_errors_answer_with_their_kind_and_commit_nothing() {
    let Some(components) = guests(&["polyglot-py", "polyglot-js"], "python_and_javascript_errors_answer_with_their_kind_and_commit_nothing") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for ((name, exception), bytes) in [("polyglot-py", "ValueError"), ("polyglot-js", "TypeError")].into_iter().zip(components) {
        deploy(&host, name, bytes, manifest()).await.unwrap();
        let actor = format!("{name}/e");

        // An exception: `internal`, with its type and message; the state
        // write before it is not committed.
        let e = ask(&host, &actor, "fail", json!({"message": "the ledger is closed"})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal, "{name}: {e}");
        assert!(e.message.contains(&format!("{exception}: the ledger is closed")), "{name}: {e}");
        assert_eq!(ask(&host, &actor, "hops", json!(null)).await.unwrap(), json!(0), "{name}: nothing committed");

        // The SDK's own errors keep their kind.
        let e = ask(&host, &actor, "refuse", json!({"message": "no overdrafts"})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{name}: {e}");
        assert!(e.message.contains("no overdrafts"), "{name}: {e}");

        // A host error reaches the guest as that kind of error.
        let reply = ask(&host, &actor, if name.ends_with("py") { "call_missing" } else { "callMissing" }, json!(null)).await.unwrap();
        assert!(reply.as_str().unwrap().starts_with("not-found: "), "{name}: {reply}");

        // A request that is not JSON is refused before the method runs.
        let e = host.host().ask(id(&actor), "hop", b"{not json".to_vec()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{name}: {e}");

        // The actor still serves.
        let visits = ask(&host, &actor, "hop", json!({"path": []})).await.unwrap();
        assert_eq!(visits[0]["hops"], json!(1), "{name}");
    }
}

#[tokio::test]
async fn memory_limits_hold_for_python_and_javascript() {
    let Some(components) = guests(&["polyglot-py", "polyglot-js"], "memory_limits_hold_for_python_and_javascript") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for (name, bytes) in ["polyglot-py", "polyglot-js"].into_iter().zip(components) {
        // Too small to start: the deploy says what the minimum is.
        let e = deploy(&host, name, bytes.clone(), manifest_with("4MiB", "10s")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{name}: {e}");
        let minimum: u64 = e
            .message
            .split("--memory-limit ")
            .nth(1)
            .and_then(|rest| rest.split("MiB").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: the error names no minimum: {e}"));
        assert!(minimum > 4, "{name}: {e}");

        // At the minimum plus room for turns it starts and serves.
        let limit = minimum + 16;
        deploy(&host, name, bytes, manifest_with(&format!("{limit}MiB"), "10s")).await.unwrap();
        let actor = format!("{name}/m");
        assert_eq!(ask(&host, &actor, "hop", json!({"path": []})).await.unwrap()[0]["hops"], json!(1));

        // A turn that allocates past the limit fails with limit-exceeded and
        // commits nothing; the actor serves again afterwards.
        let e = ask(&host, &actor, "grow", json!({"mb": limit + 8})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded, "{name}: {e}");
        assert_eq!(ask(&host, &actor, "hop", json!({"path": []})).await.unwrap()[0]["hops"], json!(2), "{name}");
        let info = host.host().actors().into_iter().find(|a| a.id == actor).expect("active");
        assert!(info.memory_bytes <= limit << 20, "{name}: {} bytes over a {limit} MiB limit", info.memory_bytes);
    }
}

/// The journal, jobs and outbox through the Python and JavaScript SDKs:
/// each commits with its turn, and a failed turn sends nothing.
#[tokio::test]
async fn python_and_javascript_actors_use_the_journal_jobs_and_outbox() {
    use quark::storage::jobs::JobStatus;
    let Some(components) = guests(&["polyglot-py", "polyglot-js"], "python_and_javascript_actors_use_the_journal_jobs_and_outbox") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for ((name, event_type_key), bytes) in [("polyglot-py", "event_type"), ("polyglot-js", "eventType")].into_iter().zip(components) {
        deploy(&host, name, bytes, manifest()).await.unwrap();
        let (a, b, worker) = (format!("{name}/a"), format!("{name}/b"), format!("{name}/j"));

        // Journal: appends commit with the turn; reads decode the data.
        let reply = ask(&host, &a, "record", json!({"type": "noted", "data": {"n": 1}})).await.unwrap();
        assert_eq!(reply, json!({"version": 1, "current": 1}), "{name}");
        assert_eq!(ask(&host, &a, "record", json!({"type": "noted", "data": {"n": 2}})).await.unwrap()["version"], json!(2), "{name}");
        let history = ask(&host, &a, "history", json!(null)).await.unwrap();
        let events: Vec<(&Value, &Value, &Value)> =
            history.as_array().unwrap().iter().map(|e| (&e["version"], &e[event_type_key], &e["data"])).collect();
        assert_eq!(events, [(&json!(1), &json!("noted"), &json!({"n": 1})), (&json!(2), &json!("noted"), &json!({"n": 2}))], "{name}");
        assert_eq!(host.host().journal(&id(&a), 1, None, 10).await.unwrap().version, 2, "{name}: in the host's journal");

        // Outbox: a failed turn's message never goes; the next one arrives
        // alone (the lane keeps order, so the failed one would come first),
        // once, with its id and sender.
        let e = ask(&host, &a, "doomed", json!({"to": b, "payload": "lost"})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal, "{name}: {e}");
        let message_id = ask(&host, &a, "send", json!({"to": b, "payload": {"hello": name}, "id": format!("{name}-m1")})).await.unwrap();
        assert_eq!(message_id, json!(format!("{name}-m1")), "{name}");
        let inbox = eventually("the message", async || ask(&host, &b, "inbox", json!(null)).await.unwrap(), |i| i != &json!([])).await;
        assert_eq!(inbox, json!([{"payload": {"hello": name}, "id": message_id, "sender": a}]), "{name}");

        // Jobs: one runs as a turn of its target, which sees its id and
        // attempt; another, far off, is cancelled by a turn.
        let job = ask(&host, &a, "schedule", json!({"target": worker, "payload": {"k": 1}, "key": format!("{name}-job")})).await.unwrap();
        let job = job.as_str().unwrap().to_string();
        let done = eventually("the job", async || host.jobs().get(&job).await.unwrap(), |j| j.status == JobStatus::Succeeded).await;
        assert_eq!((done.progress, done.progress_note.as_deref()), (Some(50), Some("halfway")), "{name}");
        assert_eq!(ask(&host, &worker, "seen", json!(null)).await.unwrap(), json!({"id": job, "attempt": 1, "payload": {"k": 1}}), "{name}");
        let later = ask(&host, &a, "schedule", json!({"target": worker, "after_ms": 3_600_000})).await.unwrap();
        let later = later.as_str().unwrap();
        assert_eq!(host.jobs().get(later).await.unwrap().status, JobStatus::Scheduled, "{name}");
        assert_eq!(ask(&host, &a, "cancel", json!({"id": later})).await.unwrap(), json!(true), "{name}");
        assert_eq!(host.jobs().get(later).await.unwrap().status, JobStatus::Cancelled, "{name}");
    }
}

/// Event-sourced actors in Python and JavaScript: commands emit events, the
/// state is their fold, a failed turn's event never counts, and the host
/// rebuilds the state from the journal, from a snapshot, and at a past version.
#[tokio::test]
async fn python_and_javascript_event_sourced_actors_fold_their_events() {
    use quark::runtime::journal::ReplayTarget;
    use quark::storage::Retention;
    let Some(components) = guests(&["account-py", "account-js"], "python_and_javascript_event_sourced_actors_fold_their_events") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for (name, bytes) in ["account-py", "account-js"].into_iter().zip(components) {
        deploy(&host, name, bytes, manifest()).await.unwrap();
        let actor = format!("{name}/alice");
        assert_eq!(ask(&host, &actor, "deposit", json!({"amount": 100})).await.unwrap(), json!({"balance": 100}), "{name}");
        assert_eq!(ask(&host, &actor, "withdraw", json!({"amount": 30})).await.unwrap(), json!({"balance": 70}), "{name}");
        let e = ask(&host, &actor, "withdraw", json!({"amount": 500})).await.unwrap_err();
        assert_eq!((e.kind, e.message.contains("insufficient funds")), (ErrorKind::Rejected, true), "{name}: {e}");
        let e = ask(&host, &actor, "doomed", json!({"amount": 1000})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal, "{name}: {e}");
        let expected = json!({"balance": 70, "operations": 2, "version": 2});
        assert_eq!(ask(&host, &actor, "balance_of", json!(null)).await.unwrap(), expected, "{name}: the failed turn's event is gone");
        let page = host.host().journal(&id(&actor), 1, None, 10).await.unwrap();
        let types: Vec<&str> = page.events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["deposited", "withdrawn"], "{name}");

        // Rebuilt from the journal by a new activation; then from a snapshot.
        host.host().deactivate_all();
        assert_eq!(ask(&host, &actor, "balance_of", json!(null)).await.unwrap(), expected, "{name}: replayed");
        assert_eq!(host.host().snapshot(&id(&actor)).await.unwrap(), 2, "{name}");
        let mut snapshot = host.host().store().latest_snapshot(&id(&actor), u64::MAX).await.unwrap().unwrap();
        let taken: Value = serde_json::from_slice(&snapshot.data).unwrap();
        assert_eq!(taken, json!({"balance": 70, "operations": 2}), "{name}: the snapshot is the state as JSON");
        // Mark the stored snapshot, to see that the next activation restores it.
        snapshot.data = serde_json::to_vec(&json!({"balance": 70, "operations": 40})).unwrap();
        host.host().store().save_snapshot(&id(&actor), &snapshot, Retention::Keep).await.unwrap();
        host.host().deactivate_all();
        let restored = ask(&host, &actor, "balance_of", json!(null)).await.unwrap();
        assert_eq!(restored, json!({"balance": 70, "operations": 40, "version": 2}), "{name}: restored from the snapshot");
        assert_eq!(ask(&host, &actor, "deposit", json!({"amount": 5})).await.unwrap(), json!({"balance": 75}), "{name}");

        // The state at version 1, computed in a sandbox.
        let past = host.host().replay(&id(&actor), ReplayTarget::Version(1), None).await.unwrap();
        let state: Value = serde_json::from_slice(&past.state).unwrap();
        assert_eq!((state["balance"].clone(), state["operations"].clone()), (json!(100), json!(1)), "{name}: {state}");
    }
}

/// The order saga written in Python (`samples/order-saga-py`, the
/// `durable-workflow` world): the same steps as the Rust one, each once;
/// a large order waits for a person's signal, which the instance takes
/// after being replayed from its history on a fresh instance (Python's
/// own clock reads included); a declined charge and a missed approval
/// release the reservation; a bad input is the caller's error.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_workflow_replays_its_history_and_compensates() {
    let Some(components) = guests(&["order-saga-py"], "a_python_workflow_replays_its_history_and_compensates") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    deploy(&host, "shop", component("shop"), manifest()).await.unwrap();
    deploy(&host, "order-saga", component("order-saga"), manifest()).await.unwrap();
    let python = components.into_iter().next().unwrap();
    deploy(&host, "order-saga-py", python, Manifest::parse(Some("128MiB"), None).unwrap()).await.unwrap();
    let start = async |workflow_type: &str, id: &str, input: Value| -> Value {
        let reply = host.host().start_workflow(workflow_type, id, serde_json::to_vec(&input).unwrap()).await.unwrap();
        serde_json::from_slice(&reply).unwrap()
    };
    let status = async |id: &str| -> Value { serde_json::from_slice(&host.host().workflow_status(id).await.unwrap()).unwrap() };
    let history = async |id: &str| -> Vec<(String, String)> {
        let h: Value = serde_json::from_slice(&host.host().workflow_history(id).await.unwrap()).unwrap();
        h["steps"].as_array().unwrap().iter().map(|s| (s["kind"].as_str().unwrap().to_string(), s["detail"].as_str().unwrap().to_string())).collect()
    };

    // A small order: three activities, the same history as the Rust saga's.
    let order = |id: &str, amount: i64| json!({ "order": id, "item": "book", "amount": amount, "shop": format!("shop/{id}") });
    let done = start("order-saga-py", "p-1", order("p-1", 30)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], json!({ "order": "p-1", "status": "shipped" }));
    start("order-saga", "r-1", order("r-1", 30)).await;
    let shape = |steps: Vec<(String, String)>, id: &str| steps.into_iter().map(|(k, d)| (k, d.replace(id, "X"))).collect::<Vec<_>>();
    assert_eq!(shape(history("p-1").await, "p-1"), shape(history("r-1").await, "r-1"), "Python and Rust record the same steps");
    let ledger = async |id: &str| ask(&host, &format!("shop/{id}"), "ledger", json!(null)).await.unwrap()["log"].clone();
    assert_eq!(ledger("p-1").await, json!(["reserve p-1", "charge p-1", "ship p-1"]));

    // A large order waits for a signal; the instance is unloaded, so the
    // signal's turn replays the run from the history on a fresh instance.
    let waiting = start("order-saga-py", "p-2", order("p-2", 900)).await;
    assert_eq!(waiting["status"], "running", "{waiting}");
    assert_eq!(waiting["custom_status"], json!({ "step": "approval" }));
    host.host().deactivate_all();
    host.host().signal_workflow("p-2", "approved", br#"{"ok": true}"#.to_vec()).await.unwrap();
    let approved = eventually("p-2 finishes", async || status("p-2").await, |s| s["status"] != "running").await;
    assert_eq!(approved["status"], "completed", "{approved}");
    assert_eq!(ledger("p-2").await, json!(["reserve p-2", "charge p-2", "ship p-2"]), "each step once across the replay");
    let kinds: Vec<String> = history("p-2").await.into_iter().map(|(k, _)| k).collect();
    assert!(kinds.contains(&"signal".to_string()), "{kinds:?}");

    // A declined charge (the shop's limit is 1,000) releases the reservation.
    let declined = start("order-saga-py", "p-3", json!({ "order": "p-3", "item": "car", "amount": 5000, "approve_above": 10000, "shop": "shop/p-3" })).await;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert!(declined["error"]["message"].as_str().unwrap().contains("card declined"), "{declined}");
    assert!(declined["error"]["message"].as_str().unwrap().contains("compensated"), "{declined}");
    assert_eq!(ledger("p-3").await, json!(["reserve p-3", "release p-3"]));

    // No approval in time: a durable timer ends the wait, then the release.
    start("order-saga-py", "p-4", json!({ "order": "p-4", "item": "boat", "amount": 900, "approve_within": 0.3, "shop": "shop/p-4" })).await;
    let late = eventually("p-4 gives up", async || status("p-4").await, |s| s["status"] != "running").await;
    assert_eq!(late["status"], "failed", "{late}");
    assert!(late["error"]["message"].as_str().unwrap().contains("no approval in time"), "{late}");
    assert_eq!(ledger("p-4").await, json!(["reserve p-4", "release p-4"]));

    // A missing field is the caller's mistake, named.
    let bad = start("order-saga-py", "p-5", json!({ "item": "book" })).await;
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["error"]["kind"], "bad-request", "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("`order`"), "{bad}");
}

/// The approval workflow written in JavaScript (`samples/approval-js`,
/// the `durable-workflow` world): the same outcome and the same
/// notifications as the Rust one. Without a decision in time it
/// escalates; the decision then ends it, after the instance was unloaded
/// and replayed from its history on a fresh instance (the engine's own
/// clock and random reads included); with none at all it gives up.
#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_workflow_replays_its_history() {
    let Some(components) = guests(&["approval-js"], "a_javascript_workflow_replays_its_history") else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    deploy(&host, "shop", component("shop"), manifest()).await.unwrap();
    let js = components.into_iter().next().unwrap();
    deploy(&host, "approval-js", js, Manifest::parse(Some("128MiB"), None).unwrap()).await.unwrap();
    let status = async |id: &str| -> Value { serde_json::from_slice(&host.host().workflow_status(id).await.unwrap()).unwrap() };
    let start = async |id: &str| -> Value {
        let input = json!({ "request": id, "approver": "ada", "escalate_to": "grace", "timeout_ms": 400, "notifier": format!("shop/{id}") });
        serde_json::from_slice(&host.host().start_workflow("approval-js", id, serde_json::to_vec(&input).unwrap()).await.unwrap()).unwrap()
    };
    let log = async |id: &str| ask(&host, &format!("shop/{id}"), "ledger", json!(null)).await.unwrap()["log"].clone();

    let first = start("j-1").await;
    assert_eq!(first["status"], "running", "{first}");
    assert_eq!(first["custom_status"]["waiting_for"], "ada", "{first}");
    eventually("j-1 escalates", async || status("j-1").await, |s| s["custom_status"]["waiting_for"] == "grace").await;
    host.host().deactivate_all();
    host.host().signal_workflow("j-1", "decision", br#"{"approved": true, "by": "grace"}"#.to_vec()).await.unwrap();
    let decided = eventually("j-1 finishes", async || status("j-1").await, |s| s["status"] != "running").await;
    assert_eq!(decided["output"], json!({ "request": "j-1", "approved": true, "by": "grace", "escalated": true }), "{decided}");
    assert_eq!(
        log("j-1").await,
        json!(["notify ada: please decide on: j-1", "notify grace: ada did not decide on j-1 in time: please decide"]),
        "each notification once across the replays"
    );

    start("j-2").await;
    let gave_up = eventually("j-2 gives up", async || status("j-2").await, |s| s["status"] != "running").await;
    assert_eq!(gave_up["status"], "failed", "{gave_up}");
    assert!(gave_up["error"]["message"].as_str().unwrap().contains("no decision"), "{gave_up}");

    // A failed activity is the workflow's failure, with the activity's kind.
    let input = json!({ "request": "j-4", "approver": "ada", "escalate_to": "grace", "notifier": "nobody/x" });
    let failed: Value =
        serde_json::from_slice(&host.host().start_workflow("approval-js", "j-4", serde_json::to_vec(&input).unwrap()).await.unwrap()).unwrap();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["kind"], "not-found", "{failed}");

    let bad: Value = serde_json::from_slice(&host.host().start_workflow("approval-js", "j-3", b"{}".to_vec()).await.unwrap()).unwrap();
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["error"]["kind"], "bad-request", "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("`request`"), "{bad}");
}
