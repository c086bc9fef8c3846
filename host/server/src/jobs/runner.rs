//! The job runner: one task per host that claims due jobs in batches and
//! runs each as a turn of its target, within the host's concurrency limits
//! (in total, per queue and per actor type), so a burst of jobs cannot
//! starve interactive turns.
//!
//! It wakes when a job is scheduled on this host, when a running job ends,
//! at the next due time, and at least every [`POLL`] for jobs scheduled by
//! other hosts.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{next_tick, retry_delay_ms};
use crate::error::ErrorKind;
use crate::id::ActorId;
use quark_runtime::{Control, JobTurn, Request};

use super::JobsInner;
use crate::storage::jobs::{CatchUp, ClaimFilter, JobClaim, JobCompletion, JobFailure, JobRecord};

/// Longest sleep between looks at the store, by default.
pub const POLL: Duration = Duration::from_secs(1);

/// Most jobs one claim takes.
pub const CLAIM_BATCH: usize = 256;

/// Most claims one host has in flight at once.
pub const CLAIMS_IN_FLIGHT: usize = 2;

/// How often claims look for running jobs whose lease expired.
const EXPIRED_CHECK: Duration = Duration::from_secs(1);

/// Longest an effect-free run's completion waits for the next claim
/// before it is written on its own.
pub const COMPLETION_DELAY: Duration = Duration::from_millis(5);

/// A job attempt that has started: its turn was dispatched to the target.
#[derive(Debug, Clone)]
pub struct JobStarted {
    /// The job.
    pub id: String,
    /// Which attempt (1, 2, …).
    pub attempt: u32,
    /// When, on this host's monotonic clock.
    pub at: Instant,
}

/// The runner's shared state: what runs now, and its wake-up.
pub(crate) struct JobRunner {
    wake: tokio::sync::Notify,
    running: AtomicUsize,
    per_queue: Mutex<HashMap<String, usize>>,
    per_type: Mutex<HashMap<String, usize>>,
    started: tokio::sync::broadcast::Sender<JobStarted>,
    /// Completions of effect-free runs waiting for the next claim, and
    /// since when the oldest waits.
    completed: Mutex<(Vec<JobCompletion>, Option<Instant>)>,
    /// When a claim last looked for expired leases.
    expired_checked: Mutex<Option<Instant>>,
    /// Slots taken by claims in flight.
    reserved: AtomicUsize,
    claims_in_flight: AtomicUsize,
    /// Claims that failed in a row (the loop backs off).
    claim_failures: AtomicU32,
    /// The last claim took fewer jobs than it asked for: the loop asks the
    /// store when the next job is due.
    claim_came_back_short: AtomicBool,
    /// Set by [`crate::jobs::Jobs::stop`]: claim no more jobs.
    pub(crate) stopping: AtomicBool,
}

impl Default for JobRunner {
    fn default() -> Self {
        JobRunner {
            wake: Default::default(),
            running: Default::default(),
            per_queue: Default::default(),
            per_type: Default::default(),
            started: tokio::sync::broadcast::channel(1024).0,
            completed: Mutex::default(),
            expired_checked: Mutex::default(),
            reserved: AtomicUsize::new(0),
            claims_in_flight: AtomicUsize::new(0),
            claim_failures: AtomicU32::new(0),
            claim_came_back_short: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }
}

impl JobRunner {
    /// Jobs running and claims in flight on this host.
    pub(crate) fn busy(&self) -> usize {
        self.running.load(Ordering::Acquire) + self.claims_in_flight.load(Ordering::Acquire)
    }

