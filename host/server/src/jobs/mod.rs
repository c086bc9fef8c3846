//! Durable jobs: work delivered later as a turn of an actor.
//!
//! A job is scheduled from inside a turn (the `jobs` WIT interface; it
//! commits with the turn) or from outside (`POST /v1/jobs`, `quark jobs
//! add`). The [`runner`] claims due jobs in batches under a lease and runs
//! each as a turn of its target; that turn's commit also completes the job,
//! on the condition that the lease is still its own, so the job's effects
//! and its completion happen together, exactly once. A failed attempt is
//! retried with exponential backoff and jitter; after the last one the job
//! is dead-lettered with its error history.

pub mod runner;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use quark_core::jobs::{
    DEFAULT_BACKOFF_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF_MS, JobRequest, JobSpec, MAX_ATTEMPTS, When, backoff_ms, job_id, next_tick,
    owner_tag, plan, plan_for, retry_delay_ms,
};
use quark_runtime::{CommitListener, CommittedTurn, Host};

use self::runner::{JobRunner, JobStarted};
use crate::error::ActorError;
use crate::storage::jobs::{JobRecord, JobStatus, JobStore};

/// Jobs running at once on a host unless configured: enough to keep the
/// store busy while claims are in flight (drain throughput rose from 25k
/// to 29k jobs/s on PostgreSQL over 128); interactive asks kept their p99
/// while 100,000 jobs drained (BENCHMARKS.md).
pub const DEFAULT_CONCURRENCY: usize = 512;

/// Lease of a claimed job unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// How long finished jobs are kept unless configured (`--job-retention`),
/// as River keeps completed jobs.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Job runner settings.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Most jobs running at once on this host.
    pub concurrency: usize,
    /// Most jobs running at once per queue name.
    pub queue_limits: HashMap<String, usize>,
    /// Most jobs running at once per actor type.
    pub type_limits: HashMap<String, usize>,
    /// How long a claimed job belongs to this host before another may take
    /// it over (a host that died mid-job).
    pub lease: Duration,
    /// Longest the runner sleeps between looks at the store, for jobs
    /// added on other hosts when the store cannot announce them.
    pub poll: Duration,
    /// How long succeeded and cancelled jobs are kept before they are
    /// deleted (dead jobs stay until retried or purged).
    pub retention: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            concurrency: DEFAULT_CONCURRENCY,
            queue_limits: HashMap::new(),
            type_limits: HashMap::new(),
            lease: DEFAULT_LEASE,
            poll: runner::POLL,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The durable-jobs service of one host: adds and manages jobs and runs
/// the due ones through the runtime's router. Cheap to clone.
#[derive(Clone)]
pub struct Jobs(Arc<JobsInner>);

pub(crate) struct JobsInner {
    pub(crate) host: Host,
    pub(crate) config: JobsConfig,
    pub(crate) runner: Arc<JobRunner>,
    /// Asks [`announce_new_jobs`] for an announcement (a full channel
    /// means one is already wanted).
    announce: tokio::sync::mpsc::Sender<()>,
}

impl CommitListener for JobsInner {
    fn committed(&self, turn: &CommittedTurn<'_>) {
        if turn.scheduled_jobs {
            self.runner.wake();
        }
    }
}

/// Announces new jobs to the other hosts (PostgreSQL's NOTIFY), one
/// announcement at a time and off the enqueue's path: requests that come
/// while one is sent fold into the next, so a run of single enqueues costs
/// a few announcements instead of a round trip (and NOTIFY's commit lock)
/// each. Ends with the [`Jobs`] that asks.
async fn announce_new_jobs(store: Arc<dyn crate::storage::Store>, mut wanted: tokio::sync::mpsc::Receiver<()>) {
    while wanted.recv().await.is_some() {
        let Some(jobs) = store.job_store() else { return };
        if let Err(e) = jobs.announce_jobs().await {
            tracing::debug!(error = %e, "announcing new jobs failed; other hosts find them by polling");
        }
    }
}

impl Jobs {
    /// Starts the runner and the retention sweep beside `host` (when its
    /// store keeps jobs).
    pub(crate) async fn start(host: Host, config: JobsConfig) -> Jobs {
        let (announce, wanted) = tokio::sync::mpsc::channel(1);
        let inner = Arc::new(JobsInner { host, config, runner: Arc::default(), announce });
        let listener: Arc<dyn CommitListener> = inner.clone();
        inner.host.add_commit_listener(&listener);
        if let Some(store) = inner.host.store().job_store() {
            tokio::spawn(runner::run(Arc::downgrade(&inner)));
            tokio::spawn(announce_new_jobs(inner.host.store().clone(), wanted));
            spawn_retention(&inner.host, inner.config.retention);
            if let Some(announcements) = store.job_announcements().await {
                crate::node::spawn_wakeups(announcements, Arc::downgrade(&inner), |jobs| jobs.runner.wake());
            }
        }
        Jobs(inner)
    }

