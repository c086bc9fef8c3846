//! Durable jobs as the store keeps them, and the [`JobStore`] trait.
//!
//! A job is claimed with a lease (a random token and an expiry). Its turn
//! commits the job's completion in the same transaction as the turn's
//! effects, on the condition that the lease is still the one it claimed
//! with, so a job whose host died and whose lease another host took over
//! cannot complete twice.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its time.
    Scheduled,
    /// Claimed by a host; its turn is running.
    Running,
    /// Failed; waiting for its next attempt.
    Failed,
    /// Done (one-shot jobs).
    Succeeded,
    /// Failed every attempt: the dead-letter list.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Failed => "failed",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "scheduled" => JobStatus::Scheduled,
            "running" => JobStatus::Running,
            "failed" => JobStatus::Failed,
            "succeeded" => JobStatus::Succeeded,
            "dead" => JobStatus::Dead,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(format!("unknown job status {other:?}: scheduled, running, failed, succeeded, dead or cancelled")),
        })
    }
}

/// What a recurring job does about ticks missed while no host ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run once for all missed ticks.
    #[default]
    Once,
    /// Run every missed tick.
    All,
    /// Skip missed ticks; run at the next one from now.
    Skip,
}

impl std::str::FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "once" => CatchUp::Once,
            "all" => CatchUp::All,
            "skip" => CatchUp::Skip,
            other => return Err(format!("unknown catch-up policy {other:?}: once, all or skip")),
        })
    }
}

/// A job and everything known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id (derived from the idempotency key when there is one).
    pub id: String,
    /// The actor whose turn runs it.
    pub target: String,
    /// The method that turn calls.
    pub method: String,
    /// The payload (JSON for SDK actors).
    #[serde(with = "super::json_or_base64")]
    pub payload: Vec<u8>,
    /// The queue it counts against.
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// Where it stands.
    pub status: JobStatus,
    /// When it (next) runs, ms since the epoch.
    pub run_at_ms: i64,
    /// A cron expression for recurring jobs.
    pub cron: Option<String>,
    /// The cron expression's time zone (UTC when none).
    pub time_zone: Option<String>,
    /// Missed ticks of a recurring job.
    pub catch_up: CatchUp,
    /// Attempts so far (of the current tick, for recurring jobs).
    pub attempts: u32,
    /// Attempts before the dead-letter list.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt.
    pub backoff_ms: u64,
    /// Longest retry delay.
    pub max_backoff_ms: u64,
    /// Longest one attempt may run (none: the target's turn limit).
    pub timeout_ms: Option<u64>,
    /// Scheduling with the same key yields this job again.
    pub idempotency_key: Option<String>,
    /// A cancel arrived while it ran: no further attempt.
    pub cancel_requested: bool,
    /// Progress the handler reported, 0..=100.
    pub progress: Option<u8>,
    /// The note that came with it.
    pub progress_note: Option<String>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<JobError>,
    /// When it was scheduled.
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Which attempt (1, 2, …).
    pub attempt: u32,
    /// When it failed.
    pub at_ms: i64,
    /// Why.
    pub error: String,
}

/// A claimed job: run it, then complete it (in its turn's commit) or fail it,
/// quoting `lease`.
#[derive(Debug, Clone)]
pub struct JobClaim {
    /// The job, with `attempts` counting this one.
    pub job: JobRecord,
    /// The lease token; the completion must match it.
    pub lease: String,
}

/// A job's completion, committed with the turn that ran it.
#[derive(Debug, Clone)]
pub struct JobCompletion {
    /// The job.
    pub id: String,
    /// The lease it was claimed with.
    pub lease: String,
    /// For a recurring job, its next tick.
    pub next_run_at_ms: Option<i64>,
}

/// The outcome of a failed attempt.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// The job.
    pub id: String,
    /// The lease it was claimed with.
    pub lease: String,
    /// Why it failed.
    pub error: String,
    /// When to try again; `None` moves it to the dead-letter list.
    pub retry_at_ms: Option<i64>,
}

