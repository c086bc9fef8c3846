//! Durable jobs: the records the store keeps, and the pure planning a
//! request goes through before it is one (ids, cron ticks, backoff).
//!
//! A job is claimed with a lease (a random token and an expiry). Its turn
//! commits the job's completion in the same transaction as the turn's
//! effects, on the condition that the lease is still the one it claimed
//! with, so a job whose host died and whose lease another host took over
//! cannot complete twice.


use chrono::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ActorError;
use crate::id::ActorId;

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
    #[serde(with = "crate::journal::json_or_base64")]
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


/// Most errors kept per job: the first ones say what broke, the last ones
/// whether it still does.
pub const MAX_JOB_ERRORS: usize = 20;

/// Appends an attempt's error to a job's JSON error list, keeping the first
/// and the latest when it grows past [`MAX_JOB_ERRORS`].
pub fn push_job_error(errors_json: &str, attempt: u32, error: &str) -> String {
    let mut errors: Vec<JobError> = serde_json::from_str(errors_json).unwrap_or_default();
    errors.push(JobError { attempt, at_ms: crate::time::now_ms(), error: error.chars().take(4000).collect() });
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
    let random = RandomState::new().hash_one((n, std::process::id(), crate::time::now_ms()));
    format!("{random:016x}{n:x}")
}



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
                serde_json::Value::String(s) => crate::time::parse_time(&s)?,
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
        None => format!("j{:011x}{}{tag}", crate::time::now_ms(), new_lease()),
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