    /// Wakes the runner because jobs were added (here or, announced, on
    /// another host): the next claim may find some.
    pub(crate) fn wake(&self) {
        self.claim_came_back_short.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    /// Every job attempt started from now on.
    pub(crate) fn subscribe_starts(&self) -> tokio::sync::broadcast::Receiver<JobStarted> {
        self.started.subscribe()
    }

    fn filter(&self, queue_limits: &HashMap<String, usize>, type_limits: &HashMap<String, usize>) -> ClaimFilter {
        let full = |counts: &HashMap<String, usize>, limits: &HashMap<String, usize>| {
            limits.iter().filter(|(name, limit)| counts.get(*name).copied().unwrap_or(0) >= **limit).map(|(n, _)| n.clone()).collect()
        };
        // Expired leases are looked for about once a second: a lease lasts far longer.
        let skip_expired = {
            let mut last = self.expired_checked.lock();
            if last.is_some_and(|t| t.elapsed() < EXPIRED_CHECK) {
                true
            } else {
                *last = Some(Instant::now());
                false
            }
        };
        ClaimFilter {
            full_queues: full(&self.per_queue.lock(), queue_limits),
            full_types: full(&self.per_type.lock(), type_limits),
            skip_expired,
        }
    }

    fn defer_completion(&self, completion: JobCompletion) {
        let mut completed = self.completed.lock();
        completed.0.push(completion);
        completed.1.get_or_insert_with(Instant::now);
    }

    /// How long until waiting completions must be written (zero: now).
    fn completions_due_in(&self) -> Option<Duration> {
        self.completed.lock().1.map(|since| COMPLETION_DELAY.saturating_sub(since.elapsed()))
    }

    fn take_completions(&self) -> Vec<JobCompletion> {
        let mut completed = self.completed.lock();
        completed.1 = None;
        std::mem::take(&mut completed.0)
    }

    /// Puts completions back after a failed write.
    fn restore_completions(&self, mut back: Vec<JobCompletion>) {
        let mut completed = self.completed.lock();
        back.append(&mut completed.0);
        completed.0 = back;
        completed.1.get_or_insert_with(Instant::now);
    }

    fn started(&self, queue: &str, actor_type: &str) {
        self.running.fetch_add(1, Ordering::AcqRel);
        *self.per_queue.lock().entry(queue.to_string()).or_default() += 1;
        *self.per_type.lock().entry(actor_type.to_string()).or_default() += 1;
    }

    fn finished(&self, queue: &str, actor_type: &str) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = self.per_queue.lock().get_mut(queue) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.per_type.lock().get_mut(actor_type) {
            *n = n.saturating_sub(1);
        }
        // A slot is free; the store has no more due jobs than it had.
        self.wake.notify_one();
    }
}

/// The runner loop; ends when the jobs service is dropped.
///
/// Claims run as their own tasks, up to [`CLAIMS_IN_FLIGHT`] at once (one
/// when queue or type limits are set, so the limits hold), each taking
/// the slots it asks for until it returns: on PostgreSQL, claims skip each
/// other's locked rows, so a second claim overlaps the first's round trips.
pub(crate) async fn run(service: Weak<JobsInner>) {
    loop {
        let Some(strong) = service.upgrade() else { return };
        let Some(store) = strong.host.store().job_store() else { return };
        let runner = strong.runner.clone();
        if runner.stopping.load(Ordering::Acquire) {
            return;
        }
        let config = &strong.config;
        let running = runner.running.load(Ordering::Acquire) + runner.reserved.load(Ordering::Acquire);
        let free = config.concurrency.saturating_sub(running);
        let limited = !config.queue_limits.is_empty() || !config.type_limits.is_empty();
        let max_in_flight = if limited { 1 } else { CLAIMS_IN_FLIGHT };
        let in_flight = runner.claims_in_flight.load(Ordering::Acquire);
        let failures = runner.claim_failures.load(Ordering::Acquire);
        // Claim in batches: while jobs run, wait until a quarter of the
        // slots are free, so each claim (a write) takes many jobs. The same
        // write ends the effect-free runs that finished meanwhile; if no
        // claim is due, they are written alone once they waited long enough.
        let short = runner.claim_came_back_short.load(Ordering::Acquire);
        let can_claim =
            !short && free > 0 && (running == 0 || free >= (config.concurrency / 4).max(1)) && in_flight < max_in_flight;
        // Idle, nothing will claim soon: write them now.
        let completions_due =
            runner.completions_due_in().is_some_and(|d| d.is_zero() || running == 0) && in_flight < max_in_flight;
        if failures == 0 && (can_claim || completions_due) {
            let max = if can_claim { free.min(CLAIM_BATCH) } else { 0 };
            runner.reserved.fetch_add(max, Ordering::AcqRel);
            runner.claims_in_flight.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(claim(strong, max));
            continue;
        }
        let mut wait = if failures > 0 {
            Duration::from_millis(50 << failures.min(5))
        } else if !short || in_flight > 0 {
            // Slots or claims are busy: a finishing job or claim wakes the
            // loop; the store is asked about due times only once a claim
            // came back short.
            config.poll
        } else {
            match store.next_job_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis((due - crate::storage::now_ms()).clamp(1, config.poll.as_millis() as i64) as u64)
                }
                _ => config.poll,
            }
        };
        if let Some(due_in) = runner.completions_due_in() {
            wait = wait.min(due_in.max(Duration::from_micros(100)));
        }
        drop(strong);
        if tokio::time::timeout(wait, runner.wake.notified()).await.is_err() {
            // Time passed: jobs may have come due (or the backoff is over).
            runner.claim_failures.store(0, Ordering::Release);
            runner.claim_came_back_short.store(false, Ordering::Release);
        }
    }
}

