//! The [`JobStore`] trait; the job records are `quark_core::jobs`'.

use async_trait::async_trait;

pub use quark_core::jobs::*;

use crate::StoreError;

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

    /// Ends the lease of every running job now, so the next claim takes
    /// them over; how many. Only for a host that is its store's one user
    /// (the embedded store, whose data directory one process holds): at
    /// its start, every job still running was its previous process's,
    /// which died, and waiting out the lease (a minute) would only delay
    /// them (a workflow's timer, a retry).
    async fn expire_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let _ = now_ms;
        Ok(0)
    }

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
