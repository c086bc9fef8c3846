//! One set of assertions, run against every storage backend.

use std::sync::Arc;

use quark::storage::sqlite::SqliteStore;
use quark::storage::{
    CheckpointAdvance, EventRecord, JournalAppend, ProjectionDef, Retention, Snapshot, StateWrite, Store, StoreError, TurnCommit,
};
use quark::{Node, NodeConfig};
use serde_json::json;

use crate::support::*;

fn write(key: &str, value: Option<&str>) -> StateWrite {
    StateWrite { key: key.into(), value: value.map(|v| v.as_bytes().to_vec()) }
}

async fn commit_and_load(store: Arc<dyn Store>) {
    let (a, b) = (id("t/a"), id("t/b"));
    assert!(store.load_state(&a).await.unwrap().is_empty());
    let batch = vec![
        TurnCommit::state_only(a.clone(), vec![write("x", Some("1")), write("y", Some("2"))]),
        TurnCommit::state_only(b.clone(), vec![write("x", Some("b"))]),
        // A later turn in the same batch: last write wins, deletes apply.
        TurnCommit::state_only(a.clone(), vec![write("x", Some("3")), write("y", None), write("z", Some("4"))]),
    ];
    store.commit(&batch).await.unwrap();
    let state = store.load_state(&a).await.unwrap();
    assert_eq!(state, vec![("x".into(), b"3".to_vec()), ("z".into(), b"4".to_vec())]);
    assert_eq!(store.load_state(&b).await.unwrap(), vec![("x".into(), b"b".to_vec())]);
    // Binary values and many rows in one batch.
    let many: Vec<TurnCommit> = (0..1500)
        .map(|i| {
            TurnCommit::state_only(id(&format!("t/m{i}")), vec![StateWrite { key: "v".into(), value: Some(vec![0, 255, (i % 256) as u8]) }])
        })
        .collect();
    store.commit(&many).await.unwrap();
    assert_eq!(store.load_state(&id("t/m1499")).await.unwrap(), vec![("v".into(), vec![0, 255, (1499 % 256) as u8])]);
    store.commit(&[TurnCommit::state_only(a.clone(), vec![write("x", None), write("z", None)])]).await.unwrap();
    assert!(store.load_state(&a).await.unwrap().is_empty());
}

async fn component_versions(store: Arc<dyn Store>) {
    let m = manifest();
    assert!(store.active_versions().await.unwrap().is_empty());
    let v1 = store.add_component_version("svc", "h1", b"one", &m).await.unwrap();
    let v2 = store.add_component_version("svc", "h2", b"two", &manifest_with("16MiB", "2s")).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let listed = store.component_versions("svc").await.unwrap();
    assert_eq!(listed, vec![v1.clone(), v2.clone()]);
    assert_eq!(store.active_versions().await.unwrap(), vec![v2.clone()]);
    assert_eq!(store.component_bytes("svc", 1).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.component_bytes("svc", 3).await.unwrap(), None);
    store.set_active_version("svc", 1).await.unwrap();
    assert_eq!(store.active_versions().await.unwrap(), vec![v1]);
    // The same bytes under a new version share one blob.
    let v3 = store.add_component_version("svc", "h1", b"one", &m).await.unwrap();
    assert_eq!(v3.version, 3);
    assert!(store.component_versions("other").await.unwrap().is_empty());
}

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

fn event(version: u64, event_type: &str, at_ms: i64) -> EventRecord {
    EventRecord {
        version,
        event_type: event_type.into(),
        schema_version: 1,
        data: format!("{{\"n\":{version}}}").into_bytes(),
        recorded_at_ms: at_ms,
        correlation_id: "c0ffee".into(),
        causation_id: format!("turn-{version}"),
        caller: version.is_multiple_of(2).then(|| "other/x".to_string()),
        method: "record".into(),
    }
}

fn append(actor: &str, expected: u64, versions: std::ops::RangeInclusive<u64>, state: Vec<StateWrite>) -> TurnCommit {
    TurnCommit {
        journal: Some(JournalAppend { expected_version: expected, events: versions.map(|v| event(v, "recorded", 1000 + v as i64)).collect() }),
        ..TurnCommit::state_only(id(actor), state)
    }
}

