//! Durable jobs: delivered as turns of their target, completed in that
//! turn's commit, retried with backoff, dead-lettered, cancelled, recurring.

use std::time::Duration;

use quark::jobs::{JobRequest, JobSpec, When};
use quark::storage::jobs::{CatchUp, JobRecord, JobStatus};
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::{Value, json};

use crate::support::*;

async fn worker_host(dir: &std::path::Path) -> Node {
    host_with(dir, &[("worker", "worker")]).await
}

fn request(target: &str, method: &str, payload: Value) -> JobRequest {
    JobSpec {
        target: target.into(),
        method: method.into(),
        payload,
        run_at: None,
        delay_ms: None,
        cron: None,
        time_zone: None,
        max_attempts: None,
        backoff_ms: Some(10),
        max_backoff_ms: Some(50),
        timeout_ms: None,
        priority: None,
        queue: None,
        idempotency_key: None,
        catch_up: None,
    }
    .into_request()
    .unwrap()
}

/// Polls the job every 20 ms until `done` holds; fails after 15 s.
async fn wait_job(host: &Node, id: &str, what: &str, done: impl Fn(&JobRecord) -> bool) -> JobRecord {
    eventually(&format!("job {id} {what}"), async || host.jobs().get(id).await.unwrap(), done).await
}

async fn runs(host: &Node, actor: &str) -> Value {
    ask(host, actor, "runs", json!(null)).await.unwrap()
}

#[tokio::test]
async fn a_job_runs_as_a_turn_and_its_completion_commits_with_it() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let job = host.jobs().add(vec![request("worker/a", "work", json!({}))]).await.unwrap().remove(0);
    assert_eq!(job.status, JobStatus::Scheduled);
    let done = wait_job(&host, &job.id, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!((done.attempts, done.progress, done.progress_note.as_deref()), (1, Some(50), Some("halfway")));
    assert_eq!(runs(&host, "worker/a").await, json!({"runs": 1, "attempts": [1]}));
    assert!(host.metrics_text().contains("quark_jobs_succeeded_total 1"));
}

#[tokio::test]
async fn failed_attempts_are_retried_and_commit_nothing() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let job = host.jobs().add(vec![request("worker/r", "work", json!({"fail_until": 3}))]).await.unwrap().remove(0);
    let done = wait_job(&host, &job.id, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!(done.attempts, 3);
    let errors: Vec<u32> = done.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(errors, [1, 2]);
    assert!(done.errors[0].error.contains("failing attempt 1 on purpose"), "{:?}", done.errors);
    // Exactly one effect: the failed attempts' writes never committed.
    assert_eq!(runs(&host, "worker/r").await, json!({"runs": 1, "attempts": [3]}));
}

