//! Durable workflows (`wit/workflow.wit`): the order saga and the
//! `wf-probe` test workflow on real hosts, through the same calls the HTTP
//! API makes: each activity's effect once, compensations in reverse,
//! signals, durable timers, fan-out, children, continue-as-new,
//! cancellation, WASI clocks replayed, versions pinned, divergence caught,
//! and kill -9 at the step boundaries of a real `quark serve`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli_process::{Server, free_port, stderr, stdout};
use crate::support::*;

const COMPONENTS: &[(&str, &str)] = &[
    ("counter", "counter"),
    ("shop", "shop"),
    ("order-saga", "order-saga"),
    ("approval", "approval"),
    ("fan-out", "fan-out"),
    ("wf-probe", "wf-probe"),
];

fn to_json(bytes: Vec<u8>) -> Value {
    serde_json::from_slice(&bytes).unwrap()
}

async fn start(node: &quark::Node, workflow_type: &str, id: &str, input: Value) -> Value {
    to_json(node.host().start_workflow(workflow_type, id, serde_json::to_vec(&input).unwrap()).await.unwrap())
}

async fn status(node: &quark::Node, id: &str) -> Value {
    to_json(node.host().workflow_status(id).await.unwrap())
}

/// The status once it is no longer `running`.
async fn finished(node: &quark::Node, id: &str) -> Value {
    eventually(&format!("workflow {id} finishes"), async || status(node, id).await, |s| s["status"] != "running").await
}

/// `quark serve` arguments deploying each `type=file` (a path under `target/`).
fn deploy_args(deploys: &[&str]) -> Vec<String> {
    deploys
        .iter()
        .flat_map(|d| {
            let (name, file) = d.split_once('=').unwrap();
            ["--deploy".to_string(), format!("{name}={}", root().join("target").join(file).display())]
        })
        .collect()
}

async fn counter(node: &quark::Node, key: &str) -> i64 {
    ask(node, &format!("counter/{key}"), "get", json!(null)).await.unwrap().as_i64().unwrap()
}

/// Each step of the saga runs once; when the charge is declined, the
/// reservation is released (the compensation of the one step before it)
/// and the workflow fails with the reason. The history shows the steps.
#[tokio::test(flavor = "multi_thread")]
async fn the_order_saga_runs_each_step_once_and_compensates_in_reverse() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let done = start(&node, "order-saga", "o-1", json!({ "order": "o-1", "item": "book", "amount": 30 })).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], json!({ "order": "o-1", "status": "shipped" }));
    assert_eq!(done["custom_status"], json!({ "step": "done" }));
    let declined = start(&node, "order-saga", "o-2", json!({ "order": "o-2", "item": "book", "amount": 5000 })).await;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert!(declined["error"]["message"].as_str().unwrap().contains("card declined"), "{declined}");
    let unobtainable = start(&node, "order-saga", "o-3", json!({ "order": "o-3", "item": "unobtainium", "amount": 5 })).await;
    assert_eq!(unobtainable["status"], "failed", "{unobtainable}");
    let ledger = ask(&node, "shop/main", "ledger", json!(null)).await.unwrap();
    assert_eq!(
        ledger["log"],
        json!(["reserve o-1", "charge o-1", "ship o-1", "reserve o-2", "release o-2"]),
        "o-3 reserved nothing, so it has nothing to undo"
    );
    // Starting an id again returns that instance and runs nothing.
    let again = start(&node, "order-saga", "o-1", json!({ "order": "o-1", "item": "other", "amount": 1 })).await;
    assert_eq!(again, done);
    assert_eq!(ask(&node, "shop/main", "ledger", json!(null)).await.unwrap()["ran"]["reserve"], 2);
    let history = to_json(node.host().workflow_history("o-2").await.unwrap());
    let steps: Vec<(&str, &str)> =
        history["steps"].as_array().unwrap().iter().map(|s| (s["kind"].as_str().unwrap(), s["detail"].as_str().unwrap())).collect();
    assert_eq!(steps, [("activity", "shop/main reserve"), ("activity", "shop/main charge"), ("activity", "shop/main release")]);
    assert!(history["steps"][1]["result"]["error"]["message"].as_str().unwrap().contains("card declined"));
}

