//! Journaling and event sourcing: the bank sample, rebuilds from snapshots,
//! the journal's failure paths, replays, projections and the persisted format.

use std::sync::Arc;

use quark::runtime::journal::ReplayTarget;
use quark::storage::sqlite::SqliteStore;
use quark::storage::{Retention, Snapshot, StateWrite, Store, TurnCommit};
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::{Value, json};

use crate::support::*;

async fn ledger_host(dir: &std::path::Path, snapshot_every: &str) -> Node {
    let host = sqlite_host(dir).await;
    let manifest = manifest().with_journal(Some(snapshot_every), None).unwrap();
    host.host().deploy("ledger", component("ledger"), manifest).await.unwrap();
    host
}

#[tokio::test]
async fn bank_commands_append_events_and_fold_them() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("bank", "bank")]).await;
    assert_eq!(ask(&host, "bank/alice", "deposit", json!({"amount": 100})).await.unwrap(), json!({"balance": 100}));
    assert_eq!(ask(&host, "bank/alice", "withdraw", json!({"amount": 30})).await.unwrap(), json!({"balance": 70}));
    let e = ask(&host, "bank/alice", "withdraw", json!({"amount": 1000})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(e.message.contains("insufficient funds") && e.message.contains("70"), "{e}");
    let e = ask(&host, "bank/alice", "deposit", json!({"amount": -5})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");

    // Only accepted commands left events, with their audit fields.
    let page = host.host().journal(&id("bank/alice"), 1, None, 100).await.unwrap();
    assert_eq!(page.version, 2);
    let types: Vec<&str> = page.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["deposited", "withdrawn"]);
    let first = &page.events[0];
    assert_eq!((first.version, first.schema_version, first.method.as_str(), first.caller.as_deref()), (1, 1, "deposit", None));
    assert_eq!(serde_json::from_slice::<Value>(&first.data).unwrap(), json!({"deposited": {"amount": 100}}));
    // The call chain's id: 128 bits (a per-process random nonce, then a
    // counter), so chains started on different hosts do not collide.
    assert!(first.correlation_id.len() == 32 && first.correlation_id.chars().all(|c| c.is_ascii_hexdigit()), "{}", first.correlation_id);
    assert_ne!(first.correlation_id, page.events[1].correlation_id, "each request starts its own chain");
    assert_ne!(first.causation_id, page.events[1].causation_id, "each turn is its own cause");

    // The state is the fold of the events: it survives deactivation.
    host.host().deactivate_all();
    assert_eq!(ask(&host, "bank/alice", "balance", json!(null)).await.unwrap(), json!({"balance": 70}));
    assert_eq!(ask(&host, "bank/bob", "balance", json!(null)).await.unwrap(), json!({"balance": 0}));
}

#[tokio::test]
async fn a_plain_actor_keeps_an_audit_trail_with_its_state() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("misbehave", "misbehave")]).await;
    assert_eq!(ask(&host, "misbehave/audit", "audit", json!({"note": "first", "fail": false})).await.unwrap(), json!(1));
    let e = ask(&host, "misbehave/audit", "audit", json!({"note": "lost", "fail": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert_eq!(ask(&host, "misbehave/audit", "audit", json!({"note": "second", "fail": false})).await.unwrap(), json!(2));
    let page = host.host().journal(&id("misbehave/audit"), 1, None, 10).await.unwrap();
    let notes: Vec<Value> = page.events.iter().map(|e| serde_json::from_slice(&e.data).unwrap()).collect();
    assert_eq!(notes, [json!("first"), json!("second")]);
    assert!(page.events.iter().all(|e| e.event_type == "noted" && e.schema_version == 2 && e.method == "audit"));
    // A call from another actor records the caller; replay needs an event-sourced actor.
    ask(&host, "misbehave/other", "forward", json!({"target": "misbehave/audit", "method": "audit", "payload": {"note": "relayed", "fail": false}}))
        .await
        .unwrap();
    let page = host.host().journal(&id("misbehave/audit"), 3, None, 10).await.unwrap();
    assert_eq!(page.events[0].caller.as_deref(), Some("misbehave/other"));
    let e = host.host().replay(&id("misbehave/audit"), ReplayTarget::Version(1), None).await.unwrap_err();
    assert!(e.message.contains("not event-sourced"), "{e}");
}

/// Old events are never rewritten: `upcast` converts their shape on every
/// rebuild (the ledger's schema 1 called the note `text`).
#[tokio::test]
async fn events_of_an_older_schema_are_upcast_on_rebuild() {
    let dir = crate::support::tempdir().unwrap();
    let host = ledger_host(dir.path(), "1000").await;
    let old = quark::storage::EventRecord {
        version: 1,
        event_type: "recorded".into(),
        schema_version: 1,
        data: br#"{"recorded":{"text":"from schema 1"}}"#.to_vec(),
        recorded_at_ms: 1_700_000_000_000,
        correlation_id: "0".into(),
        causation_id: "old".into(),
        caller: None,
        method: "record".into(),
    };
    let append = quark::storage::JournalAppend { expected_version: 0, events: vec![old] };
    host.host().store()
        .commit(&[TurnCommit { journal: Some(append), ..TurnCommit::state_only(id("ledger/old"), vec![]) }])
        .await
        .unwrap();
    ask(&host, "ledger/old", "record", json!({"note": "from schema 2"})).await.unwrap();
    host.host().deactivate_all();
    assert_eq!(ask(&host, "ledger/old", "notes", json!(null)).await.unwrap(), json!(["from schema 1", "from schema 2"]));
    let page = host.host().journal(&id("ledger/old"), 1, None, 10).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.schema_version).collect::<Vec<_>>(), [1, 2], "stored events keep their schema");
}

