//! The job runner: one task per host that claims due jobs in batches and
//! runs each as a turn of its target, within the host's concurrency limits
//! (in total, per queue and per actor type), so a burst of jobs cannot
//! starve interactive turns.
//!
//! It wakes when a job is scheduled on this host, when a running job ends,
//! at the next due time, and at least every [`POLL`] for jobs scheduled by
//! other hosts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{next_tick, retry_delay_ms};
use crate::error::ErrorKind;
use crate::id::ActorId;
use crate::runtime::{Control, Host, Request, WeakHost, new_chain_id};
use crate::storage::jobs::{CatchUp, ClaimFilter, JobClaim, JobCompletion, JobFailure};

/// Longest sleep between looks at the store, by default.
pub const POLL: Duration = Duration::from_secs(1);

/// Most jobs one claim takes.
pub const CLAIM_BATCH: usize = 256;

/// How a job's turn learns which job it runs.
#[derive(Debug, Clone)]
pub(crate) struct JobTurn {
    pub(crate) completion: JobCompletion,
    pub(crate) attempt: u32,
}

/// The runner's shared state: what runs now, and its wake-up.
#[derive(Default)]
pub(crate) struct JobRunner {
    wake: tokio::sync::Notify,
    running: AtomicUsize,
    per_queue: Mutex<HashMap<String, usize>>,
    per_type: Mutex<HashMap<String, usize>>,
}

impl JobRunner {
    /// Wakes the runner (a job was scheduled or finished).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    fn filter(&self, queue_limits: &HashMap<String, usize>, type_limits: &HashMap<String, usize>) -> ClaimFilter {
        let full = |counts: &HashMap<String, usize>, limits: &HashMap<String, usize>| {
            limits.iter().filter(|(name, limit)| counts.get(*name).copied().unwrap_or(0) >= **limit).map(|(n, _)| n.clone()).collect()
        };
        ClaimFilter { full_queues: full(&self.per_queue.lock(), queue_limits), full_types: full(&self.per_type.lock(), type_limits) }
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
        self.wake();
    }
}

/// The runner loop; ends when the host is dropped.
pub(crate) async fn run(host: WeakHost) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = host.upgrade() else { return };
        let Some(store) = strong.store().job_store() else { return };
        let runner = strong.job_runner();
        let config = strong.config();
        let running = runner.running.load(Ordering::Acquire);
        let free = config.job_concurrency.saturating_sub(running);
        let mut claimed = 0;
        // Claim in batches: while jobs run, wait until a quarter of the
        // slots are free, so each claim (a write) takes many jobs.
        if free > 0 && (running == 0 || free >= (config.job_concurrency / 4).max(1)) {
            let filter = runner.filter(&config.job_queue_limits, &config.job_type_limits);
            let lease_ms = config.job_lease.as_millis() as i64;
            match store.claim_jobs(crate::storage::now_ms(), free.min(CLAIM_BATCH), lease_ms, &filter).await {
                Ok(claims) => {
                    failures = 0;
                    claimed = claims.len();
                    for claim in claims {
                        let actor_type = claim.job.target.split_once('/').map_or("", |(t, _)| t).to_string();
                        // A type over its limit claimed in this batch waits its turn here.
                        runner.started(&claim.job.queue, &actor_type);
                        tokio::spawn(run_one(strong.clone(), claim, actor_type));
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "claiming due jobs failed; retrying");
                }
            }
        }
        if claimed > 0 && claimed == free.min(CLAIM_BATCH) {
            continue;
        }
        let wait = if failures > 0 {
            Duration::from_millis(50 << failures.min(5))
        } else {
            match store.next_job_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis((due - crate::storage::now_ms()).clamp(1, config.job_poll.as_millis() as i64) as u64)
                }
                _ => config.job_poll,
            }
        };
        let runner_wake = strong.job_runner_arc();
        drop(strong);
        let _ = tokio::time::timeout(wait, runner_wake.wake.notified()).await;
    }
}

/// Runs one claimed job as a turn of its target, then records a failure
/// (success is recorded by the turn's own commit).
async fn run_one(host: Host, claim: JobClaim, actor_type: String) {
    let job = &claim.job;
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
        let next_run_at_ms = match &job.cron {
            None => None,
            Some(cron) => {
                let tz = job.time_zone.as_deref();
                let after_due = match next_tick(cron, tz, job.run_at_ms) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = jobs.fail_job(&fail(e.message, None)).await;
                        return;
                    }
                };
                let missed = after_due <= now;
                match job.catch_up {
                    CatchUp::All => Some(after_due),
                    CatchUp::Once if missed => next_tick(cron, tz, now).ok(),
                    CatchUp::Once => Some(after_due),
                    CatchUp::Skip if missed => {
                        // This tick is one of several missed: skip to the next from now.
                        if let Ok(next) = next_tick(cron, tz, now) {
                            let _ = jobs.reschedule_job(&job.id, &claim.lease, next).await;
                        }
                        return;
                    }
                    CatchUp::Skip => Some(after_due),
                }
            }
        };
        let Ok(target) = ActorId::parse(&job.target) else {
            let _ = jobs.fail_job(&fail(format!("bad target {:?}", job.target), None)).await;
            return;
        };
        let timeout = job.timeout_ms.map_or(host.config().call_timeout, super::ms);
        let turn = JobTurn {
            completion: JobCompletion { id: job.id.clone(), lease: claim.lease.clone(), next_run_at_ms },
            attempt: job.attempts,
        };
        let request = Request {
            target,
            method: job.method.clone(),
            payload: job.payload.clone(),
            chain: new_chain_id(),
            caller: None,
            deadline: Instant::now() + timeout,
            control: Some(Box::new(Control::Job(turn))),
        };
        match host.ask_request(request).await {
            Ok(_) => host.metrics().record_job(true),
            // The lease moved to another run: that run owns the job now.
            Err(e) if e.kind == ErrorKind::Conflict && e.message.contains("no longer leased") => {}
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
    host.job_runner().finished(&job.queue, &actor_type);
}

impl Host {
    /// Wakes the job runner.
    pub(crate) fn wake_jobs(&self) {
        self.job_runner().wake();
    }

    /// Wakes the job runner after a test wrote jobs to the store directly.
    #[doc(hidden)]
    pub fn wake_jobs_for_tests(&self) {
        self.wake_jobs();
    }

    pub(crate) fn job_runner_arc(&self) -> Arc<JobRunner> {
        self.job_runner_shared().clone()
    }
}