/// The approval sample: without a decision in time it escalates and
/// waits again; a decision then ends it; with none at all it gives up.
/// The fan-out sample prices 1,000 items through activities started at
/// once (past one checkpoint of 256 steps) and sums them.
#[tokio::test(flavor = "multi_thread")]
async fn the_approval_and_fan_out_samples() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let request = |id: &str| json!({ "request": id, "approver": "ada", "escalate_to": "grace", "timeout_ms": 400 });
    assert_eq!(start(&node, "approval", "r-1", request("r-1")).await["custom_status"]["waiting_for"], "ada");
    eventually("r-1 escalates", async || status(&node, "r-1").await, |s| s["custom_status"]["waiting_for"] == "grace").await;
    node.host().signal_workflow("r-1", "decision", br#"{"approved": true, "by": "grace"}"#.to_vec()).await.unwrap();
    let decided = finished(&node, "r-1").await;
    assert_eq!(decided["output"], json!({ "request": "r-1", "approved": true, "by": "grace", "escalated": true }), "{decided}");
    start(&node, "approval", "r-2", request("r-2")).await;
    let gave_up = finished(&node, "r-2").await;
    assert_eq!(gave_up["status"], "failed");
    assert!(gave_up["error"]["message"].as_str().unwrap().contains("no decision"), "{gave_up}");
    let log = ask(&node, "shop/main", "ledger", json!(null)).await.unwrap()["log"].clone();
    assert_eq!(
        log,
        json!([
            "notify ada: please decide on: r-1",
            "notify grace: ada did not decide on r-1 in time: please decide",
            "notify ada: please decide on: r-2",
            "notify grace: ada did not decide on r-2 in time: please decide"
        ])
    );

    start(&node, "fan-out", "f-1", json!({ "items": 1000 })).await;
    let priced = finished(&node, "f-1").await;
    let total: u64 = (0..1000u64).map(|i| i * 7 % 100 + 1).sum();
    assert_eq!(priced["output"], json!({ "items": 1000, "total": total }), "{priced}");
    assert_eq!(priced["steps"], 1000);
}