#[tokio::test]
async fn rebuild_starts_from_the_latest_snapshot() {
    let dir = crate::support::tempdir().unwrap();
    let host = ledger_host(dir.path(), "10").await;
    for i in 1..=25 {
        ask(&host, "ledger/a", "record", json!({"note": format!("n{i}")})).await.unwrap();
    }
    let store = host.host().store().clone();
    eventually(
        "a snapshot at version 20",
        async || store.latest_snapshot(&id("ledger/a"), u64::MAX).await.unwrap().map(|s| s.version),
        |version| *version == Some(20),
    )
    .await;
    let snapshot = store.latest_snapshot(&id("ledger/a"), u64::MAX).await.unwrap().unwrap();
    let state: Value = serde_json::from_slice(&snapshot.data).unwrap();
    assert_eq!(state["notes"].as_array().unwrap().len(), 20);

    host.host().deactivate_all();
    let notes = ask(&host, "ledger/a", "notes", json!(null)).await.unwrap();
    let expected: Vec<String> = (1..=25).map(|i| format!("n{i}")).collect();
    assert_eq!(notes, json!(expected));
    assert_eq!(ask(&host, "ledger/a", "version", json!(null)).await.unwrap(), json!(25));
    // On demand, through the API and from inside a turn.
    assert_eq!(host.host().snapshot(&id("ledger/a")).await.unwrap(), 25);
    assert_eq!(store.latest_snapshot(&id("ledger/a"), u64::MAX).await.unwrap().unwrap().version, 25);
    let e = host.host().snapshot(&id("bank/x")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn corrupt_or_missing_snapshot_falls_back_to_full_replay() {
    let dir = crate::support::tempdir().unwrap();
    let host = ledger_host(dir.path(), "1000").await;
    for i in 1..=5 {
        ask(&host, "ledger/c", "record", json!({"note": format!("n{i}")})).await.unwrap();
    }
    // A snapshot that `restore` cannot read, claiming to cover everything.
    let corrupt = Snapshot { version: 5, component_version: 1, taken_at_ms: 0, data: b"\x00not json".to_vec() };
    host.host().store().save_snapshot(&id("ledger/c"), &corrupt, Retention::Keep).await.unwrap();
    host.host().deactivate_all();
    let notes = ask(&host, "ledger/c", "notes", json!(null)).await.unwrap();
    assert_eq!(notes.as_array().unwrap().len(), 5, "{notes}");
    // Missing: no snapshot at all also rebuilds from the events.
    host.host().deactivate_all();
    assert_eq!(ask(&host, "ledger/d", "notes", json!(null)).await.unwrap(), json!([]));
}

#[tokio::test]
async fn apply_that_traps_during_rebuild_leaves_the_actor_inactive_and_the_journal_untouched() {
    let dir = crate::support::tempdir().unwrap();
    let host = ledger_host(dir.path(), "1000").await;
    ask(&host, "ledger/p", "record", json!({"note": "poison-1"})).await.unwrap();
    ask(&host, "ledger/p", "record", json!({"note": "fine"})).await.unwrap();
    ask(&host, "ledger/p", "arm_poison", json!(null)).await.unwrap();
    host.host().deactivate_all();

    let e = ask(&host, "ledger/p", "notes", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    assert!(e.message.contains("`apply` failed on events 1..=2") && e.message.contains("armed to fail"), "{e}");
    // Again: still not activated, still the same clear error.
    let e = ask(&host, "ledger/p", "record", json!({"note": "more"})).await.unwrap_err();
    assert!(e.message.contains("cannot be activated"), "{e}");
    let page = host.host().journal(&id("ledger/p"), 1, None, 100).await.unwrap();
    assert_eq!(page.version, 2);
    assert_eq!(page.events.len(), 2);
    // The host serves others meanwhile.
    ask(&host, "ledger/q", "record", json!({"note": "other"})).await.unwrap();

    // Fix the cause (here: disarm), and the same journal rebuilds.
    host.host().store().commit(&[TurnCommit::state_only(id("ledger/p"), vec![StateWrite { key: "poison".into(), value: None }])]).await.unwrap();
    host.host().deactivate_all();
    assert_eq!(ask(&host, "ledger/p", "notes", json!(null)).await.unwrap(), json!(["poison-1", "fine"]));
}

#[tokio::test]
async fn a_failed_turn_appends_nothing_and_leaves_the_fold_clean() {
    let dir = crate::support::tempdir().unwrap();
    let host = ledger_host(dir.path(), "1000").await;
    ask(&host, "ledger/f", "record", json!({"note": "kept"})).await.unwrap();
    let e = ask(&host, "ledger/f", "fail_after_record", json!({"note": "refused"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    let e = ask(&host, "ledger/f", "trap_after_record", json!({"note": "trapped"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    // The in-memory state did not keep the uncommitted events.
    assert_eq!(ask(&host, "ledger/f", "notes", json!(null)).await.unwrap(), json!(["kept"]));
    assert_eq!(ask(&host, "ledger/f", "version", json!(null)).await.unwrap(), json!(1));
    let page = host.host().journal(&id("ledger/f"), 1, None, 100).await.unwrap();
    assert_eq!(page.events.len(), 1);
    // Event-sourced actors are not re-entrant: a clear error, not a hang.
    let e = ask(&host, "ledger/f", "call_self", json!(null)).await.unwrap_err();
    assert!(e.message.contains("not re-entrant"), "{e}");
}

#[tokio::test]
async fn conflicting_appends_from_two_hosts_fail_instead_of_overwriting() {
    let dir = crate::support::tempdir().unwrap();
    let db = dir.path().join("quark.db");
    let store_a: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let store_b: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let host_a = Node::start(NodeConfig::new(dir.path()), store_a).await.unwrap();
    host_a.host().deploy("ledger", component("ledger"), manifest()).await.unwrap();
    let host_b = Node::start(NodeConfig::new(dir.path()), store_b).await.unwrap();
    // Both hosts activate the same actor at version 1 (the cluster
    // directory prevents this; the version check is the safety net).
    ask(&host_a, "ledger/x", "record", json!({"note": "a1"})).await.unwrap();
    assert_eq!(ask(&host_b, "ledger/x", "notes", json!(null)).await.unwrap(), json!(["a1"]));
    ask(&host_a, "ledger/x", "record", json!({"note": "a2"})).await.unwrap();

    let e = ask(&host_b, "ledger/x", "record", json!({"note": "b-stale"})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains("no longer at version 1"), "{e}");
    // Host B rebuilt from the store and goes on from the real head.
    assert_eq!(ask(&host_b, "ledger/x", "record", json!({"note": "b3"})).await.unwrap(), json!(3));
    let page = host_a.host().journal(&id("ledger/x"), 1, None, 100).await.unwrap();
    let notes: Vec<Value> = page.events.iter().map(|e| serde_json::from_slice::<Value>(&e.data).unwrap()["recorded"]["note"].clone()).collect();
    assert_eq!(notes, [json!("a1"), json!("a2"), json!("b3")]);
}

#[tokio::test]
async fn replay_to_a_version_or_time_in_a_sandbox() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    host.host().deploy("bank", component("bank"), manifest().with_journal(Some("2"), None).unwrap()).await.unwrap();
    for amount in [10, 20, 40] {
        ask(&host, "bank/r", "deposit", json!({"amount": amount})).await.unwrap();
    }
    let page = host.host().journal(&id("bank/r"), 1, None, 10).await.unwrap();
    ask(&host, "bank/r", "withdraw", json!({"amount": 5})).await.unwrap();

    let at2 = host.host().replay(&id("bank/r"), ReplayTarget::Version(2), None).await.unwrap();
    assert_eq!((at2.version, serde_json::from_slice::<Value>(&at2.state).unwrap()), (2, json!({"balance": 30})));
    let at4 = host.host().replay(&id("bank/r"), ReplayTarget::Version(4), None).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&at4.state).unwrap(), json!({"balance": 65}));
    let by_time = host.host().replay(&id("bank/r"), ReplayTarget::At(page.events[0].recorded_at_ms), None).await.unwrap();
    assert!(by_time.version >= 1 && by_time.version <= 3);
    let e = host.host().replay(&id("bank/r"), ReplayTarget::Version(9), None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");

    // Against an older component version, from events only.
    host.host().deploy("bank", component("bank"), manifest().with_journal(Some("3"), None).unwrap()).await.unwrap();
    let old = host.host().replay(&id("bank/r"), ReplayTarget::Version(3), Some(1)).await.unwrap();
    assert_eq!((old.component_version, serde_json::from_slice::<Value>(&old.state).unwrap()), (1, json!({"balance": 70})));
    // The live actor did not move.
    assert_eq!(ask(&host, "bank/r", "balance", json!(null)).await.unwrap(), json!({"balance": 65}));
    assert_eq!(host.host().journal(&id("bank/r"), 1, None, 10).await.unwrap().version, 4);
    let e = host.host().replay(&id("ledger/none"), ReplayTarget::Version(1), None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

async fn wait_caught_up(host: &Node, name: &str) {
    eventually(
        &format!("projection {name} catches up"),
        async || host.projections().list().await.unwrap().iter().any(|p| p.def.name == name && p.lag == 0),
        |caught_up| *caught_up,
    )
    .await;
}

#[tokio::test]
async fn projection_sees_every_event_once_and_catches_up_after_restart() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("bank", "bank"), ("accounts-summary", "accounts-summary")]).await;
    for (account, amount) in [("a", 50), ("b", 20), ("c", 90), ("a", 5)] {
        ask(&host, &format!("bank/{account}"), "deposit", json!({"amount": amount})).await.unwrap();
    }
    // A new projection catches up from the first event.
    let def = quark::storage::ProjectionDef {
        name: "accounts-summary".into(),
        source_type: "bank".into(),
        target: "accounts-summary/all".into(),
        method: "project".into(),
    };
    host.projections().create(def.clone()).await.unwrap();
    wait_caught_up(&host, "accounts-summary").await;
    assert_eq!(ask(&host, "accounts-summary/all", "total", json!(null)).await.unwrap(), json!(165));
    ask(&host, "bank/b", "withdraw", json!({"amount": 15})).await.unwrap();
    wait_caught_up(&host, "accounts-summary").await;
    assert_eq!(ask(&host, "accounts-summary/all", "total", json!(null)).await.unwrap(), json!(150));
    let top = ask(&host, "accounts-summary/all", "top", json!({"n": 2})).await.unwrap();
    assert_eq!(top, json!([{"account": "c", "balance": 90}, {"account": "a", "balance": 55}]));
    assert!(host.metrics_text().contains("quark_projection_lag_events{projection=\"accounts-summary\"} 0"));

    // A restarted host resumes from the committed checkpoint: nothing twice.
    drop(host);
    let host = sqlite_host(dir.path()).await;
    for account in ["a", "d"] {
        ask(&host, &format!("bank/{account}"), "deposit", json!({"amount": 1})).await.unwrap();
    }
    wait_caught_up(&host, "accounts-summary").await;
    assert_eq!(ask(&host, "accounts-summary/all", "total", json!(null)).await.unwrap(), json!(152));
    let listed = host.projections().list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_error.is_none());
    // Declaring it again is a no-op; a bad target is refused.
    host.projections().create(def).await.unwrap();
    let bad = quark::storage::ProjectionDef {
        name: "bad".into(),
        source_type: "bank".into(),
        target: "nosuchtype/x".into(),
        method: "project".into(),
    };
    assert_eq!(host.projections().create(bad).await.unwrap_err().kind, ErrorKind::NotFound);
}

/// Pins the persisted event format and the projection payload: a change
/// here is a change to data already on disk. Regenerate deliberately with
/// `QUARK_UPDATE_GOLDEN=1`.
#[tokio::test]
async fn golden_event_format() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("bank", "bank")]).await;
    ask(&host, "bank/golden", "deposit", json!({"amount": 100})).await.unwrap();
    ask(&host, "bank/golden", "withdraw", json!({"amount": 40})).await.unwrap();
    let mut events = host.host().journal(&id("bank/golden"), 1, None, 10).await.unwrap().events;
    for (i, e) in events.iter_mut().enumerate() {
        // Times and ids differ per run; their shape is what is pinned.
        assert!(e.recorded_at_ms > 1_700_000_000_000);
        assert!(e.correlation_id.chars().all(|c| c.is_ascii_hexdigit()) && e.causation_id.contains('-'));
        e.recorded_at_ms = 1_790_000_000_000 + i as i64;
        e.correlation_id = format!("{:016x}", i + 1);
        e.causation_id = format!("cause-{}", i + 1);
    }
    let stored = serde_json::to_value(&events).unwrap();
    let positioned: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| quark::storage::PositionedEvent { position: i as u64 + 7, actor: "bank/golden".into(), event: e.clone() })
        .collect();
    let delivered: Value = serde_json::from_slice(&quark::projections::projection_payload("summary", &positioned)).unwrap();
    // The table as SQLite holds it: columns, and the body bytes of event 1.
    let db = format!("sqlite://{}", dir.path().join("quark.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db).await.unwrap();
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info('journal') ORDER BY cid").fetch_all(&mut conn).await.unwrap();
    let body: Vec<u8> = sqlx::query_scalar("SELECT data FROM journal WHERE actor = 'bank/golden' AND version = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let sqlite = json!({ "columns": columns, "event_1_data": String::from_utf8(body).unwrap() });
    let actual = json!({ "stored_events": stored, "projection_payload": delivered, "sqlite_journal": sqlite });
    let path = root().join("tests/goldenfiles/journal_events.json");
    if std::env::var("QUARK_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("tests/goldenfiles/journal_events.json")).unwrap();
    assert_eq!(actual, golden, "the persisted event format changed; see tests/goldenfiles/README.md");
    // And the stored format reads back into the same events.
    let back: Vec<quark::storage::EventRecord> = serde_json::from_value(golden["stored_events"].clone()).unwrap();
    assert_eq!(back, events);
}

/// An event-sourced actor whose events are large reactivates within its
/// memory limit: the rebuild hands `apply` batches sized by bytes, not a
/// thousand events at once.
#[tokio::test]
async fn an_actor_with_large_events_reactivates_within_its_memory_limit() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let manifest = manifest_with("8MiB", "10s").with_journal(Some("100000"), None).unwrap();
    host.host().deploy("ledger", component("ledger"), manifest).await.unwrap();
    // 40 events of 256 KiB: 10 MiB of journal, more than the memory limit.
    for _ in 0..10 {
        ask(&host, "ledger/big", "record_big", json!({"bytes": 256 << 10, "count": 4})).await.unwrap();
    }
    host.host().deactivate_all();
    assert_eq!(ask(&host, "ledger/big", "big", json!(null)).await.unwrap(), json!(40), "rebuilt from its 40 events");
}

/// A projection over large events keeps going: its batches are sized to
/// pass the payload limit. An event too large to deliver at all stops it
/// with an error that says so, instead of failing the same way for ever.
#[tokio::test]
async fn a_projection_of_large_events_does_not_stall() {
    use quark::storage::ProjectionDef;
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.max_payload = 256 << 10;
    let host = host_with_config(config).await;
    let manifest = manifest().with_journal(Some("100000"), None).unwrap();
    host.host().deploy("ledger", component("ledger"), manifest).await.unwrap();
    host.host().deploy("misbehave", component("misbehave"), crate::support::manifest()).await.unwrap();
    // 300 events of 8 KiB: a batch of 256 would be 2 MiB, over the limit.
    for _ in 0..30 {
        ask(&host, "ledger/p", "record_big", json!({"bytes": 8 << 10, "count": 10})).await.unwrap();
    }
    let def = |name: &str| ProjectionDef { name: name.into(), source_type: "ledger".into(), target: "misbehave/proj".into(), method: "echo".into() };
    host.projections().create(def("big")).await.unwrap();
    let caught_up = eventually(
        "the projection caught up",
        async || host.projections().list().await.unwrap().into_iter().find(|p| p.def.name == "big").unwrap(),
        |p| p.lag == 0 && p.checkpoint > 0,
    )
    .await;
    assert_eq!(caught_up.last_error, None);

    // One event larger than the limit on its own.
    ask(&host, "ledger/p", "record_big", json!({"bytes": 300 << 10, "count": 1})).await.unwrap();
    let stopped = eventually(
        "the projection reports the event",
        async || host.projections().list().await.unwrap().into_iter().find(|p| p.def.name == "big").unwrap(),
        |p| p.last_error.is_some(),
    )
    .await;
    let error = stopped.last_error.unwrap();
    assert!(error.contains("--max-payload") && error.contains("position"), "{error}");
    assert_eq!(stopped.lag, 1, "stopped at that event, nothing skipped");
}