async fn journal_append_read_and_conflict(store: Arc<dyn Store>) {
    let (a, b) = (id("j/a"), id("j/b"));
    assert_eq!(store.journal_head(&a).await.unwrap(), 0);
    store.commit(&[append("j/a", 0, 1..=3, vec![write("k", Some("v"))]), append("j/b", 0, 1..=1, vec![])]).await.unwrap();
    store.commit(&[append("j/a", 3, 4..=5, vec![])]).await.unwrap();
    assert_eq!(store.journal_head(&a).await.unwrap(), 5);
    assert_eq!(store.journal_head(&b).await.unwrap(), 1);
    let events = store.read_events(&a, 1, 100).await.unwrap();
    assert_eq!(events, (1..=5).map(|v| event(v, "recorded", 1000 + v as i64)).collect::<Vec<_>>());
    assert_eq!(store.read_events(&a, 4, 1).await.unwrap(), vec![event(4, "recorded", 1004)]);
    assert_eq!(store.version_at(&a, 1003).await.unwrap(), 3);
    assert_eq!(store.version_at(&a, 999).await.unwrap(), 0);

    // A stale writer (expects 3, or a new stream at 0) conflicts, and its
    // whole batch (state included) is not written.
    for stale in [append("j/a", 3, 4..=4, vec![write("k", Some("lost"))]), append("j/a", 0, 1..=1, vec![write("k", Some("lost"))])] {
        let err = store.commit(&[stale, append("j/c", 0, 1..=1, vec![])]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }
    assert_eq!(store.journal_head(&a).await.unwrap(), 5);
    assert_eq!(store.journal_head(&id("j/c")).await.unwrap(), 0);
    assert_eq!(store.load_state(&a).await.unwrap(), vec![("k".into(), b"v".to_vec())]);
    // Pipelined turns of one actor in one batch follow each other.
    store.commit(&[append("j/p", 0, 1..=2, vec![]), append("j/p", 2, 3..=3, vec![]), append("j/p", 3, 4..=5, vec![])]).await.unwrap();
    assert_eq!(store.journal_head(&id("j/p")).await.unwrap(), 5);
    assert_eq!(store.read_events(&id("j/p"), 1, 100).await.unwrap().len(), 5);
    let gap = store.commit(&[append("j/p", 5, 6..=6, vec![]), append("j/p", 7, 8..=8, vec![])]).await.unwrap_err();
    assert!(matches!(gap, StoreError::Conflict(_)), "{gap}");
    assert_eq!(store.journal_head(&id("j/p")).await.unwrap(), 5);
    // Alone, the conflict names the actor.
    let err = store.commit(&[append("j/a", 2, 3..=3, vec![])]).await.unwrap_err();
    assert!(err.to_string().contains("j/a") && err.to_string().contains("version 2"), "{err}");
}

async fn snapshots_and_retention(store: Arc<dyn Store>) {
    let a = id("s/a");
    store.commit(&[append("s/a", 0, 1..=10, vec![])]).await.unwrap();
    assert_eq!(store.latest_snapshot(&a, u64::MAX).await.unwrap(), None);
    let snap = |version: u64| Snapshot { version, component_version: 1, taken_at_ms: 5, data: format!("state@{version}").into_bytes() };
    store.save_snapshot(&a, &snap(4), Retention::Keep).await.unwrap();
    store.save_snapshot(&a, &snap(8), Retention::Keep).await.unwrap();
    assert_eq!(store.latest_snapshot(&a, u64::MAX).await.unwrap(), Some(snap(8)));
    assert_eq!(store.latest_snapshot(&a, 7).await.unwrap(), Some(snap(4)));
    assert_eq!(store.latest_snapshot(&a, 3).await.unwrap(), None);
    assert_eq!(store.read_events(&a, 1, 100).await.unwrap().len(), 10);

    // Archive: out of the live journal, still in the audit trail.
    store.save_snapshot(&a, &snap(8), Retention::Archive).await.unwrap();
    assert_eq!(store.read_events(&a, 1, 100).await.unwrap().len(), 10);
    assert_eq!(store.read_type_events("s", 0, 100).await.unwrap().len(), 10, "projections read archived events too");

    // Delete: gone, except what a lagging projection still has to read.
    let b = id("s/b");
    store.commit(&[append("s/b", 0, 1..=6, vec![])]).await.unwrap();
    let def = ProjectionDef { name: "lagging".into(), source_type: "s".into(), target: "p/x".into(), method: "project".into() };
    assert!(store.create_projection(&def).await.unwrap());
    store.save_snapshot(&b, &snap(6), Retention::Delete).await.unwrap();
    assert_eq!(store.read_events(&b, 1, 100).await.unwrap().len(), 6, "a projection at 0 keeps every event");
    store.delete_projection("lagging").await.unwrap();
    store.save_snapshot(&b, &snap(6), Retention::Delete).await.unwrap();
    assert!(store.read_events(&b, 1, 100).await.unwrap().is_empty());
    assert_eq!(store.journal_head(&b).await.unwrap(), 6, "the head survives retention");
    // A stale append at a deleted version is still a conflict.
    assert!(matches!(store.commit(&[append("s/b", 3, 4..=4, vec![])]).await, Err(StoreError::Conflict(_))));
}

async fn projections_and_checkpoints(store: Arc<dyn Store>) {
    let def = ProjectionDef { name: "summary".into(), source_type: "acct".into(), target: "sum/all".into(), method: "project".into() };
    assert!(store.create_projection(&def).await.unwrap());
    assert!(!store.create_projection(&def).await.unwrap(), "the same definition again is a no-op");
    let other = ProjectionDef { target: "sum/other".into(), ..def.clone() };
    assert!(matches!(store.create_projection(&other).await, Err(StoreError::Rejected(_))));

    store.commit(&[append("acct/a", 0, 1..=2, vec![]), append("other/z", 0, 1..=1, vec![]), append("acct/b", 0, 1..=1, vec![])]).await.unwrap();
    store.commit(&[append("acct/a", 2, 3..=3, vec![])]).await.unwrap();
    let events = store.read_type_events("acct", 0, 100).await.unwrap();
    let seen: Vec<(String, u64)> = events.iter().map(|e| (e.actor.clone(), e.event.version)).collect();
    assert_eq!(seen, vec![("acct/a".into(), 1), ("acct/a".into(), 2), ("acct/b".into(), 1), ("acct/a".into(), 3)]);
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.count_type_events("acct", 0).await.unwrap(), 4);

    // The checkpoint moves with the projection actor's state, atomically.
    let to = events[1].position;
    let advance = |from: u64, to: u64, value: &str| TurnCommit {
        checkpoint: Some(CheckpointAdvance { projection: "summary".into(), from, to }),
        ..TurnCommit::state_only(id("sum/all"), vec![write("total", Some(value))])
    };
    store.commit(&[advance(0, to, "2")]).await.unwrap();
    assert_eq!(store.projections().await.unwrap()[0].checkpoint, to);
    assert_eq!(store.count_type_events("acct", to).await.unwrap(), 2);
    assert_eq!(store.read_type_events("acct", to, 100).await.unwrap().len(), 2);
    // A second runner at the old checkpoint conflicts and writes nothing.
    assert!(matches!(store.commit(&[advance(0, to, "stale")]).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.load_state(&id("sum/all")).await.unwrap(), vec![("total".into(), b"2".to_vec())]);
    assert!(store.delete_projection("summary").await.unwrap());
    assert!(!store.delete_projection("summary").await.unwrap());
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

fn job(id: &str, run_at_ms: i64, priority: i32) -> quark::storage::jobs::JobRecord {
    let request = quark::jobs::JobSpec {
        target: "w/a".into(),
        method: "work".into(),
        payload: json!({"n": 1}),
        run_at: Some(json!(run_at_ms)),
        delay_ms: None,
        cron: None,
        time_zone: None,
        max_attempts: Some(3),
        backoff_ms: None,
        max_backoff_ms: None,
        timeout_ms: None,
        priority: Some(priority),
        queue: None,
        idempotency_key: None,
        catch_up: None,
    }
    .into_request()
    .unwrap();
    let mut job = quark::jobs::plan(request, quark::storage::now_ms()).unwrap();
    job.id = id.into();
    job
}

/// Claims, leases, completion in the turn's commit, failures, cancel,
/// retry, purge. Backends without a job store say so and pass.
async fn jobs_claim_lease_and_complete(store: Arc<dyn Store>) {
    use quark::storage::jobs::{ClaimFilter, JobCompletion, JobFailure, JobStatus};
    let Some(jobs) = store.job_store() else {
        eprintln!("note: the {} store has no durable jobs yet", store.backend_name());
        return;
    };
    let now = quark::storage::now_ms();
    assert_eq!(jobs.add_jobs(&[job("low", now - 10, 0), job("high", now - 5, 5), job("later", now + 3_600_000, 9)]).await.unwrap(), 3);
    assert_eq!(jobs.add_jobs(&[job("low", now, 0)]).await.unwrap(), 0, "an existing id is left as it is");
    assert_eq!(jobs.next_job_due().await.unwrap(), Some(now - 10));
    let claims = jobs.claim_jobs(now, 10, 1000, &ClaimFilter::default(), &[]).await.unwrap();
    let ids: Vec<&str> = claims.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, ["high", "low"], "due jobs only, highest priority first");
    assert!(claims.iter().all(|c| c.job.status == JobStatus::Running && c.job.attempts == 1));
    assert!(jobs.claim_jobs(now, 10, 1000, &ClaimFilter::default(), &[]).await.unwrap().is_empty(), "leased jobs stay leased");
    let filter = ClaimFilter { full_queues: vec!["default".into()], ..ClaimFilter::default() };
    assert!(jobs.claim_jobs(now + 10_000, 10, 1000, &filter, &[]).await.unwrap().is_empty(), "a full queue is skipped");

    // Completion commits with the turn, once, and only under its lease.
    let (high, low) = (&claims[0], &claims[1]);
    let complete = |job_id: &str, lease: &str| TurnCommit {
        job_done: Some(JobCompletion { id: job_id.into(), lease: lease.into(), next_run_at_ms: None }),
        ..TurnCommit::state_only(id("w/a"), vec![write("done", Some(job_id))])
    };
    store.commit(&[complete("high", &high.lease)]).await.unwrap();
    assert_eq!(jobs.job("high").await.unwrap().unwrap().status, JobStatus::Succeeded);
    assert!(matches!(store.commit(&[complete("high", &high.lease)]).await, Err(StoreError::Conflict(_))));
    jobs.set_job_progress("low", &low.lease, 40, "working").await.unwrap();

    // A failure waits for its retry; a lapsed lease is taken over.
    let failure = JobFailure { id: "low".into(), lease: low.lease.clone(), error: "boom".into(), retry_at_ms: Some(now - 1) };
    assert!(jobs.fail_job(&failure).await.unwrap());
    let failed = jobs.job("low").await.unwrap().unwrap();
    assert_eq!((failed.status, failed.errors.len(), failed.progress), (JobStatus::Failed, 1, Some(40)));
    let again = jobs.claim_jobs(now, 10, 1000, &ClaimFilter::default(), &[]).await.unwrap();
    assert_eq!((again.len(), again[0].job.attempts), (1, 2));
    let skip_expired = ClaimFilter { skip_expired: true, ..ClaimFilter::default() };
    assert!(jobs.claim_jobs(now + 2_000, 10, 1000, &skip_expired, &[]).await.unwrap().is_empty(), "expired leases only when asked");
    let taken_over = jobs.claim_jobs(now + 2_000, 10, 1000, &ClaimFilter::default(), &[]).await.unwrap();
    assert_eq!(taken_over.len(), 1, "an expired lease is claimable");
    assert_ne!(taken_over[0].lease, again[0].lease);
    assert!(matches!(store.commit(&[complete("low", &again[0].lease)]).await, Err(StoreError::Conflict(_))));
    assert!(!jobs.fail_job(&JobFailure { lease: again[0].lease.clone(), ..failure.clone() }).await.unwrap());
    let dead = JobFailure { lease: taken_over[0].lease.clone(), retry_at_ms: None, ..failure };
    assert!(jobs.fail_job(&dead).await.unwrap());
    assert_eq!(jobs.job("low").await.unwrap().unwrap().status, JobStatus::Dead);

    assert!(jobs.retry_job("low", now).await.unwrap());
    assert!(jobs.cancel_job("low").await.unwrap());
    assert!(!jobs.cancel_job("low").await.unwrap());
    assert_eq!(jobs.jobs(Some(JobStatus::Cancelled), None, 10).await.unwrap().len(), 1);
    assert_eq!(jobs.jobs(None, Some("w/a"), 10).await.unwrap().len(), 3);
    // Retention: only jobs that finished before the cut are forgotten.
    let finished_at = jobs.job("high").await.unwrap().unwrap().updated_at_ms;
    assert_eq!(jobs.purge_jobs(JobStatus::Succeeded, Some(finished_at)).await.unwrap(), 0, "finished at the cut, not before it");
    assert_eq!(jobs.purge_jobs(JobStatus::Succeeded, Some(finished_at + 1)).await.unwrap(), 1);
    assert!(jobs.job("high").await.unwrap().is_none());
    assert_eq!(jobs.purge_jobs(JobStatus::Cancelled, Some(0)).await.unwrap(), 0);
    assert_eq!(jobs.purge_jobs(JobStatus::Cancelled, None).await.unwrap(), 1);

    // Two claimers at once never take the same job.
    let many: Vec<_> = (0..200).map(|i| job(&format!("m{i}"), now - 1, 0)).collect();
    jobs.add_jobs(&many).await.unwrap();
    let no_filter = ClaimFilter::default();
    let (a, b) = tokio::join!(jobs.claim_jobs(now, 150, 60_000, &no_filter, &[]), jobs.claim_jobs(now, 150, 60_000, &no_filter, &[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut claimed: Vec<String> = a.iter().chain(b.iter()).map(|c| c.job.id.clone()).collect();
    let total = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!((total, claimed.len()), (200, 200), "every due job claimed once");

    // Runs without effects end in the next claim's write, under their lease.
    let done = |c: &quark::storage::jobs::JobClaim, lease: &str| JobCompletion { id: c.job.id.clone(), lease: lease.into(), next_run_at_ms: None };
    let completed = [done(&a[0], &a[0].lease), done(&a[1], &a[1].lease), done(&a[2], "a lapsed lease")];
    assert!(jobs.claim_jobs(now, 10, 60_000, &no_filter, &completed).await.unwrap().is_empty());
    let status = |id: String| async move { jobs.job(&id).await.unwrap().unwrap().status };
    assert_eq!(status(a[0].job.id.clone()).await, JobStatus::Succeeded);
    assert_eq!(status(a[1].job.id.clone()).await, JobStatus::Succeeded);
    assert_eq!(status(a[2].job.id.clone()).await, JobStatus::Running, "a run that lost its lease does not end the job");
}

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
async fn job_completions_match_each_lease(store: Arc<dyn Store>) {
    use quark::storage::jobs::{ClaimFilter, JobCompletion, JobStatus};
    let Some(jobs) = store.job_store() else { return };
    let now = quark::storage::now_ms();
    jobs.add_jobs(&[job("p1", now - 10, 0), job("p2", now - 10, 0)]).await.unwrap();
    let claims = jobs.claim_jobs(now, 10, 60_000, &ClaimFilter::default(), &[]).await.unwrap();
    assert_eq!(claims.len(), 2);
    let lease = claims[0].lease.clone();
    assert_eq!(claims[1].lease, lease, "one claim, one lease");
    let complete = |job_id: &str, lease: &str| TurnCommit {
        job_done: Some(JobCompletion { id: job_id.into(), lease: lease.into(), next_run_at_ms: None }),
        ..TurnCommit::state_only(id("w/a"), vec![write(job_id, Some("done"))])
    };
    let stale = store.commit(&[complete("p1", "a-stale-lease"), complete("p2", &lease)]).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    for job_id in ["p1", "p2"] {
        assert_eq!(jobs.job(job_id).await.unwrap().unwrap().status, JobStatus::Running, "{job_id}: nothing of the batch landed");
    }
    store.commit(&[complete("p1", &lease), complete("p2", &lease)]).await.unwrap();
    assert_eq!(jobs.job("p1").await.unwrap().unwrap().status, JobStatus::Succeeded);
}

/// The inbox: an entry commits with its turn, a second one for the same
/// message fails the commit (nothing of it lands), and entries expire.
async fn inbox_dedup_and_expiry(store: Arc<dyn Store>) {
    use quark::storage::InboxEntry;
    let handled = |key: &str, value: &str, at_ms: i64| TurnCommit {
        inbox: Some(InboxEntry { sender: "c/s".into(), message_id: "m1".into(), reply: value.as_bytes().to_vec(), at_ms }),
        ..TurnCommit::state_only(id("c/a"), vec![write(key, Some(value))])
    };
    assert_eq!(store.inbox_reply(&id("c/a"), "c/s", "m1").await.unwrap(), None);
    store.commit(&[handled("k", "first", 1_000)]).await.unwrap();
    assert_eq!(store.inbox_reply(&id("c/a"), "c/s", "m1").await.unwrap(), Some(b"first".to_vec()));
    assert_eq!(store.inbox_reply(&id("c/b"), "c/s", "m1").await.unwrap(), None, "inboxes are per actor");
    assert_eq!(store.inbox_reply(&id("c/a"), "c/t", "m1").await.unwrap(), None, "ids are per sender");
    assert_eq!(store.inbox_reply(&id("c/a"), "", "m1").await.unwrap(), None, "HTTP keys are their own namespace");
    let again = store.commit(&[handled("k2", "second", 2_000)]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.load_state(&id("c/a")).await.unwrap(), vec![("k".to_string(), b"first".to_vec())], "the repeat wrote nothing");
    assert_eq!(store.expire_inbox(1_000).await.unwrap(), 0, "not older than the bound");
    // The same id from another sender, and as an HTTP key: other messages.
    let other = |sender: &str, key: &str| TurnCommit {
        inbox: Some(InboxEntry { sender: sender.into(), message_id: "m1".into(), reply: b"other".to_vec(), at_ms: 20_000 }),
        ..TurnCommit::state_only(id("c/a"), vec![write(key, Some("x"))])
    };
    store.commit(&[other("c/t", "k3"), other("", "k4")]).await.unwrap();
    assert_eq!(store.inbox_reply(&id("c/a"), "", "m1").await.unwrap(), Some(b"other".to_vec()));
    assert_eq!(store.expire_inbox(1_001).await.unwrap(), 1);
    assert_eq!(store.inbox_reply(&id("c/a"), "c/s", "m1").await.unwrap(), None);
    assert_eq!(store.inbox_reply(&id("c/a"), "c/t", "m1").await.unwrap(), Some(b"other".to_vec()), "only the expired entry went");

    // An entry whose message is still in the outbox outlives the window.
    if store.outbox_store().is_some() {
        use quark::storage::outbox::{Destination, OutboxMessage};
        let in_flight = OutboxMessage {
            id: "m2".into(),
            sender: "c/z".into(),
            destination: Destination::Actor { actor: "c/a".into(), method: "m".into() },
            payload: b"{}".to_vec(),
            event_type: None,
            created_at_ms: 500,
        };
        store.commit(&[TurnCommit { messages: vec![in_flight], ..TurnCommit::state_only(id("c/z"), vec![]) }]).await.unwrap();
        let handled = TurnCommit {
            inbox: Some(InboxEntry { sender: "c/z".into(), message_id: "m2".into(), reply: b"ok".to_vec(), at_ms: 600 }),
            ..TurnCommit::state_only(id("c/a"), vec![])
        };
        store.commit(&[handled]).await.unwrap();
        assert_eq!(store.expire_inbox(10_000).await.unwrap(), 0);
        assert_eq!(store.inbox_reply(&id("c/a"), "c/z", "m2").await.unwrap(), Some(b"ok".to_vec()), "kept for a possible redelivery");
    }
}

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
async fn outbox_lanes_claim_fail_retry(store: Arc<dyn Store>) {
    use quark::storage::outbox::{Destination, LaneRelease, OutboxMessage};
    let Some(outbox) = store.outbox_store() else {
        eprintln!("note: the {} store has no outbox yet", store.backend_name());
        return;
    };
    let message = |id: &str, to: &str| OutboxMessage {
        id: id.into(),
        sender: "c/a".into(),
        destination: Destination::Actor { actor: to.into(), method: "m".into() },
        payload: b"{}".to_vec(),
        event_type: None,
        created_at_ms: 1_000,
    };
    let sent = TurnCommit {
        messages: vec![message("m1", "c/b"), message("m2", "c/b"), message("m3", "c/b"), message("n1", "c/c")],
        ..TurnCommit::state_only(id("c/a"), vec![])
    };
    store.commit(std::slice::from_ref(&sent)).await.unwrap();
    store.commit(&[sent]).await.unwrap(); // the same ids again: not sent twice
    assert_eq!(outbox.next_message_due().await.unwrap(), Some(1_000));
    let lanes = outbox.claim_lanes(2_000, 10, 2, 60_000, &[], &[]).await.unwrap();
    let ids = |l: &quark::storage::outbox::LaneClaim| l.messages.iter().map(|m| m.message.id.clone()).collect::<Vec<_>>();
    let mut got: Vec<Vec<String>> = lanes.iter().map(ids).collect();
    got.sort();
    assert_eq!(got, [vec!["m1".to_string(), "m2".into()], vec!["n1".into()]], "whole lanes, in order, at most 2 each");
    assert!(lanes.iter().all(|l| !l.taken_over));
    assert!(outbox.claim_lanes(2_000, 10, 2, 60_000, &[], &[]).await.unwrap().is_empty(), "leased lanes stay leased");

    // m1 fails: its lane waits for the retry; n1 is delivered.
    let b = lanes.iter().find(|l| l.messages.len() == 2).unwrap().clone();
    let c = lanes.iter().find(|l| l.messages.len() == 1).unwrap().clone();
    outbox.fail_message("c/a\nm1", "boom", Some(5_000)).await.unwrap();
    let release = |l: &quark::storage::outbox::LaneClaim, next| LaneRelease { lane: l.lane.clone(), lease: l.lease.clone(), next_at_ms: next };
    let none = outbox.claim_lanes(3_000, 10, 2, 60_000, &["c/a\nn1".into()], &[release(&b, Some(5_000)), release(&c, None)]).await.unwrap();
    assert!(none.is_empty(), "the failed lane waits, the delivered one is empty");
    let again = outbox.claim_lanes(5_000, 10, 2, 60_000, &[], &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(ids(&again[0]), ["m1", "m2"]);
    assert_eq!((again[0].messages[0].attempts, again[0].messages[0].last_error.as_deref()), (1, Some("boom")));

    // m1 dies: the lane moves on to m2 and m3.
    outbox.fail_message("c/a\nm1", "boom again", None).await.unwrap();
    let next = outbox.claim_lanes(6_000, 10, 5, 60_000, &[], &[release(&again[0], None)]).await.unwrap();
    assert_eq!(ids(&next[0]), ["m2", "m3"]);
    let dead = outbox.messages(Some("dead"), 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].attempts), (1, 2));

    // Its lease expires: the next claim takes it over.
    let taken = outbox.claim_lanes(6_000 + 60_001, 10, 5, 60_000, &[], &[]).await.unwrap();
    assert_eq!((taken.len(), taken[0].taken_over), (1, true));
    assert!(outbox.claim_lanes(6_000 + 60_002, 10, 5, 60_000, &["c/a\nm2".into(), "c/a\nm3".into()], &[release(&next[0], None)]).await.unwrap().is_empty(), "a stale lease releases nothing");
    assert_eq!(outbox.messages(Some("pending"), 10).await.unwrap().len(), 0);

    assert_eq!(outbox.retry_message("m1", Some("c/other"), 7_000).await.unwrap(), 0, "ids are per sender");
    assert_eq!(outbox.retry_message("m1", Some("c/a"), 7_000).await.unwrap(), 1);
    assert_eq!(outbox.retry_message("m1", None, 7_000).await.unwrap(), 0, "only a dead message is retried");
    let revived = outbox.claim_lanes(200_000, 10, 5, 60_000, &[], &[release(&taken[0], None)]).await.unwrap();
    assert_eq!(ids(&revived[0]), ["m1"]);
    outbox.fail_message("c/a\nm1", "still broken", None).await.unwrap();
    assert_eq!(outbox.purge_dead_messages().await.unwrap(), 1);
    assert!(outbox.messages(None, 10).await.unwrap().is_empty());
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = crate::support::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("quark.db")).await.unwrap();
                    super::$case(super::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = crate::support::postgres_store(concat!("postgres::", stringify!($case))).await else { return };
                    super::$case(super::Arc::new(store)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = crate::support::redis_store(concat!("redis::", stringify!($case))).await else { return };
                    super::$case(super::Arc::new(store)).await;
                }
            )*
        }
    };
}