/// Limits a claim respects: jobs of these queues and actor types are left
/// for later (their concurrency limit is reached).
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Queues at their limit.
    pub full_queues: Vec<String>,
    /// Actor types at their limit.
    pub full_types: Vec<String>,
    /// Leave running jobs whose lease expired for a later claim (the
    /// runner looks for them about once a second, not on every claim).
    pub skip_expired: bool,
}

/// Durable job storage.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Adds jobs outside a turn (the API); an id that exists is left as it
    /// is. Returns how many were new.
    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<u64, StoreError>;

    /// Claims up to `max` due jobs (and running ones whose lease expired),
    /// highest priority first, leasing them until `now_ms + lease_ms`.
    ///
    /// First, in the same write, it ends the runs in `completed`: runs
    /// whose turn had no effect, so their completion need not commit with
    /// the turn (see `JobTurn`). Those whose lease lapsed are skipped.
    async fn claim_jobs(
        &self,
        now_ms: i64,
        max: usize,
        lease_ms: i64,
        filter: &ClaimFilter,
        completed: &[JobCompletion],
    ) -> Result<Vec<JobClaim>, StoreError>;

    /// Records a failed attempt; false when the lease was lost.
    async fn fail_job(&self, failure: &JobFailure) -> Result<bool, StoreError>;

    /// Moves a recurring job to `next_run_at_ms` without running it (skipped
    /// ticks); false when the lease was lost.
    async fn reschedule_job(&self, id: &str, lease: &str, next_run_at_ms: i64) -> Result<bool, StoreError>;

    /// One job.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs, newest first, filtered by status and target.
    async fn jobs(&self, status: Option<JobStatus>, target: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, StoreError>;

    /// Cancels a job now (outside a turn); false if it does not exist or has ended.
    async fn cancel_job(&self, id: &str) -> Result<bool, StoreError>;

    /// Makes a dead or failed job due now (`run_at_ms` and `updated_at_ms`
    /// = `now_ms`) with fresh attempts (0), `scheduled`; false if it is
    /// neither dead nor failed.
    async fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Deletes jobs with `status`, only those last changed before
    /// `changed_before_ms` when given; returns how many.
    async fn purge_jobs(&self, status: JobStatus, changed_before_ms: Option<i64>) -> Result<u64, StoreError>;

    /// Records progress of a running job.
    async fn set_job_progress(&self, id: &str, lease: &str, percent: u8, note: &str) -> Result<(), StoreError>;

    /// When the next scheduled or failed job is due, if any.
    async fn next_job_due(&self) -> Result<Option<i64>, StoreError>;

    /// Tells other hosts' runners that jobs were added (PostgreSQL:
    /// NOTIFY). Jobs added in a turn's commit are announced by the commit.
    async fn announce_jobs(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A stream that yields whenever any host announces jobs, where the
    /// backend can push (PostgreSQL: LISTEN); `None` means poll.
    async fn job_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        None
    }
}

/// Most errors kept per job: the first ones say what broke, the last ones
/// whether it still does.
pub const MAX_JOB_ERRORS: usize = 20;

/// Appends an attempt's error to a job's JSON error list, keeping the first
/// and the latest when it grows past [`MAX_JOB_ERRORS`].
pub fn push_job_error(errors_json: &str, attempt: u32, error: &str) -> String {
    let mut errors: Vec<JobError> = serde_json::from_str(errors_json).unwrap_or_default();
    errors.push(JobError { attempt, at_ms: super::now_ms(), error: error.chars().take(4000).collect() });
    if errors.len() > MAX_JOB_ERRORS {
        errors.remove(1);
    }
    serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into())
}

/// A fresh lease token: unique across hosts and restarts.
pub fn new_lease() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one((n, std::process::id(), super::now_ms()));
    format!("{random:016x}{n:x}")
}