    /// Stops running jobs here (before the host leaves a cluster): no more
    /// are claimed; the running ones finish. Waits for them, for at most
    /// `within` (a job still running then is run again elsewhere once its
    /// lease lapses).
    pub async fn stop(&self, within: Duration) {
        let runner = &self.0.runner;
        runner.stopping.store(true, std::sync::atomic::Ordering::Release);
        runner.wake();
        let started = std::time::Instant::now();
        while runner.busy() > 0 && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wakes the runner (after jobs were written to the store directly).
    pub fn wake(&self) {
        self.0.runner.wake();
    }

    /// Every job attempt this host starts, as it starts (for monitoring
    /// and benchmarks; a receiver that falls behind skips ahead).
    pub fn starts(&self) -> tokio::sync::broadcast::Receiver<JobStarted> {
        self.0.runner.subscribe_starts()
    }

    fn store_or_err(&self) -> Result<&dyn JobStore, ActorError> {
        let store = self.0.host.store();
        store.job_store().ok_or_else(|| {
            ActorError::unavailable(format!(
                "durable jobs are not available on the {} store yet; use SQLite or PostgreSQL",
                store.backend_name()
            ))
        })
    }

    /// Checks, plans and stores jobs from outside a turn; returns them as
    /// added. A job with an idempotency key is read back (in batches of up
    /// to 100), as the existing job for a repeated key.
    pub async fn add(&self, requests: Vec<JobRequest>) -> Result<Vec<JobRecord>, ActorError> {
        Ok(self.add_counted(requests).await?.0)
    }

    /// Like [`Jobs::add`], also saying how many jobs were new (a job
    /// whose idempotency key names a stored job is not).
    pub async fn add_counted(&self, requests: Vec<JobRequest>) -> Result<(Vec<JobRecord>, u64), ActorError> {
        let store = self.store_or_err()?;
        let now = crate::storage::now_ms();
        let mut planned = Vec::with_capacity(requests.len());
        for request in requests {
            self.0.host.active_version(request.target.actor_type())?;
            planned.push(plan(request, now)?);
        }
        let added = store.add_jobs(&planned).await?;
        // Only a job with an idempotency key may have existed already; large
        // batches are returned as planned, unread.
        if planned.len() <= 100 {
            for job in planned.iter_mut().filter(|j| j.idempotency_key.is_some()) {
                if let Some(stored) = store.job(&job.id).await? {
                    *job = stored;
                }
            }
        }
        self.wake();
        let _ = self.0.announce.try_send(());
        Ok((planned, added))
    }

    /// Jobs, newest first.
    pub async fn list(&self, status: Option<JobStatus>, target: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, ActorError> {
        Ok(self.store_or_err()?.jobs(status, target, limit.clamp(1, 10_000)).await?)
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<JobRecord, ActorError> {
        self.store_or_err()?.job(id).await?.ok_or_else(|| ActorError::not_found(format!("no job {id}")))
    }

    /// Cancels a job: a running attempt finishes, no further one starts.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, ActorError> {
        let store = self.store_or_err()?;
        if !store.cancel_job(id).await? {
            let job = self.get(id).await?;
            return Err(ActorError::rejected(format!("job {id} is {} already: there is nothing to cancel", job.status.as_str())));
        }
        self.get(id).await
    }

    /// Runs a dead or failed job again now, with fresh attempts.
    pub async fn retry(&self, id: &str) -> Result<JobRecord, ActorError> {
        let store = self.store_or_err()?;
        // Read first: a dead or failed job is left alone by every runner,
        // while a retried one may be running by the time it is read back.
        let mut job = self.get(id).await?;
        let now = crate::storage::now_ms();
        if !store.retry_job(id, now).await? {
            let job = self.get(id).await?;
            return Err(ActorError::rejected(format!("job {id} is {}: only dead or failed jobs can be retried", job.status.as_str())));
        }
        // What the retry changed (see `JobStore::retry_job`).
        (job.status, job.run_at_ms, job.attempts, job.updated_at_ms) = (JobStatus::Scheduled, now, 0, now);
        self.wake();
        Ok(job)
    }

    /// Deletes every job with `status` (the dead-letter list, say).
    pub async fn purge(&self, status: JobStatus) -> Result<u64, ActorError> {
        if matches!(status, JobStatus::Running | JobStatus::Scheduled | JobStatus::Failed) {
            return Err(ActorError::bad_request("only succeeded, dead or cancelled jobs can be purged; cancel live ones first"));
        }
        Ok(self.store_or_err()?.purge_jobs(status, None).await?)
    }
}

/// Deletes succeeded and cancelled jobs past the retention, every tenth of
/// it (at most every ten minutes), for as long as the host lives. Dead
/// jobs are the dead-letter list: they stay until retried or purged.
fn spawn_retention(host: &Host, retention: Duration) {
    crate::node::spawn_sweep(host, retention, Duration::from_secs(600), move |host: Host| async move {
        let Some(store) = host.store().job_store() else { return };
        let before = crate::storage::now_ms() - retention.as_millis() as i64;
        for status in [JobStatus::Succeeded, JobStatus::Cancelled] {
            match store.purge_jobs(status, Some(before)).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, status = status.as_str(), "deleted jobs past their retention"),
                Err(e) => tracing::warn!(error = %e, "deleting jobs past their retention failed; retrying later"),
            }
        }
    });
}

/// Milliseconds as a `Duration`.
pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