/// Lanes a commit opens are leased to the store's host in that commit and
/// handed over without a claim (where the store does it); messages added
/// to a lane that exists are handed over with that lane's lease (for its
/// delivery to take, if it runs on this host), and stay in the store, in
/// order behind it, for a claim otherwise.
async fn outbox_new_lanes_skip_the_claim(store: Arc<dyn Store>) {
    use quark::storage::outbox::{Destination, LaneRelease, OutboxMessage};
    let Some(outbox) = store.outbox_store() else { return };
    if !outbox.deliver_new_lanes_here() {
        eprintln!("note: the {} store claims every lane", store.backend_name());
        return;
    }
    let send = async |ids: &[&str]| {
        let messages = ids
            .iter()
            .map(|id| OutboxMessage {
                id: id.to_string(),
                sender: "c/n".into(),
                destination: Destination::Actor { actor: "c/b".into(), method: "m".into() },
                payload: b"{}".to_vec(),
                event_type: None,
                created_at_ms: quark::storage::now_ms(),
            })
            .collect();
        store.commit(&[TurnCommit { messages, ..TurnCommit::state_only(id("c/n"), vec![]) }]).await.unwrap();
    };
    let ids = |l: &quark::storage::outbox::LaneClaim| l.messages.iter().map(|m| m.message.id.clone()).collect::<Vec<_>>();
    let now = quark::storage::now_ms;

    send(&["x1", "x2"]).await;
    let (lanes, added) = outbox.take_new_lanes();
    assert_eq!((lanes.len(), added.len()), (1, 0), "one new lane, nothing added to another");
    assert_eq!(ids(&lanes[0]), ["x1", "x2"]);
    assert!(!lanes[0].taken_over && lanes[0].messages.iter().all(|m| m.attempts == 0));
    assert!(outbox.claim_lanes(now(), 10, 10, 60_000, &[], &[]).await.unwrap().is_empty(), "the new lane is leased already");

    // More for the same lane while it is out: added under its lease (x1,
    // still pending, is not sent again), not a new lane.
    send(&["x3", "x1"]).await;
    let (more, added) = outbox.take_new_lanes();
    assert!(more.is_empty());
    assert_eq!(added.len(), 1);
    assert_eq!((added[0].lane.as_str(), added[0].lease.as_str(), ids(&added[0])), (lanes[0].lane.as_str(), lanes[0].lease.as_str(), vec!["x3".to_string()]));
    let release = |l: &quark::storage::outbox::LaneClaim| LaneRelease { lane: l.lane.clone(), lease: l.lease.clone(), next_at_ms: None };
    let next = outbox.claim_lanes(now(), 10, 10, 60_000, &["c/n\nx1".into(), "c/n\nx2".into()], &[release(&lanes[0])]).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(ids(&next[0]), ["x3"], "behind the first two; x1 was not sent again while pending");

    // Once the lane is empty and gone, the next message opens a new one.
    assert!(outbox.claim_lanes(now(), 10, 10, 60_000, &["c/n\nx3".into()], &[release(&next[0])]).await.unwrap().is_empty());
    send(&["x4"]).await;
    let (lanes, added) = outbox.take_new_lanes();
    assert_eq!((lanes.len(), added.len()), (1, 0));
    assert_eq!(ids(&lanes[0]), ["x4"]);
    // A host that dies holding it: after the lease the lane is taken over.
    let taken = outbox.claim_lanes(now() + 31_000, 10, 10, 60_000, &[], &[]).await.unwrap();
    assert_eq!((taken.len(), taken[0].taken_over), (1, true));
    assert_eq!(ids(&taken[0]), ["x4"]);
}

conformance!(
    commit_and_load,
    component_versions,
    host_turns_commit_and_reload,
    journal_append_read_and_conflict,
    snapshots_and_retention,
    projections_and_checkpoints,
    host_event_sourcing,
    jobs_claim_lease_and_complete,
    host_jobs,
    job_completions_match_each_lease,
    inbox_dedup_and_expiry,
    host_idempotent_asks,
    host_outbox_delivery,
    host_message_ids_are_per_sender,
    outbox_lanes_claim_fail_retry,
    outbox_new_lanes_skip_the_claim,
);