/// A signal sent while the workflow waits for it wakes it; one sent before
/// the wait begins (during a sleep) is kept and taken when it does; a
/// wait with a timeout ends without one; a finished workflow refuses one.
#[tokio::test(flavor = "multi_thread")]
async fn signals_before_and_after_the_wait_and_their_timeouts() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let waiting = start(&node, "wf-probe", "s-after", json!({ "mode": "signal" })).await;
    assert_eq!(waiting["status"], "running");
    let woken = to_json(node.host().signal_workflow("s-after", "go", br#"{"approved": true}"#.to_vec()).await.unwrap());
    assert_eq!(woken["status"], "completed", "{woken}");
    assert_eq!(woken["output"], json!({ "signal": { "approved": true } }));

    let sleeping = start(&node, "wf-probe", "s-before", json!({ "mode": "late-wait", "ms": 700 })).await;
    assert_eq!(sleeping["status"], "running");
    let still = to_json(node.host().signal_workflow("s-before", "go", b"42".to_vec()).await.unwrap());
    assert_eq!(still["status"], "running", "the signal came during the sleep: kept for the wait");
    assert_eq!(finished(&node, "s-before").await["output"], json!({ "signal": 42 }));

    start(&node, "wf-probe", "s-timeout", json!({ "mode": "signal", "ms": 300 })).await;
    assert_eq!(finished(&node, "s-timeout").await["output"], json!({ "signal": "timed out" }));
    let refused = node.host().signal_workflow("s-timeout", "go", b"1".to_vec()).await.unwrap_err();
    assert_eq!(refused.kind, quark::ErrorKind::Conflict, "{refused}");
}

/// A durable timer (a job) wakes a sleeping workflow; twenty activities
/// started at once are all awaited; a child workflow's result (and its
/// failure) reaches its parent; continue-as-new keeps each run's history
/// to its own steps.
#[tokio::test(flavor = "multi_thread")]
async fn timers_fan_out_children_and_continue_as_new() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let slept = start(&node, "wf-probe", "t-sleep", json!({ "mode": "sleep", "key": "t", "ms": 400 })).await;
    assert_eq!(slept["status"], "running");
    assert_eq!((counter(&node, "t-before").await, counter(&node, "t-after").await), (1, 0));
    assert_eq!(finished(&node, "t-sleep").await["status"], "completed");
    assert_eq!((counter(&node, "t-before").await, counter(&node, "t-after").await), (1, 1));

    let fan = start(&node, "wf-probe", "t-fan", json!({ "mode": "fan-out", "key": "f", "n": 20 })).await;
    assert_eq!(fan["output"], json!({ "sum": 190 }), "{fan}");
    for i in 0..20 {
        assert_eq!(counter(&node, &format!("f-{i}")).await, i);
    }

    start(&node, "wf-probe", "t-child", json!({ "mode": "child", "key": "c", "n": 3 })).await;
    assert_eq!(finished(&node, "t-child").await["output"], json!({ "child": { "steps": 3, "last": 1 } }));
    assert_eq!(status(&node, "t-child-child").await["status"], "completed");
    start(&node, "wf-probe", "t-orphan", json!({ "mode": "child", "n": 0 })).await;
    let failed = finished(&node, "t-orphan").await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["message"].as_str().unwrap().contains("failed on purpose"), "{failed}");

    start(&node, "wf-probe", "t-forever", json!({ "mode": "forever", "key": "fv", "n": 6 })).await;
    let done = finished(&node, "t-forever").await;
    assert_eq!((done["status"].as_str(), done["run"].as_u64(), done["steps"].as_u64()), (Some("completed"), Some(6), Some(6)), "{done}");
    let history = to_json(node.host().workflow_history("t-forever").await.unwrap());
    assert_eq!(history["steps"].as_array().unwrap().len(), 1, "each run keeps only its own step: {history}");
    assert_eq!(counter(&node, "fv").await, 6);
}

/// A cancelled workflow's wait fails with `cancelled`; it runs its
/// compensation once and ends `cancelled`. Cancelling again changes nothing.
/// A parent waiting for a child is cancelled with its child.
#[tokio::test(flavor = "multi_thread")]
async fn cancellation_runs_compensations_and_ends_cancelled() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    assert_eq!(start(&node, "wf-probe", "c-1", json!({ "mode": "cancel", "key": "cx" })).await["status"], "running");
    let cancelled = to_json(node.host().cancel_workflow("c-1").await.unwrap());
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["error"]["message"].as_str().unwrap().starts_with("cancelled"));
    let again = to_json(node.host().cancel_workflow("c-1").await.unwrap());
    assert_eq!(again["status"], "cancelled");
    assert_eq!((counter(&node, "cx-did").await, counter(&node, "cx-undid").await), (1, 1));

    // A parent cancelled while it waits for its child: its wait ends with
    // the cancellation, and the child is cancelled with it (it compensates).
    start(&node, "wf-probe", "c-2", json!({ "mode": "child", "key": "cc", "ms": 1 })).await;
    eventually("the child starts", async || node.host().workflow_status("c-2-child").await.ok().map(to_json), |s| s.is_some()).await;
    let parent = to_json(node.host().cancel_workflow("c-2").await.unwrap());
    assert_eq!(parent["status"], "cancelled", "{parent}");
    let child = finished(&node, "c-2-child").await;
    assert_eq!(child["status"], "cancelled", "{child}");
    assert_eq!((counter(&node, "cc-did").await, counter(&node, "cc-undid").await), (1, 1));
    let history = to_json(node.host().workflow_history("c-2").await.unwrap());
    assert_eq!(history["steps"][0]["result"], json!("cancelled"), "{history}");

    // `is-cancelled` answers on a replay as it did live: false before the
    // wait that saw the cancellation, even once that child step holds it
    // (the run goes past a checkpoint after the cancel, so it is replayed).
    start(&node, "wf-probe", "c-3", json!({ "mode": "cancel-replay", "key": "cr" })).await;
    eventually("the child starts", async || node.host().workflow_status("c-3-child").await.ok().map(to_json), |s| s.is_some()).await;
    node.host().cancel_workflow("c-3").await.unwrap();
    let replayed = finished(&node, "c-3").await;
    assert_eq!(replayed["status"], "cancelled", "{replayed}");
    assert_eq!(replayed["steps"], 302, "{replayed}");
    assert_eq!(counter(&node, "cr-x").await, 1);
}