/// One claim (with the completions waiting for it), holding `max`
/// reserved slots until it returns; starts a task per claimed job.
async fn claim(service: Arc<JobsInner>, max: usize) {
    let (host, runner, config) = (&service.host, &service.runner, &service.config);
    let filter = runner.filter(&config.queue_limits, &config.type_limits);
    let lease_ms = config.lease.as_millis() as i64;
    let completed = runner.take_completions();
    let result = match host.store().job_store() {
        Some(store) => store.claim_jobs(crate::storage::now_ms(), max, lease_ms, &filter, &completed).await,
        None => Ok(Vec::new()),
    };
    match result {
        Ok(claims) => {
            runner.claim_failures.store(0, Ordering::Release);
            if max > 0 {
                runner.claim_came_back_short.store(claims.len() < max, Ordering::Release);
            }
            for claim in claims {
                let actor_type = claim.job.target.split_once('/').map_or("", |(t, _)| t).to_string();
                runner.started(&claim.job.queue, &actor_type);
                tokio::spawn(run_one(service.clone(), claim, actor_type));
            }
        }
        Err(e) => {
            runner.claim_failures.fetch_add(1, Ordering::AcqRel);
            runner.restore_completions(completed);
            tracing::warn!(error = %e, "claiming due jobs failed; retrying");
        }
    }
    runner.reserved.fetch_sub(max, Ordering::AcqRel);
    runner.claims_in_flight.fetch_sub(1, Ordering::AcqRel);
    runner.wake.notify_one();
}

/// Runs one claimed job as a turn of its target, then records a failure
/// (success is recorded by the turn's own commit).
/// What a claimed run of a job does about its schedule.
enum Tick {
    /// Run it; a recurring job then moves to this next tick.
    Run(Option<i64>),
    /// Skip this missed tick of a `skip` job: move to the next from now.
    Skip(Option<i64>),
    /// Its schedule cannot be planned: dead-letter it with this reason.
    Broken(String),
}

/// Plans a claimed run of `job` at `now` against its catch-up policy.
fn plan_tick(job: &JobRecord, now: i64) -> Tick {
    let Some(cron) = &job.cron else { return Tick::Run(None) };
    let tz = job.time_zone.as_deref();
    let after_due = match next_tick(cron, tz, job.run_at_ms) {
        Ok(t) => t,
        Err(e) => return Tick::Broken(e.message),
    };
    let missed = after_due <= now;
    match job.catch_up {
        CatchUp::All => Tick::Run(Some(after_due)),
        CatchUp::Once if missed => Tick::Run(next_tick(cron, tz, now).ok()),
        CatchUp::Once => Tick::Run(Some(after_due)),
        // This tick is one of several missed: skip to the next from now.
        CatchUp::Skip if missed => Tick::Skip(next_tick(cron, tz, now).ok()),
        CatchUp::Skip => Tick::Run(Some(after_due)),
    }
}

