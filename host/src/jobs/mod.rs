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

use std::time::Duration;

use chrono::TimeZone;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ActorError;
use crate::id::ActorId;
use crate::runtime::Host;
use crate::storage::jobs::{CatchUp, JobRecord, JobStatus, JobStore};

/// Attempts unless a job says otherwise (Orleans' durable jobs retry 5 times).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;

/// First retry delay unless a job says otherwise.
pub const DEFAULT_BACKOFF_MS: u64 = 1000;

/// Longest retry delay unless a job says otherwise.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 300_000;

/// Longest queue name.
const MAX_QUEUE_NAME: usize = 64;

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// At this time, ms since the epoch.
    At(i64),
    /// This long from now.
    Delay(u64),
    /// On every tick of this cron expression.
    Cron(String),
}

/// A job to schedule, before it has an id and a time.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The actor that runs it.
    pub target: ActorId,
    /// The method its turn calls.
    pub method: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// When it runs.
    pub when: When,
    /// Time zone of a cron expression (IANA name); UTC if none.
    pub time_zone: Option<String>,
    /// Attempts before the dead-letter list.
    pub max_attempts: Option<u32>,
    /// First retry delay in ms.
    pub backoff_ms: Option<u64>,
    /// Longest retry delay in ms.
    pub max_backoff_ms: Option<u64>,
    /// Longest one attempt may run, in ms.
    pub timeout_ms: Option<u64>,
    /// Higher runs first.
    pub priority: i32,
    /// Queue for concurrency limits.
    pub queue: Option<String>,
    /// Scheduling the same key twice yields one job.
    pub idempotency_key: Option<String>,
    /// Missed ticks of a recurring job.
    pub catch_up: CatchUp,
}

/// A job as `POST /v1/jobs` takes it (one object, or an array of them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `type/key` of the actor that runs it.
    pub target: String,
    /// The method its turn calls.
    pub method: String,
    /// The JSON payload (default `null`).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// When to run: RFC 3339 time or ms since the epoch.
    pub run_at: Option<serde_json::Value>,
    /// Or: this many ms from now.
    pub delay_ms: Option<u64>,
    /// Or: on every tick of a cron expression.
    pub cron: Option<String>,
    /// The cron expression's time zone.
    pub time_zone: Option<String>,
    /// Attempts before the dead-letter list.
    pub max_attempts: Option<u32>,
    /// First retry delay in ms.
    pub backoff_ms: Option<u64>,
    /// Longest retry delay in ms.
    pub max_backoff_ms: Option<u64>,
    /// Longest one attempt may run, in ms.
    pub timeout_ms: Option<u64>,
    /// Higher runs first.
    pub priority: Option<i32>,
    /// Queue for concurrency limits.
    pub queue: Option<String>,
    /// Scheduling the same key twice yields one job.
    pub idempotency_key: Option<String>,
    /// `once` (default), `all` or `skip`.
    pub catch_up: Option<CatchUp>,
}

impl JobSpec {
    /// The request this spec describes.
    pub fn into_request(self) -> Result<JobRequest, ActorError> {
        let when = match (self.run_at, self.delay_ms, self.cron) {
            (Some(at), None, None) => When::At(match at {
                serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| ActorError::bad_request("`run_at` must be whole ms"))?,
                serde_json::Value::String(s) => crate::api::parse_time(&s)?,
                other => return Err(ActorError::bad_request(format!("`run_at` must be RFC 3339 or ms since the epoch, not {other}"))),
            }),
            (None, Some(ms), None) => When::Delay(ms),
            (None, None, Some(cron)) => When::Cron(cron),
            (None, None, None) => When::Delay(0),
            _ => return Err(ActorError::bad_request("give at most one of `run_at`, `delay_ms` and `cron`")),
        };
        Ok(JobRequest {
            target: ActorId::parse(&self.target)?,
            method: self.method,
            payload: serde_json::to_vec(&self.payload).unwrap_or_default(),
            when,
            time_zone: self.time_zone,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
            timeout_ms: self.timeout_ms,
            priority: self.priority.unwrap_or(0),
            queue: self.queue,
            idempotency_key: self.idempotency_key,
            catch_up: self.catch_up.unwrap_or_default(),
        })
    }
}

/// The first tick of `cron` (in `time_zone`, UTC if none) strictly after `after_ms`.
pub fn next_tick(cron: &str, time_zone: Option<&str>, after_ms: i64) -> Result<i64, ActorError> {
    let schedule = parse_cron(cron)?;
    let after = chrono::Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or_else(|| ActorError::bad_request(format!("time {after_ms} ms is out of range")))?;
    let next = match time_zone {
        None => schedule.find_next_occurrence(&after, false).map(|t| t.timestamp_millis()),
        Some(name) => {
            let tz = parse_time_zone(name)?;
            schedule.find_next_occurrence(&after.with_timezone(&tz), false).map(|t| t.timestamp_millis())
        }
    };
    next.map_err(|e| ActorError::bad_request(format!("cron expression {cron:?} has no next tick: {e}")))
}