#[tokio::test]
async fn a_job_that_always_traps_is_dead_lettered_with_its_errors() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let mut trap = request("worker/t", "trap", json!(null));
    trap.max_attempts = Some(3);
    let job = host.jobs().add(vec![trap]).await.unwrap().remove(0);
    let dead = wait_job(&host, &job.id, "dead", |j| j.status == JobStatus::Dead).await;
    assert_eq!((dead.attempts, dead.errors.len()), (3, 3));
    assert!(dead.errors.iter().all(|e| e.error.contains("this job always traps")), "{:?}", dead.errors);
    assert_eq!(host.jobs().list(Some(JobStatus::Dead), None, 10).await.unwrap().len(), 1);
    // Retry from the dead-letter list, then purge it.
    let again = host.jobs().retry(&job.id).await.unwrap();
    assert_eq!((again.status, again.attempts), (JobStatus::Scheduled, 0));
    wait_job(&host, &job.id, "dead again", |j| j.status == JobStatus::Dead).await;
    assert_eq!(host.jobs().purge(JobStatus::Dead).await.unwrap(), 1);
    assert_eq!(host.jobs().get(&job.id).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn finished_jobs_are_deleted_after_the_retention_and_dead_ones_kept() {
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.jobs.retention = Duration::from_secs(2);
    let host = host_with_config(config).await;
    host.host().deploy("worker", component("worker"), manifest()).await.unwrap();
    let mut trap = request("worker/t", "trap", json!(null));
    trap.max_attempts = Some(1);
    let jobs = host.jobs().add(vec![request("worker/r", "work", json!({})), trap]).await.unwrap();
    let (done, dead) = (&jobs[0].id, &jobs[1].id);
    wait_job(&host, done, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    wait_job(&host, dead, "dead", |j| j.status == JobStatus::Dead).await;
    eventually("the retention sweep", async || host.jobs().get(done).await.err().map(|e| e.kind), |j| *j == Some(ErrorKind::NotFound)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(host.jobs().get(dead).await.unwrap().status, JobStatus::Dead, "the dead-letter list is kept");
    assert_eq!(runs(&host, "worker/r").await["runs"], 1, "the job's effect stays");
}

#[tokio::test]
async fn jobs_scheduled_in_a_turn_commit_with_it_once_per_key() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let schedule = |key: &str, fail: bool| json!({"target": "worker/s", "method": "work", "key": key, "fail": fail});
    let e = ask(&host, "worker/x", "schedule", schedule("lost", true)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    let first = ask(&host, "worker/x", "schedule", schedule("nightly", false)).await.unwrap();
    let second = ask(&host, "worker/x", "schedule", schedule("nightly", false)).await.unwrap();
    assert_eq!(first, second, "the same key names one job");
    let id = first.as_str().unwrap().to_string();
    wait_job(&host, &id, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!(runs(&host, "worker/s").await["runs"], json!(1));
    // The failed turn's job never existed.
    let all = host.jobs().list(None, Some("worker/s"), 10).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    // Keys are scoped by who schedules and for which target: the same key
    // from another actor, from outside, or for another target is another
    // job; from outside twice, one job.
    let other = ask(&host, "worker/y", "schedule", schedule("nightly", false)).await.unwrap();
    assert_ne!(other, first, "another scheduler's key is its own");
    let elsewhere = ask(&host, "worker/x", "schedule", json!({"target": "worker/t", "method": "work", "key": "nightly", "fail": false})).await.unwrap();
    assert_ne!(elsewhere, first, "the same key for another target is another job");
    let outside = || {
        let mut outside = request("worker/s", "work", json!({}));
        outside.idempotency_key = Some("nightly".into());
        outside
    };
    let from_outside = host.jobs().add(vec![outside()]).await.unwrap()[0].id.clone();
    assert_ne!(from_outside, id, "an outside caller's keys are their own");
    assert_eq!(host.jobs().add(vec![outside()]).await.unwrap()[0].id, from_outside);
    let mut for_other_target = outside();
    for_other_target.target = id_of("worker/u");
    assert_ne!(host.jobs().add(vec![for_other_target]).await.unwrap()[0].id, from_outside, "keys are scoped by target");
}

fn id_of(actor: &str) -> quark::ActorId {
    quark::ActorId::parse(actor).unwrap()
}

// Multi-threaded: the job's turn spins in wasm while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_do_not_run_and_a_running_one_stops_retrying() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let mut later = request("worker/c", "work", json!({}));
    later.when = When::Delay(3_600_000);
    let job = host.jobs().add(vec![later]).await.unwrap().remove(0);
    // Another actor that learnt the id cannot cancel it.
    let e = ask(&host, "worker/x", "cancel", json!({"id": job.id})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert_eq!(host.jobs().get(&job.id).await.unwrap().status, JobStatus::Scheduled);
    // Its target can, from inside a turn, committed with it.
    assert_eq!(ask(&host, "worker/c", "cancel", json!({"id": job.id})).await.unwrap(), json!(true));
    assert_eq!(host.jobs().get(&job.id).await.unwrap().status, JobStatus::Cancelled);
    assert_eq!(ask(&host, "worker/x", "cancel", json!({"id": "nosuch"})).await.unwrap(), json!(false));
    assert_eq!(host.jobs().cancel(&job.id).await.unwrap_err().kind, ErrorKind::Rejected);

    // Running: the attempt finishes (and fails here); no further attempt.
    let slow = host.jobs().add(vec![request("worker/c2", "work", json!({"fail_until": 5, "slow_first_ms": 2000}))]).await.unwrap().remove(0);
    wait_job(&host, &slow.id, "running its first attempt", |j| j.status == JobStatus::Running && j.attempts == 1).await;
    host.jobs().cancel(&slow.id).await.unwrap();
    let cancelled = wait_job(&host, &slow.id, "cancelled", |j| j.status == JobStatus::Cancelled).await;
    assert_eq!(cancelled.attempts, 1, "{cancelled:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.jobs().get(&slow.id).await.unwrap().attempts, 1, "no attempt after the cancel");
}

#[tokio::test]
async fn invalid_jobs_are_refused_with_a_clear_error() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let mut bad_cron = request("worker/b", "work", json!({}));
    bad_cron.when = When::Cron("every tuesday".into());
    let e = host.jobs().add(vec![bad_cron]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains(r#"invalid cron expression "every tuesday""#), "{e}");
    let mut bad_tz = request("worker/b", "work", json!({}));
    bad_tz.when = When::Cron("0 2 * * *".into());
    bad_tz.time_zone = Some("Mars/Olympus".into());
    assert!(host.jobs().add(vec![bad_tz]).await.unwrap_err().message.contains("unknown time zone"));
    let e = host.jobs().add(vec![request("nosuch/b", "work", json!({}))]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    // From inside a turn, too.
    let e = ask(&host, "worker/x", "schedule", json!({"target": "worker/b", "method": "work", "cron": "61 * * * *"})).await.unwrap_err();
    assert!(e.message.contains("invalid cron expression"), "{e}");
    // A method the actor does not have cannot be known before a turn runs
    // (components declare no method list): the first attempt finds out, and
    // the job is dead at once instead of retrying what cannot succeed.
    let mut missing = request("worker/m", "nosuch", json!({}));
    missing.max_attempts = Some(5);
    let job = host.jobs().add(vec![missing]).await.unwrap().remove(0);
    let dead = wait_job(&host, &job.id, "dead", |j| j.status == JobStatus::Dead).await;
    assert_eq!(dead.attempts, 1, "{dead:?}");
    assert!(dead.errors.last().is_some_and(|e| e.error.contains("not retried")), "{dead:?}");
    // Nor will a payload the method cannot decode start to fit.
    let mut wrong = request("worker/w", "schedule", json!({"method": "work"}));
    wrong.max_attempts = Some(5);
    let job = host.jobs().add(vec![wrong]).await.unwrap().remove(0);
    let dead = wait_job(&host, &job.id, "dead", |j| j.status == JobStatus::Dead).await;
    assert_eq!(dead.attempts, 1, "{dead:?}");
    let error = &dead.errors.last().unwrap().error;
    assert!(error.contains("bad-request") && error.contains("missing field `target`") && error.contains("not retried"), "{error}");
}

/// A recurring job whose ticks were missed (the host was down) follows its
/// catch-up policy. The job, due every hour, is stored with its last run five
/// hours ago (hourly, so no tick falls due while the test runs).
#[tokio::test]
async fn missed_cron_ticks_follow_the_catch_up_policy() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let store = host.host().store().clone();
    let jobs = store.job_store().unwrap();
    let now = quark::storage::now_ms();
    let hour = 3_600_000;
    let five_ago = (now / hour - 5) * hour;
    let mut ids = Vec::new();
    for (key, policy) in [("once", CatchUp::Once), ("all", CatchUp::All), ("skip", CatchUp::Skip)] {
        let mut r = request(&format!("worker/cron-{key}"), "work", json!({}));
        r.when = When::Cron("0 * * * *".into());
        r.catch_up = policy;
        let mut job = quark::jobs::plan(r, now).unwrap();
        job.run_at_ms = five_ago;
        jobs.add_jobs(std::slice::from_ref(&job)).await.unwrap();
        ids.push(job.id);
    }
    host.jobs().wake();
    // once: one run now, then the next tick from now.
    let once = wait_job(&host, &ids[0], "ran once", |j| j.status == JobStatus::Scheduled && j.run_at_ms > now).await;
    assert_eq!(runs(&host, "worker/cron-once").await["runs"], json!(1));
    assert!(once.run_at_ms > now && once.run_at_ms <= now + hour, "{once:?}");
    // all: every missed tick (five or six, as an hour may turn meanwhile).
    wait_job(&host, &ids[1], "caught up", |j| j.run_at_ms > now).await;
    let all = runs(&host, "worker/cron-all").await["runs"].as_u64().unwrap();
    assert!((5..=7).contains(&all), "all missed ticks ran: {all}");
    // skip: none of them; the next tick from now.
    let skip = wait_job(&host, &ids[2], "skipped", |j| j.run_at_ms > now).await;
    assert_eq!(runs(&host, "worker/cron-skip").await["runs"], json!(0));
    assert_eq!(skip.status, JobStatus::Scheduled);
}

#[tokio::test]
async fn a_recurring_job_runs_on_every_tick() {
    let dir = crate::support::tempdir().unwrap();
    let host = worker_host(dir.path()).await;
    let mut every_second = request("worker/tick", "work", json!({}));
    every_second.when = When::Cron("* * * * * *".into());
    let job = host.jobs().add(vec![every_second]).await.unwrap().remove(0);
    for _ in 0..400 {
        if runs(&host, "worker/tick").await["runs"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(runs(&host, "worker/tick").await["runs"].as_u64() >= Some(2));
    let job = host.jobs().get(&job.id).await.unwrap();
    assert!(matches!(job.status, JobStatus::Scheduled | JobStatus::Running), "{job:?}");
    host.jobs().cancel(&job.id).await.unwrap();
}

/// On PostgreSQL a job added on one host wakes the idle runner of another
/// (LISTEN/NOTIFY): host B polls only every minute, so only the
/// notification can start the job within the wait.
#[tokio::test]
async fn postgres_wakes_idle_runners_on_other_hosts() {
    let Some(store) = postgres_store("jobs::postgres_wakes_idle_runners_on_other_hosts").await else { return };
    let store: std::sync::Arc<dyn quark::storage::Store> = std::sync::Arc::new(store);
    let dir = crate::support::tempdir().unwrap();
    let mut config_a = quark::NodeConfig::new(dir.path());
    config_a.jobs.type_limits.insert("worker".into(), 0);
    let host_a = Node::start(config_a, store.clone()).await.unwrap();
    host_a.host().deploy("worker", component("worker"), manifest()).await.unwrap();
    let mut config_b = quark::NodeConfig::new(dir.path());
    config_b.jobs.poll = Duration::from_secs(60);
    let host_b = Node::start(config_b, store).await.unwrap();
    // Let B's runner go idle on its one-minute poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = host_a.jobs().add(vec![request("worker/pg", "work", json!({}))]).await.unwrap().remove(0);
    wait_job(&host_a, &job.id, "succeeded on host B", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!(runs(&host_b, "worker/pg").await["runs"], json!(1));
}

/// `samples/reports`: a nightly cron job per tenant (one per tenant however
/// often `setup` runs), each night a flaky step retried until it succeeds.
#[tokio::test]
async fn the_reports_sample_schedules_nightly_jobs_and_retries_its_flaky_step() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("reports", "reports")]).await;
    let first = ask(&host, "reports/acme", "setup", json!({"cron": "0 2 * * *", "time_zone": "Europe/Paris", "flaky_attempts": 2}))
        .await
        .unwrap();
    let again = ask(&host, "reports/acme", "setup", json!({"cron": "0 2 * * *", "time_zone": "Europe/Paris", "flaky_attempts": 2}))
        .await
        .unwrap();
    assert_eq!(first, again, "one nightly job per tenant");
    let nightly = host.jobs().get(first.as_str().unwrap()).await.unwrap();
    assert_eq!((nightly.cron.as_deref(), nightly.time_zone.as_deref()), (Some("0 2 * * *"), Some("Europe/Paris")));
    assert!(nightly.run_at_ms > quark::storage::now_ms());
    // Run tonight's report now instead of waiting for 02:00.
    let mut tonight = request("reports/acme", "nightly", json!(null));
    tonight.idempotency_key = Some("tonight".into());
    host.jobs().add(vec![tonight]).await.unwrap();
    let mut status = json!(null);
    for _ in 0..500 {
        status = ask(&host, "reports/acme", "status", json!(null)).await.unwrap();
        if status["rendered"] == json!([1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((status["nights"].clone(), status["rendered"].clone()), (json!(1), json!([1])), "{status}");
    let render = host.jobs().list(Some(JobStatus::Succeeded), Some("reports/acme"), 10).await.unwrap();
    let render = render.iter().find(|j| j.method == "render").expect("the render step ran");
    assert_eq!((render.attempts, render.errors.len()), (3, 2), "two flaky attempts, then success");
    assert!(render.errors[0].error.contains("timed out"), "{:?}", render.errors);
}