async fn run_one(service: Arc<JobsInner>, claim: JobClaim, actor_type: String) {
    let (host, job) = (&service.host, &claim.job);
    let store = host.store().clone();
    let Some(jobs) = store.job_store() else { return };
    let fail = |error: String, retry_at_ms: Option<i64>| JobFailure { id: job.id.clone(), lease: claim.lease.clone(), error, retry_at_ms };
    let now = crate::storage::now_ms();
    let outcome = async {
        if job.attempts > job.max_attempts {
            let error = format!("attempt {} of {}: the lease of every earlier attempt expired (its host died or hung)", job.attempts, job.max_attempts);
            let _ = jobs.fail_job(&fail(error, None)).await;
            return;
        }
        let next_run_at_ms = match plan_tick(job, now) {
            Tick::Run(next) => next,
            Tick::Skip(next) => {
                if let Some(next) = next {
                    let _ = jobs.reschedule_job(&job.id, &claim.lease, next).await;
                }
                return;
            }
            Tick::Broken(error) => {
                let _ = jobs.fail_job(&fail(error, None)).await;
                return;
            }
        };
        let Ok(target) = ActorId::parse(&job.target) else {
            let _ = jobs.fail_job(&fail(format!("bad target {:?}", job.target), None)).await;
            return;
        };
        let timeout = job.timeout_ms.map_or(host.config().call_timeout, super::ms);
        let completion = JobCompletion { id: job.id.clone(), lease: claim.lease.clone(), next_run_at_ms };
        let effect_free = Arc::new(AtomicBool::new(false));
        let turn = JobTurn { completion: completion.clone(), attempt: job.attempts, effect_free: effect_free.clone() };
        // Due to start: the scheduling lag users watch (Temporal's schedule-to-start).
        let wall_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        host.metrics().record_job_start_delay(Duration::from_secs_f64(((wall_ms - job.run_at_ms as f64) / 1000.0).max(0.0)));
        let runner = &service.runner;
        if runner.started.receiver_count() > 0 {
            let _ = runner.started.send(JobStarted { id: job.id.clone(), attempt: job.attempts, at: Instant::now() });
        }
        let request = Request {
            target,
            method: job.method.clone(),
            payload: job.payload.clone(),
            chain: quark_core::ChainId::fresh(),
            caller: None,
            deadline: Instant::now() + timeout,
            control: Some(Box::new(Control::Job(turn))),
        };
        match host.ask_request(request).await {
            Ok(_) => {
                if effect_free.load(Ordering::Acquire) {
                    service.runner.defer_completion(completion);
                }
                host.metrics().record_job(true)
            }
            // The lease moved to another run: that run owns the job now.
            Err(e) if e.kind == ErrorKind::Conflict && e.message.contains("no longer leased") => {}
            // A method the actor does not have will not appear by retrying
            // (a component declares no method list the host could check at
            // enqueue), nor will a payload the method cannot decode start to
            // fit: dead-lettered at once, to retry after a deploy.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadRequest) => {
                host.metrics().record_job(false);
                let fix = if e.kind == ErrorKind::NotFound { "deploy a version that has it" } else { "deploy a version that accepts this payload" };
                let error = format!("{e} (not retried: {fix}, then `quark jobs retry {}`)", job.id);
                if let Err(store_error) = jobs.fail_job(&fail(error, None)).await {
                    tracing::warn!(job = %job.id, error = %store_error, "recording a failed job attempt failed; its lease will expire");
                }
            }
            Err(e) => {
                host.metrics().record_job(false);
                let retry_at = (job.attempts < job.max_attempts).then(|| now + retry_delay_ms(job, job.attempts) as i64);
                if let Err(store_error) = jobs.fail_job(&fail(e.to_string(), retry_at)).await {
                    tracing::warn!(job = %job.id, error = %store_error, "recording a failed job attempt failed; its lease will expire");
                }
            }
        }
    };
    outcome.await;
    service.runner.finished(&job.queue, &actor_type);
}