/// A workflow that reads WASI's wall clock and random numbers directly
/// (`SystemTime::now`, `RandomState`) shows them, sleeps, and is run again
/// from the start after the timer: it reads the very same values.
#[tokio::test(flavor = "multi_thread")]
async fn wasi_clocks_and_random_replay_identically() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let first = start(&node, "wf-probe", "k-1", json!({ "mode": "clock", "ms": 300 })).await;
    let seen = first["custom_status"].clone();
    assert!(seen["wall"].as_u64().unwrap() > 0 && seen["random"].is_string(), "{first}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = finished(&node, "k-1").await;
    assert_eq!(done["output"], seen, "the replay read the recorded clock and the seeded random");
    // A second instance reads other values (the seed is per instance).
    let other = start(&node, "wf-probe", "k-2", json!({ "mode": "clock", "ms": 0 })).await;
    assert_ne!(finished(&node, "k-2").await["output"]["random"], seen["random"], "{other}");
    let kinds: Vec<String> = to_json(node.host().workflow_history("k-1").await.unwrap())["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["kind"].as_str().unwrap(), s["detail"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&"clock wasi:wall".to_string()) && kinds.contains(&"clock now".to_string()), "{kinds:?}");
}

/// A new version: running instances stay on theirs (and finish on it),
/// new ones start on it; `check` replays the running histories against it
/// and names the first divergent step of each: a reordered activity, an
/// added clock read.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_keeps_running_instances_on_theirs_and_check_finds_divergences() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    start(&node, "wf-probe", "v-two", json!({ "mode": "two-steps", "key": "v" })).await;
    start(&node, "wf-probe", "v-clock", json!({ "mode": "clock", "ms": 3_600_000 })).await;
    start(&node, "wf-probe", "v-signal", json!({ "mode": "signal" })).await;
    let v2 = node.host().deploy("wf-probe", component("wf-probe-v2"), manifest()).await.unwrap();
    assert_eq!(v2.version.version, 2);
    let check = node.host().check_workflow("wf-probe", 2).await.unwrap();
    assert_eq!(check.checked, 3);
    let mut found: Vec<(String, String)> = check.divergences.iter().map(|d| (d.id.clone(), d.message.clone())).collect();
    found.sort();
    assert_eq!(found.len(), 2, "v-signal's history fits v2: {found:?}");
    assert_eq!(found[0].0, "v-clock");
    assert!(found[0].1.contains("step 0") && found[0].1.contains("clock `wasi:wall`") && found[0].1.contains("clock `now`"), "{}", found[0].1);
    assert_eq!(found[1].0, "v-two");
    assert!(found[1].1.contains("step 0") && found[1].1.contains("counter/v-a") && found[1].1.contains("counter/v-b"), "{}", found[1].1);
    assert!(node.host().check_workflow("wf-probe", 1).await.unwrap().divergences.is_empty());
    // v-two goes on on v1 (a then b); a new one runs v2 (b then a).
    let done = to_json(node.host().signal_workflow("v-two", "go", b"1".to_vec()).await.unwrap());
    assert_eq!((done["status"].as_str(), done["version"].as_u64()), (Some("completed"), Some(1)), "{done}");
    let new = start(&node, "wf-probe", "v-new", json!({ "mode": "two-steps", "key": "w" })).await;
    assert_eq!(new["version"], 2);
    let order: Vec<String> = to_json(node.host().workflow_history("v-new").await.unwrap())["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["detail"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order[..2], ["counter/w-b increment".to_string(), "counter/w-a increment".to_string()]);
}

/// A history that no longer fits the code at run time (here its record
/// is pointed at v2 in the store, as a broken deploy might) stops the
/// instance `failed` with a `nondeterminism` error naming the step; the
/// step it diverged at did not run.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_that_diverges_at_run_time_stops_with_nondeterminism() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    start(&node, "wf-probe", "d-1", json!({ "mode": "two-steps", "key": "d" })).await;
    node.host().deploy("wf-probe", component("wf-probe-v2"), manifest()).await.unwrap();
    node.host().deactivate_all();
    let actor = id("wf-probe/d-1");
    let state = node.host().store().load_state(&actor).await.unwrap();
    let (_, record) = state.iter().find(|(k, _)| k == "wf").unwrap();
    let mut record: Value = serde_json::from_slice(record).unwrap();
    record["version"] = json!(2);
    let write = quark::storage::StateWrite { key: "wf".into(), value: Some(serde_json::to_vec(&record).unwrap()) };
    node.host().store().commit(&[quark::storage::TurnCommit::state_only(actor, vec![write])]).await.unwrap();
    let stopped = to_json(node.host().signal_workflow("d-1", "go", b"1".to_vec()).await.unwrap());
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert_eq!(stopped["error"]["kind"], "nondeterminism");
    assert!(stopped["error"]["message"].as_str().unwrap().contains("step 0"), "{stopped}");
    assert_eq!((counter(&node, "d-a").await, counter(&node, "d-b").await), (1, 1), "nothing ran again");
}

