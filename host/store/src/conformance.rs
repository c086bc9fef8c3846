//! The storage conformance suite, as a kit: every check a backend must
//! pass, each an async function that panics (with the assertion) when the
//! store under test breaks the contract. Quark's own tests run it on
//! SQLite, PostgreSQL and Redis (`tests/all/storage_conformance.rs`); a new
//! backend runs the same checks on a fresh, empty store each:
//!
//! ```ignore
//! #[tokio::test]
//! async fn commit_and_load() {
//!     quark_store::conformance::commit_and_load(Arc::new(MyStore::open().await)).await;
//! }
//! ```
//!
//! Every `pub async fn` here is a check. Each uses actor types and ids of
//! its own, but expects a store that holds nothing else.

use std::sync::Arc;

use quark_core::id::ActorId;
use serde_json::json;

use crate::{
    CheckpointAdvance, EventRecord, JournalAppend, Manifest, ProjectionDef, Retention, Snapshot, StateWrite, Store, StoreError, TurnCommit,
};

fn id(s: &str) -> ActorId {
    ActorId::parse(s).unwrap()
}

fn manifest() -> Manifest {
    Manifest::parse(None, None).unwrap()
}

fn manifest_with(memory: &str, timeout: &str) -> Manifest {
    Manifest::parse(Some(memory), Some(timeout)).unwrap()
}

fn write(key: &str, value: Option<&str>) -> StateWrite {
    StateWrite { key: key.into(), value: value.map(|v| v.as_bytes().to_vec()) }
}