fn parse_cron(cron: &str) -> Result<croner::Cron, ActorError> {
    croner::Cron::new(cron).with_seconds_optional().parse().map_err(|e| {
        ActorError::bad_request(format!(
            "invalid cron expression {cron:?}: {e} (five fields: minute hour day-of-month month day-of-week, e.g. `*/5 * * * *`; \
             an optional sixth field in front for seconds)"
        ))
    })
}

fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, ActorError> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| ActorError::bad_request(format!("unknown time zone {name:?}: use an IANA name such as `Europe/Paris` or `UTC`")))
}

fn hex_digest(text: &str, len: usize) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).take(len.div_ceil(2)).collect::<String>()[..len].to_string()
}

/// The last 8 characters of the id of every job `scheduler` scheduled (an
/// actor id, or `None` for jobs added from outside a turn): a turn may
/// cancel a job it scheduled, or one that targets it, and no other.
pub fn owner_tag(scheduler: Option<&str>) -> String {
    hex_digest(&format!("owner\n{}", scheduler.unwrap_or("")), 8)
}

/// The id of a job. With an idempotency key it is derived from the key,
/// scoped by who schedules it and its target, so that scheduling the same
/// key twice (even from two turns at once) names one job, while the same
/// key from another scheduler or for another target names another; it
/// ends with the scheduler's [`owner_tag`].
pub fn job_id(scheduler: Option<&str>, target: &str, idempotency_key: Option<&str>) -> String {
    let tag = owner_tag(scheduler);
    match idempotency_key {
        Some(key) => format!("k{}{tag}", hex_digest(&format!("{}\n{target}\n{key}", scheduler.unwrap_or("")), 23)),
        // Time first: ids of new jobs sort together, so the primary-key
        // index grows at its right edge instead of touching random pages.
        None => format!("j{:011x}{}{tag}", crate::storage::now_ms(), crate::storage::jobs::new_lease()),
    }
}

/// The delay before attempt `attempt + 1`: `backoff * 2^(attempt-1)`, at
/// most `max_backoff`, with ±50% jitter so a burst of failures does not
/// retry in lockstep.
pub fn retry_delay_ms(job: &JobRecord, attempt: u32) -> u64 {
    backoff_ms(job.backoff_ms, job.max_backoff_ms, attempt)
}

/// Exponential backoff with ±50% jitter: `base * 2^(attempt-1)`, at most
/// `max`, then spread so that failures at the same time do not retry in
/// lockstep (jobs, and outbox deliveries).
pub fn backoff_ms(base: u64, max: u64, attempt: u32) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let capped = exp.min(max).max(1);
    let jitter = RandomState::new().hash_one(attempt) % 1000;
    capped / 2 + capped * jitter / 2000
}

/// Turns a request from outside a turn into the stored job: checks it,
/// gives it an id and its first run time.
pub fn plan(request: JobRequest, now_ms: i64) -> Result<JobRecord, ActorError> {
    plan_for(request, now_ms, None)
}

/// Like [`plan`], for a job `scheduler` schedules in a turn (`None`: from
/// outside a turn): its idempotency key is scoped by the scheduler.
pub fn plan_for(request: JobRequest, now_ms: i64, scheduler: Option<&str>) -> Result<JobRecord, ActorError> {
    if request.method.is_empty() {
        return Err(ActorError::bad_request("a job needs the method its turn calls"));
    }
    let max_attempts = request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
        return Err(ActorError::bad_request(format!("max_attempts must be 1 to {MAX_ATTEMPTS}, not {max_attempts}")));
    }
    let queue = request.queue.unwrap_or_else(|| "default".into());
    if queue.is_empty() || queue.len() > MAX_QUEUE_NAME || !queue.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ActorError::bad_request(format!("bad queue name {queue:?}: 1 to {MAX_QUEUE_NAME} letters, digits, `-`, `_` or `.`")));
    }
    if let Some(tz) = &request.time_zone {
        parse_time_zone(tz)?;
    }
    let (run_at_ms, cron) = match request.when {
        When::At(at) => (at, None),
        When::Delay(ms) => (now_ms.saturating_add(ms.min(i64::MAX as u64) as i64), None),
        When::Cron(expr) => (next_tick(&expr, request.time_zone.as_deref(), now_ms)?, Some(expr)),
    };
    if cron.is_none() && request.time_zone.is_some() {
        return Err(ActorError::bad_request("`time_zone` applies to `cron` jobs only"));
    }
    Ok(JobRecord {
        id: job_id(scheduler, request.target.as_str(), request.idempotency_key.as_deref()),
        target: request.target.to_string(),
        method: request.method,
        payload: request.payload,
        queue,
        priority: request.priority,
        status: JobStatus::Scheduled,
        run_at_ms,
        cron,
        time_zone: request.time_zone,
        catch_up: request.catch_up,
        attempts: 0,
        max_attempts,
        backoff_ms: request.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
        max_backoff_ms: request.max_backoff_ms.unwrap_or(DEFAULT_MAX_BACKOFF_MS),
        timeout_ms: request.timeout_ms,
        idempotency_key: request.idempotency_key,
        cancel_requested: false,
        progress: None,
        progress_note: None,
        errors: Vec::new(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    })
}