/// Mistakes get clear errors, and nothing starts.
#[tokio::test(flavor = "multi_thread")]
async fn workflow_mistakes_get_clear_errors() {
    let dir = tempdir().unwrap();
    let node = host_with(dir.path(), COMPONENTS).await;
    let host = node.host();
    let e = host.start_workflow("nope", "x", b"{}".to_vec()).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::NotFound, "{e}");
    let e = host.start_workflow("counter", "x", b"{}".to_vec()).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::BadRequest, "{e}");
    assert!(e.message.contains("not a workflow"), "{e}");
    let e = host.workflow_status("never-started").await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::NotFound, "{e}");
    let e = ask(&node, "wf-probe/x", "increment", json!({})).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::NotFound, "{e}");
    let bad = start(&node, "wf-probe", "bad-input", json!({ "nothing": true })).await;
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"]["message"].as_str().unwrap().contains("mode"), "{bad}");
    assert!(host.list_workflows(Some(quark::runtime::workflow::WorkflowStatus::Running), None).await.unwrap().is_empty());
}

/// kill -9 of a real `quark serve` at each step boundary of a workflow
/// whose steps are an activity, ~90 ms of work and a timer: the host dies
/// right after each activity committed and before the workflow recorded
/// it. After each restart the workflow goes on from its history (the
/// first time, the start itself was lost: starting again is idempotent),
/// sends the activity again with the same message id, and the target's
/// inbox answers it without running it: every activity took effect
/// exactly once. The CLI shows it through `quark workflow`.
#[test]
fn kill9_at_each_step_boundary_runs_each_activity_exactly_once() {
    const STEPS: usize = 5;
    let dir = tempdir().unwrap();
    let port = free_port();
    let deploys = deploy_args(&["counter=samples/counter.wasm", "wf-probe=test-actors/wf-probe.wasm"]);
    let args: Vec<&str> = deploys.iter().map(String::as_str).collect();
    let mut server = Server::start_with(dir.path(), port, &args);
    let input = json!({ "mode": "paced", "key": "k9", "n": STEPS, "ms": 100, "spin": 30 }).to_string();
    let start = ["workflow", "start", "wf-probe", "--id", "k9", input.as_str()].map(String::from);
    let url = server.url.clone();
    // Its host dies before it answers.
    let first_start = {
        let start = start.clone();
        std::thread::spawn(move || std::process::Command::new(&*crate::cli_process::QUARK).args(&start).env("QUARK_SERVER", url).output())
    };
    let count = |server: &Server, i: usize| {
        crate::cli_process::reqwest::blocking_post(&format!("{}/v1/actors/counter/k9-{i}/get", server.url), "")
            .and_then(|(code, body)| (code == 200).then(|| body.trim().parse::<i64>().unwrap_or(-1)))
            .unwrap_or(0)
    };
    for i in 0..STEPS {
        let committed = (0..30_000).any(|_| {
            let done = count(&server, i) >= 1;
            if !done {
                std::thread::sleep(Duration::from_millis(2));
            }
            done
        });
        assert!(committed, "activity {i} never ran; log: {}", std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default());
        server.kill9();
        server = Server::start_with(dir.path(), port, &args);
        if i == 0 {
            let out = server.quark(&start.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(out.status.success(), "starting k9 again: {}", stderr(&out));
        }
    }
    let _ = first_start.join();
    let done = (0..600)
        .find_map(|_| {
            let status: Value = serde_json::from_str(&stdout(&server.quark(&["workflow", "status", "k9"]))).unwrap_or(Value::Null);
            if status["status"] == "running" || status.is_null() {
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
            Some(status)
        })
        .expect("the workflow finished within a minute of the last restart");
    assert_eq!(done["status"], "completed", "{done}");
    for i in 0..STEPS {
        assert_eq!(count(&server, i), 1, "activity {i} took effect once across {STEPS} kills");
    }
    let history = server.quark(&["workflow", "history", "k9"]);
    assert!(stdout(&history).contains(&format!("counter/k9-{} increment", STEPS - 1)), "{}", stdout(&history));
    let list = server.quark(&["workflow", "list", "--status", "completed"]);
    assert!(stdout(&list).contains("k9"), "{}", stdout(&list));
}

/// A workflow in a cluster outlives its host: started through h0, moved to
/// h1 mid-run (the migration of any actor), h1 killed with SIGKILL; the
/// next timer runs it on h0 from its history, and each activity took
/// effect once.
async fn a_workflow_outlives_its_host(store: &str) {
    const STEPS: usize = 6;
    let mut cluster = tokio::task::block_in_place(|| crate::cluster_calls::Hosts::start(store, 2, &["--job-lease", "3s"]));
    cluster.deploy(0, "counter", "samples/counter.wasm");
    cluster.deploy(0, "wf-probe", "test-actors/wf-probe.wasm");
    let http = reqwest::Client::new();
    let h0 = cluster.urls[0].clone();
    let input = json!({ "mode": "paced", "key": "m1", "n": STEPS, "ms": 300 });
    let started = http.post(format!("{h0}/v1/workflows")).json(&json!({ "type": "wf-probe", "id": "m1", "input": input })).send().await.unwrap();
    assert_eq!(started.status(), 200, "{}", started.text().await.unwrap());
    let status = async || -> Value {
        match http.get(format!("{h0}/v1/workflows/m1")).send().await {
            Ok(r) if r.status() == 200 => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        }
    };
    let moved = http.post(format!("{h0}/v1/cluster/migrations")).json(&json!({ "actor": "wf-probe/m1", "to": "h1" })).send().await.unwrap();
    let (code, body) = (moved.status().as_u16(), moved.text().await.unwrap());
    assert!(code == 200 || body.contains("served by h1 already"), "moving the workflow to h1: {code} {body}");
    eventually("the workflow passes step 2", async || status().await, |s| s["custom_status"]["step"].as_u64().is_some_and(|n| n >= 2)).await;
    let h1 = cluster.hosts[1].take().unwrap();
    tokio::task::block_in_place(|| h1.kill9());
    let done = eventually("the workflow finishes on h0", async || status().await, |s| s["status"] == "completed").await;
    assert_eq!(done["output"], json!({ "steps": STEPS }), "{done}; h0's log: {}", cluster.log(0));
    for i in 0..STEPS {
        let reply = http.post(format!("{h0}/v1/actors/counter/m1-{i}/get")).send().await.unwrap().text().await.unwrap();
        assert_eq!(reply.trim(), "1", "activity {i} took effect once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_outlives_its_host_on_postgres() {
    let Some(store) = shared_store_url("postgres", "a_workflow_outlives_its_host_on_postgres").await else { return };
    a_workflow_outlives_its_host(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_outlives_its_host_on_redis() {
    let Some(store) = shared_store_url("redis", "a_workflow_outlives_its_host_on_redis").await else { return };
    a_workflow_outlives_its_host(&store).await;
}

/// The order saga with the real binary SIGKILLed at every step boundary:
/// for each step N, a host started with `QUARK_TEST_PAUSE_AFTER_STEP=N`
/// stops right after step N's activity committed and before the workflow
/// recorded it, and is killed there. Each restart starts the saga again
/// (the start was never answered; starting is idempotent), replays it,
/// and sends the earlier activities again with the same message ids; the
/// shop's inbox answers them without running them. An order that ships
/// and one whose charge is declined (its compensation, the release, is
/// one of the boundaries): every activity and every compensation took
/// effect exactly once.
#[test]
fn kill9_at_every_step_boundary_of_the_order_saga() {
    let dir = tempdir().unwrap();
    let port = free_port();
    let deploys = deploy_args(&["shop=samples/shop.wasm", "order-saga=samples/order-saga.wasm"]);
    let args: Vec<&str> = deploys.iter().map(String::as_str).collect();
    let log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    for (order, amount, ran) in [
        ("o-ship", 30, json!({ "reserve": 1, "charge": 1, "ship": 1 })),
        ("o-declined", 5000, json!({ "reserve": 1, "release": 1 })),
    ] {
        let input = json!({ "order": order, "item": "book", "amount": amount, "shop": format!("shop/{order}") }).to_string();
        let start: Vec<String> = ["workflow", "start", "order-saga", "--id", order, input.as_str()].map(String::from).to_vec();
        for step in 0..3 {
            let pause = step.to_string();
            let server = Server::start_with_env(dir.path(), port, &args, &[("QUARK_TEST_PAUSE_AFTER_STEP", &pause)]);
            // The start never gets its answer: its host stops at the boundary.
            let (start, url) = (start.clone(), server.url.clone());
            let hanging =
                std::thread::spawn(move || std::process::Command::new(&*crate::cli_process::QUARK).args(&start).env("QUARK_SERVER", url).output());
            let line = format!("workflow {order} got the reply of step {step}; paused");
            let paused = (0..1500).any(|_| {
                let seen = log().contains(&line);
                if !seen {
                    std::thread::sleep(Duration::from_millis(10));
                }
                seen
            });
            assert!(paused, "{order} never reached the end of step {step}; log: {}", log());
            server.kill9();
            let _ = hanging.join();
        }
        let server = Server::start_with(dir.path(), port, &args);
        let out = server.quark(&start.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "starting {order} after the last kill: {}", stderr(&out));
        let done: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let expected = if amount > 1000 { "failed" } else { "completed" };
        assert_eq!(done["status"], expected, "{done}");
        let (code, ledger) = crate::cli_process::reqwest::blocking_post(&format!("{}/v1/actors/shop/{order}/ledger", server.url), "").unwrap();
        assert_eq!(code, 200, "{ledger}");
        let ledger: Value = serde_json::from_str(&ledger).unwrap();
        assert_eq!(ledger["ran"], ran, "{order}: each activity and compensation once across three kills: {ledger}");
        server.kill9();
    }
}