/// Conformance check `commit_and_load`.
pub async fn commit_and_load(store: Arc<dyn Store>) {
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

/// Conformance check `component_versions`.
pub async fn component_versions(store: Arc<dyn Store>) {
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

/// Conformance check `journal_append_read_and_conflict`.
pub async fn journal_append_read_and_conflict(store: Arc<dyn Store>) {
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

/// Conformance check `snapshots_and_retention`.
pub async fn snapshots_and_retention(store: Arc<dyn Store>) {
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

/// Conformance check `projections_and_checkpoints`.
pub async fn projections_and_checkpoints(store: Arc<dyn Store>) {
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

fn job(id: &str, run_at_ms: i64, priority: i32) -> crate::jobs::JobRecord {
    let request = crate::jobs::JobSpec {
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
    let mut job = crate::jobs::plan(request, crate::now_ms()).unwrap();
    job.id = id.into();
    job
}

/// Conformance check `jobs_claim_lease_and_complete`.
pub async fn jobs_claim_lease_and_complete(store: Arc<dyn Store>) {
    use crate::jobs::{ClaimFilter, JobCompletion, JobFailure, JobStatus};
    let Some(jobs) = store.job_store() else {
        eprintln!("note: the {} store has no durable jobs yet", store.backend_name());
        return;
    };
    let now = crate::now_ms();
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
    let done = |c: &crate::jobs::JobClaim, lease: &str| JobCompletion { id: c.job.id.clone(), lease: lease.into(), next_run_at_ms: None };
    let completed = [done(&a[0], &a[0].lease), done(&a[1], &a[1].lease), done(&a[2], "a lapsed lease")];
    assert!(jobs.claim_jobs(now, 10, 60_000, &no_filter, &completed).await.unwrap().is_empty());
    let status = |id: String| async move { jobs.job(&id).await.unwrap().unwrap().status };
    assert_eq!(status(a[0].job.id.clone()).await, JobStatus::Succeeded);
    assert_eq!(status(a[1].job.id.clone()).await, JobStatus::Succeeded);
    assert_eq!(status(a[2].job.id.clone()).await, JobStatus::Running, "a run that lost its lease does not end the job");
}

/// Conformance check `job_completions_match_each_lease`.
pub async fn job_completions_match_each_lease(store: Arc<dyn Store>) {
    use crate::jobs::{ClaimFilter, JobCompletion, JobStatus};
    let Some(jobs) = store.job_store() else { return };
    let now = crate::now_ms();
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

/// Conformance check `inbox_dedup_and_expiry`.
pub async fn inbox_dedup_and_expiry(store: Arc<dyn Store>) {
    use crate::InboxEntry;
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
        use crate::outbox::{Destination, OutboxMessage};
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

/// Conformance check `outbox_lanes_claim_fail_retry`.
pub async fn outbox_lanes_claim_fail_retry(store: Arc<dyn Store>) {
    use crate::outbox::{Destination, LaneRelease, OutboxMessage};
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
    let ids = |l: &crate::outbox::LaneClaim| l.messages.iter().map(|m| m.message.id.clone()).collect::<Vec<_>>();
    let mut got: Vec<Vec<String>> = lanes.iter().map(ids).collect();
    got.sort();
    assert_eq!(got, [vec!["m1".to_string(), "m2".into()], vec!["n1".into()]], "whole lanes, in order, at most 2 each");
    assert!(lanes.iter().all(|l| !l.taken_over));
    assert!(outbox.claim_lanes(2_000, 10, 2, 60_000, &[], &[]).await.unwrap().is_empty(), "leased lanes stay leased");

    // m1 fails: its lane waits for the retry; n1 is delivered.
    let b = lanes.iter().find(|l| l.messages.len() == 2).unwrap().clone();
    let c = lanes.iter().find(|l| l.messages.len() == 1).unwrap().clone();
    outbox.fail_message("c/a\nm1", "boom", Some(5_000)).await.unwrap();
    let release = |l: &crate::outbox::LaneClaim, next| LaneRelease { lane: l.lane.clone(), lease: l.lease.clone(), next_at_ms: next };
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

/// Conformance check `outbox_new_lanes_skip_the_claim`.
pub async fn outbox_new_lanes_skip_the_claim(store: Arc<dyn Store>) {
    use crate::outbox::{Destination, LaneRelease, OutboxMessage};
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
                created_at_ms: crate::now_ms(),
            })
            .collect();
        store.commit(&[TurnCommit { messages, ..TurnCommit::state_only(id("c/n"), vec![]) }]).await.unwrap();
    };
    let ids = |l: &crate::outbox::LaneClaim| l.messages.iter().map(|m| m.message.id.clone()).collect::<Vec<_>>();
    let now = crate::now_ms;

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
    let release = |l: &crate::outbox::LaneClaim| LaneRelease { lane: l.lane.clone(), lease: l.lease.clone(), next_at_ms: None };
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

/// Membership and the actor directory (stores that can be shared by a
/// cluster): joins, leases, claims that move an actor only from a host
/// that is not alive, fences that refuse a commit from a host that lost
/// its actor (writing nothing), reaping, leaving, releasing.
pub async fn cluster_membership_and_directory(store: Arc<dyn Store>) {
    use crate::cluster::{HostInfo, HostLoad, MemberState};
    let load = |activations: u64| HostLoad { activations, memory_budget: 1 << 30, memory_reserved: 64 << 20, memory_used: 3 << 20, rss: 40 << 20, shed: 2, refused: 1, migrated: 3 };
    let Some(cluster) = store.cluster_store() else { return };
    let host = |id: &str| HostInfo { id: id.into(), api: format!("127.0.0.1:1{id}"), peer: format!("127.0.0.1:2{id}") };
    let (h1, h2) = (host("1"), host("2"));
    let i1 = cluster.join(&h1, 60_000).await.unwrap();
    assert!(matches!(cluster.join(&h1, 60_000).await, Err(StoreError::Conflict(_))), "a live member's id is taken");
    let i2 = cluster.join(&h2, 60_000).await.unwrap();
    assert!(i2 > i1);
    cluster.heartbeat("1", i1, MemberState::Active, 60_000, &load(7)).await.unwrap();
    let members = cluster.members().await.unwrap();
    assert_eq!(members.iter().map(|m| (m.host.id.as_str(), m.effective_state())).collect::<Vec<_>>(), [("1", MemberState::Active), ("2", MemberState::Joining)]);
    assert_eq!((members[0].host.clone(), members[0].load), (h1.clone(), load(7)));
    assert_eq!(members[1].load, HostLoad::default(), "a member that has not beaten yet reports nothing");
    assert!(members.iter().all(|m| m.is_alive()));

    // A claim moves an actor only from a host that is not alive.
    let a = id("reg/a");
    assert_eq!(cluster.owner(&a).await.unwrap(), None);
    let first = cluster.claim(&a, "1", i1).await.unwrap();
    assert_eq!((first.host.as_str(), first.incarnation), ("1", i1));
    assert_eq!(cluster.claim(&a, "2", i2).await.unwrap(), first, "a live owner keeps its actor");
    assert_eq!(cluster.claim(&a, "1", i1).await.unwrap(), first, "claiming again keeps the epoch");
    assert_eq!(cluster.owner(&a).await.unwrap(), Some(first.clone()));

    // Commits carry the epoch; a wrong one writes nothing.
    let fenced = |epoch: u64, value: &str| TurnCommit { fence: Some(epoch), ..TurnCommit::state_only(a.clone(), vec![write("v", Some(value))]) };
    store.commit(&[fenced(first.epoch, "0")]).await.unwrap();
    // Pipelined turns of one actor share a batch, each with the fence.
    store.commit(&[fenced(first.epoch, "0"), fenced(first.epoch, "1")]).await.unwrap();
    assert!(matches!(store.commit(&[fenced(first.epoch + 1000, "x")]).await, Err(StoreError::Fenced(_))));
    assert!(
        matches!(store.commit(&[fenced(first.epoch, "x"), fenced(first.epoch + 1000, "x")]).await, Err(StoreError::Fenced(_))),
        "one stale fence of an actor fails the batch though another of its fences holds"
    );
    assert_eq!(store.load_state(&a).await.unwrap(), vec![("v".into(), b"1".to_vec())]);

    // Host 1's lease lapses (a pause, a partition): host 2 takes the actor
    // under a new epoch, and host 1's commits are refused.
    cluster.heartbeat("1", i1, MemberState::Active, -1, &load(7)).await.unwrap();
    assert_eq!(cluster.members().await.unwrap()[0].effective_state(), MemberState::Suspect);
    let second = cluster.claim(&a, "2", i2).await.unwrap();
    assert_eq!(second.host, "2");
    assert!(second.epoch > first.epoch);
    let late = store.commit(&[fenced(first.epoch, "late")]).await;
    assert!(matches!(&late, Err(StoreError::Fenced(m)) if m.contains("reg/a")), "{late:?}");
    // In a batch, the fenced turn fails the batch before any write.
    let other = TurnCommit::state_only(id("reg/b"), vec![write("v", Some("b"))]);
    assert!(matches!(store.commit(&[other.clone(), fenced(first.epoch, "late")]).await, Err(StoreError::Fenced(_))));
    assert!(store.load_state(&id("reg/b")).await.unwrap().is_empty());
    store.commit(&[other, fenced(second.epoch, "2")]).await.unwrap();
    assert_eq!(store.load_state(&a).await.unwrap(), vec![("v".into(), b"2".to_vec())]);

    // The takeover declared host 1 dead: its heartbeat is refused, and it
    // joins again as a new incarnation. Suspicion is shown, not fatal.
    cluster.suspect("2", i2).await.unwrap();
    assert!(matches!(cluster.heartbeat("1", i1, MemberState::Active, 60_000, &load(0)).await, Err(StoreError::Fenced(_))));
    let states: Vec<_> = cluster.members().await.unwrap().iter().map(|m| m.effective_state()).collect();
    assert_eq!(states, [MemberState::Dead, MemberState::Suspect]);
    // Reaping declares dead a member silent past the grace, and drops its entries.
    let h3 = host("3");
    let i3 = cluster.join(&h3, 60_000).await.unwrap();
    let d = id("reg/d");
    assert_eq!(cluster.claim(&d, "3", i3).await.unwrap().host, "3");
    cluster.heartbeat("3", i3, MemberState::Active, -1, &load(0)).await.unwrap();
    assert_eq!(cluster.reap(0, 3_600_000).await.unwrap(), ["3"]);
    assert_eq!(cluster.owner(&d).await.unwrap(), None);
    assert_eq!(cluster.members().await.unwrap().iter().find(|m| m.host.id == "3").map(|m| m.state), Some(MemberState::Dead));
    let i1b = cluster.join(&h1, 60_000).await.unwrap();
    assert!(i1b > i3);

    // A new incarnation of a host takes over its old claims with a new epoch.
    let c = id("reg/c");
    let old = cluster.claim(&c, "2", i2).await.unwrap();
    cluster.heartbeat("2", i2, MemberState::Active, -1, &load(0)).await.unwrap();
    let i2b = cluster.join(&h2, 60_000).await.unwrap();
    let renewed = cluster.claim(&c, "2", i2b).await.unwrap();
    assert_eq!((renewed.host.as_str(), renewed.incarnation), ("2", i2b));
    assert!(renewed.epoch > old.epoch);

    // A hand-off (a migration) moves an actor held at its epoch to a live
    // member under a new epoch; the old owner's commits are refused.
    assert_eq!(cluster.hand_off(&c, old.epoch, "1", i1b).await.unwrap(), None, "a stale epoch hands nothing off");
    assert_eq!(cluster.hand_off(&c, renewed.epoch, "3", i3).await.unwrap(), None, "nor to a member whose lease lapsed");
    assert_eq!(cluster.owner(&c).await.unwrap(), Some(renewed.clone()));
    let moved = cluster.hand_off(&c, renewed.epoch, "1", i1b).await.unwrap().expect("handed off to a live member");
    assert_eq!((moved.host.as_str(), moved.incarnation), ("1", i1b));
    assert!(moved.epoch > renewed.epoch);
    assert_eq!(cluster.owner(&c).await.unwrap(), Some(moved.clone()));
    let fenced_c = |epoch: u64| TurnCommit { fence: Some(epoch), ..TurnCommit::state_only(c.clone(), vec![write("v", Some("c"))]) };
    assert!(matches!(store.commit(&[fenced_c(renewed.epoch)]).await, Err(StoreError::Fenced(_))), "the old owner's commit is refused");
    store.commit(&[fenced_c(moved.epoch)]).await.unwrap();
    let back = cluster.hand_off(&c, moved.epoch, "2", i2b).await.unwrap().expect("handed back");
    assert_eq!(back.host, "2");

    // Leaving drops the host's entries (not those it handed off);
    // releasing drops one at its epoch.
    let b = id("reg/b");
    cluster.claim(&b, "1", i1b).await.unwrap();
    cluster.leave("1", i1b).await.unwrap();
    assert_eq!(cluster.owner(&b).await.unwrap(), None);
    assert_eq!(cluster.owner(&c).await.unwrap(), Some(back.clone()));
    assert!(cluster.members().await.unwrap().iter().all(|m| m.host.id != "1"));
    assert!(!cluster.release(&c, renewed.epoch).await.unwrap());
    assert!(cluster.release(&c, back.epoch).await.unwrap());
    assert_eq!(cluster.owner(&c).await.unwrap(), None);
}

/// A single-host store refuses a fenced commit: it has no directory to
/// check the fence against.
pub async fn single_host_stores_refuse_fences(store: Arc<dyn Store>) {
    if store.cluster_store().is_some() {
        return;
    }
    let a = id("reg/a");
    let fenced = TurnCommit { fence: Some(1), ..TurnCommit::state_only(a.clone(), vec![write("v", Some("1"))]) };
    assert!(matches!(store.commit(&[fenced]).await, Err(StoreError::Fenced(_))));
    assert!(store.load_state(&a).await.unwrap().is_empty());
}