impl Host {
    fn job_store_or_err(&self) -> Result<&dyn JobStore, ActorError> {
        self.store().job_store().ok_or_else(|| {
            ActorError::unavailable(format!(
                "durable jobs are not available on the {} store yet; use SQLite or PostgreSQL",
                self.store().backend_name()
            ))
        })
    }

    /// Checks, plans and stores jobs from outside a turn; returns them as
    /// added. A job with an idempotency key is read back (in batches of up
    /// to 100), as the existing job for a repeated key.
    pub async fn add_jobs(&self, requests: Vec<JobRequest>) -> Result<Vec<JobRecord>, ActorError> {
        Ok(self.add_jobs_counted(requests).await?.0)
    }

    /// Like [`Host::add_jobs`], also saying how many jobs were new (a job
    /// whose idempotency key names a stored job is not).
    pub async fn add_jobs_counted(&self, requests: Vec<JobRequest>) -> Result<(Vec<JobRecord>, u64), ActorError> {
        let store = self.job_store_or_err()?;
        let now = crate::storage::now_ms();
        let mut planned = Vec::with_capacity(requests.len());
        for request in requests {
            self.registry().active(request.target.actor_type())?;
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
        self.wake_jobs();
        if let Err(e) = store.announce_jobs().await {
            tracing::debug!(error = %e, "announcing new jobs failed; other hosts find them by polling");
        }
        Ok((planned, added))
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, status: Option<JobStatus>, target: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, ActorError> {
        Ok(self.job_store_or_err()?.jobs(status, target, limit.clamp(1, 10_000)).await?)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<JobRecord, ActorError> {
        self.job_store_or_err()?.job(id).await?.ok_or_else(|| ActorError::not_found(format!("no job {id}")))
    }

    /// Cancels a job: a running attempt finishes, no further one starts.
    pub async fn cancel_job(&self, id: &str) -> Result<JobRecord, ActorError> {
        let store = self.job_store_or_err()?;
        if !store.cancel_job(id).await? {
            let job = self.job(id).await?;
            return Err(ActorError::rejected(format!("job {id} is {} already: there is nothing to cancel", job.status.as_str())));
        }
        self.job(id).await
    }

    /// Runs a dead or failed job again now, with fresh attempts.
    pub async fn retry_job(&self, id: &str) -> Result<JobRecord, ActorError> {
        let store = self.job_store_or_err()?;
        // Read first: a dead or failed job is left alone by every runner,
        // while a retried one may be running by the time it is read back.
        let mut job = self.job(id).await?;
        let now = crate::storage::now_ms();
        if !store.retry_job(id, now).await? {
            let job = self.job(id).await?;
            return Err(ActorError::rejected(format!("job {id} is {}: only dead or failed jobs can be retried", job.status.as_str())));
        }
        // What the retry changed (see `JobStore::retry_job`).
        (job.status, job.run_at_ms, job.attempts, job.updated_at_ms) = (JobStatus::Scheduled, now, 0, now);
        self.wake_jobs();
        Ok(job)
    }

    /// Deletes every job with `status` (the dead-letter list, say).
    pub async fn purge_jobs(&self, status: JobStatus) -> Result<u64, ActorError> {
        if matches!(status, JobStatus::Running | JobStatus::Scheduled | JobStatus::Failed) {
            return Err(ActorError::bad_request("only succeeded, dead or cancelled jobs can be purged; cancel live ones first"));
        }
        Ok(self.job_store_or_err()?.purge_jobs(status, None).await?)
    }
}

/// How long finished jobs are kept unless configured (`--job-retention`),
/// as River keeps completed jobs.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Deletes succeeded and cancelled jobs past the retention, every tenth of
/// it (at most every ten minutes), for as long as the host lives. Dead
/// jobs are the dead-letter list: they stay until retried or purged.
pub(crate) fn spawn_retention(host: &Host) {
    let retention = host.config().job_retention;
    host.spawn_sweep(retention, Duration::from_secs(600), move |host: Host| async move {
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
