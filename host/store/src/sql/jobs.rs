//! Durable jobs in SQL: job rows, claims, completions in the turn's commit.

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::{Arg, Conn, Dialect, SqlRow, SqlStore, param_pairs, params, placeholders, pow2_chunks};
use crate::jobs::{CatchUp, ClaimFilter, JobClaim, JobCompletion, JobFailure, JobRecord, JobStatus, JobStore};
use crate::{StoreError, TurnCommit};

/// The columns of a job row, in the order [`job_from_row`] reads them.
const JOB_COLUMNS: &str = "id, target, method, payload, queue, priority, status, run_at_ms, cron, time_zone, catch_up, \
     attempts, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, idempotency_key, cancel_requested, progress, progress_note, \
     errors, created_at_ms, updated_at_ms";

/// Reads a job row selected with [`JOB_COLUMNS`].
fn job_from_row<D: Dialect>(row: &SqlRow<D>) -> Result<JobRecord, StoreError> {
    let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("job row, {what}: {e}"));
    let errors = D::text(row, "errors")?;
    Ok(JobRecord {
        id: D::text(row, "id")?,
        target: D::text(row, "target")?,
        method: D::text(row, "method")?,
        payload: D::bytes(row, "payload")?,
        queue: D::text(row, "queue")?,
        priority: D::int(row, "priority")? as i32,
        status: D::text(row, "status")?.parse().map_err(|e| corrupt("status", e))?,
        run_at_ms: D::int(row, "run_at_ms")?,
        cron: D::opt_text(row, "cron")?,
        time_zone: D::opt_text(row, "time_zone")?,
        catch_up: D::text(row, "catch_up")?.parse().map_err(|e| corrupt("catch_up", e))?,
        attempts: D::int(row, "attempts")? as u32,
        max_attempts: D::int(row, "max_attempts")? as u32,
        backoff_ms: D::int(row, "backoff_ms")? as u64,
        max_backoff_ms: D::int(row, "max_backoff_ms")? as u64,
        timeout_ms: D::opt_int(row, "timeout_ms")?.map(|t| t as u64),
        idempotency_key: D::opt_text(row, "idempotency_key")?,
        cancel_requested: D::int(row, "cancel_requested")? != 0,
        progress: D::opt_int(row, "progress")?.map(|p| p.clamp(0, 100) as u8),
        progress_note: D::opt_text(row, "progress_note")?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt("errors", e.to_string()))?,
        created_at_ms: D::int(row, "created_at_ms")?,
        updated_at_ms: D::int(row, "updated_at_ms")?,
    })
}

/// Cancels a job: at once unless it is running, whose run then ends cancelled.
const CANCEL_JOB: &str = "UPDATE jobs SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
     cancel_requested = 1, updated_at_ms = $2 WHERE id = $1 AND status IN ('scheduled', 'failed', 'running')";

/// Writes the job effects of a batch of turns inside its transaction:
/// schedules, cancels, and completions (which must still hold their lease).
pub(crate) async fn commit_jobs<D: Dialect>(tx: &mut Conn<D>, batch: &[TurnCommit]) -> Result<(), StoreError> {
    let now = crate::now_ms();
    let new: Vec<&JobRecord> = batch.iter().flat_map(|c| c.jobs.iter()).collect();
    insert_jobs::<D>(tx, &new).await?;
    for id in batch.iter().flat_map(|c| c.cancels.iter()) {
        D::execute(tx, CANCEL_JOB, &[id.into(), now.into()]).await?;
    }
    let done: Vec<&JobCompletion> = batch.iter().filter_map(|c| c.job_done.as_ref()).collect();
    if complete_runs::<D>(tx, &done).await? != done.len() as u64 {
        return Err(StoreError::Conflict(match done.as_slice() {
            [one] => format!("job {} is no longer leased to this run (its lease expired and another run took it)", one.id),
            _ => "a job in this batch is no longer leased to its run".into(),
        }));
    }
    Ok(())
}

/// Ends runs that still hold their lease: one-shot jobs succeed,
/// recurring ones move to their next tick. Returns how many did.
async fn complete_runs<D: Dialect>(tx: &mut Conn<D>, done: &[&JobCompletion]) -> Result<u64, StoreError> {
    let now = crate::now_ms();
    let mut completed = 0;
    // One-shot completions in one statement per chunk (power-of-two sizes,
    // so each shape is prepared once), driven by the primary key;
    // recurring ones, rarer, move to their next tick one by one.
    let (recurring, one_shot): (Vec<_>, Vec<_>) = done.iter().copied().partition(|d| d.next_run_at_ms.is_some());
    for chunk in pow2_chunks(&one_shot, 256) {
        // Each (id, lease) pair, not ids × leases: a stale lease of one job
        // must not pass because another job of the batch holds the lease it
        // has now. `id IN` keeps the primary key driving the update.
        let sql = format!(
            "UPDATE jobs SET status = 'succeeded', lease = NULL, lease_until_ms = NULL, updated_at_ms = {} \
             WHERE status = 'running' AND id IN ({}) AND (id, lease) IN (VALUES {})",
            D::param(1),
            params::<D>(2, chunk.len()),
            param_pairs::<D>(2 + chunk.len(), chunk.len())
        );
        let mut args: Vec<Arg> = Vec::with_capacity(1 + 3 * chunk.len());
        args.push(now.into());
        args.extend(chunk.iter().map(|d| Arg::from(&d.id)));
        for d in chunk {
            args.extend([Arg::from(&d.id), Arg::from(&d.lease)]);
        }
        completed += D::execute(tx, &sql, &args).await?;
    }
    for d in recurring {
        let sql = "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'scheduled' END, \
                   run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, updated_at_ms = $4 \
                   WHERE id = $1 AND lease = $2 AND status = 'running'";
        completed += D::execute(tx, sql, &[(&d.id).into(), (&d.lease).into(), d.next_run_at_ms.into(), now.into()]).await?;
    }
    Ok(completed)
}

/// The columns [`insert_jobs`] writes, one placeholder each per row.
const INSERT_JOB_COLUMNS: [&str; 21] = [
    "id", "target", "actor_type", "method", "payload", "queue", "priority", "status", "run_at_ms", "cron", "time_zone", "catch_up",
    "attempts", "max_attempts", "backoff_ms", "max_backoff_ms", "timeout_ms", "idempotency_key", "errors", "created_at_ms",
    "updated_at_ms",
];

/// Most jobs one `INSERT` writes.
const INSERT_CHUNK: usize = 512;

/// Inserts jobs, skipping ids that exist; the number inserted.
async fn insert_jobs<D: Dialect>(conn: &mut Conn<D>, jobs: &[&JobRecord]) -> Result<u64, StoreError> {
    let width = INSERT_JOB_COLUMNS.len();
    let mut inserted = 0;
    for chunk in pow2_chunks(jobs, INSERT_CHUNK) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| format!("({})", params::<D>(1 + i * width, width))).collect();
        let sql = format!("INSERT INTO jobs ({}) VALUES {} ON CONFLICT (id) DO NOTHING", INSERT_JOB_COLUMNS.join(", "), rows.join(", "));
        let mut args: Vec<Arg> = Vec::with_capacity(chunk.len() * width);
        for j in chunk {
            let actor_type = j.target.split_once('/').map_or(j.target.as_str(), |(t, _)| t);
            args.extend([
                Arg::from(&j.id),
                Arg::from(&j.target),
                Arg::from(actor_type),
                Arg::from(&j.method),
                Arg::from(j.payload.as_slice()),
                Arg::from(&j.queue),
                Arg::from(i64::from(j.priority)),
                Arg::from(j.status.as_str()),
                Arg::from(j.run_at_ms),
                Arg::from(j.cron.as_deref()),
                Arg::from(j.time_zone.as_deref()),
                Arg::from(match j.catch_up {
                    CatchUp::Once => "once",
                    CatchUp::All => "all",
                    CatchUp::Skip => "skip",
                }),
                Arg::from(0_i64),
                Arg::from(i64::from(j.max_attempts)),
                Arg::from(j.backoff_ms as i64),
                Arg::from(j.max_backoff_ms as i64),
                Arg::from(j.timeout_ms.map(|t| t as i64)),
                Arg::from(j.idempotency_key.as_deref()),
                Arg::from("[]"),
                Arg::from(j.created_at_ms),
                Arg::from(j.updated_at_ms),
            ]);
        }
        inserted += D::execute(conn, &sql, &args).await?;
    }
    Ok(inserted)
}

/// Claims up to `max` due jobs under `lease` inside `tx`: expired leases
/// first (rare), then retries, then new jobs, one statement per status,
/// so each walks the claim index in order and stops at its `LIMIT`.
async fn claim_due<D: Dialect>(
    tx: &mut Conn<D>,
    lease: &str,
    now_ms: i64,
    max: usize,
    lease_ms: i64,
    filter: &ClaimFilter,
) -> Result<Vec<SqlRow<D>>, StoreError> {
    let mut exclude = String::new();
    let mut next = 5;
    if !filter.full_queues.is_empty() {
        exclude.push_str(&format!(" AND queue NOT IN ({})", placeholders(next, filter.full_queues.len())));
        next += filter.full_queues.len();
    }
    if !filter.full_types.is_empty() {
        exclude.push_str(&format!(" AND actor_type NOT IN ({})", placeholders(next, filter.full_types.len())));
    }
    let mut rows = Vec::new();
    for (due, index) in [
        (!filter.skip_expired).then_some(("status = 'running' AND lease_until_ms < $3", None)),
        Some(("status = 'failed' AND run_at_ms <= $3", Some("jobs_failed"))),
        Some(("status = 'scheduled' AND run_at_ms <= $3", Some("jobs_scheduled"))),
    ]
    .into_iter()
    .flatten()
    {
        let want = max.saturating_sub(rows.len());
        if want == 0 {
            break;
        }
        let hint = match index {
            Some(index) if D::CLAIM_INDEX_HINTS => format!(" INDEXED BY {index}"),
            _ => String::new(),
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', lease = $1, lease_until_ms = $2, attempts = attempts + 1, updated_at_ms = $3 \
             WHERE id IN (SELECT id FROM jobs{hint} WHERE {due}{exclude} ORDER BY priority DESC, run_at_ms LIMIT $4{}) \
             RETURNING {JOB_COLUMNS}",
            D::SKIP_LOCKED
        );
        let mut args: Vec<Arg> = vec![lease.into(), (now_ms + lease_ms).into(), now_ms.into(), (want as i64).into()];
        args.extend(filter.full_queues.iter().chain(filter.full_types.iter()).map(Arg::from));
        rows.extend(D::fetch_all(tx, &sql, &args).await?);
    }
    Ok(rows)
}

#[async_trait]
impl<S: SqlStore> JobStore for S {
    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<u64, StoreError> {
        let refs: Vec<&JobRecord> = jobs.iter().collect();
        if jobs.len() <= INSERT_CHUNK && jobs.len().is_power_of_two() {
            // One statement (`insert_jobs` writes a power of two per
            // statement): atomic on its own, one round trip instead of
            // three (BEGIN, INSERT, COMMIT).
            let mut conn = self.writer().acquire().await?;
            return insert_jobs::<S::Db>(&mut conn, &refs).await;
        }
        let mut tx = self.writer().begin().await?;
        let n = insert_jobs::<S::Db>(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn claim_jobs(
        &self,
        now_ms: i64,
        max: usize,
        lease_ms: i64,
        filter: &ClaimFilter,
        completed: &[JobCompletion],
    ) -> Result<Vec<JobClaim>, StoreError> {
        let lease = crate::jobs::new_lease();
        let mut tx = self.writer().begin_with(S::Db::CLAIM_BEGIN).await?;
        let completed: Vec<&JobCompletion> = completed.iter().collect();
        // A run whose lease lapsed meanwhile is another run's now: skip it.
        complete_runs::<S::Db>(&mut tx, &completed).await?;
        let rows = claim_due::<S::Db>(&mut tx, &lease, now_ms, max, lease_ms, filter).await?;
        tx.commit().await?;
        let mut claims = rows
            .iter()
            .map(|r| Ok(JobClaim { job: job_from_row::<S::Db>(r)?, lease: lease.clone() }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        claims.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.job.run_at_ms.cmp(&b.job.run_at_ms)));
        Ok(claims)
    }

    async fn fail_job(&self, failure: &JobFailure) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        let sql = "SELECT errors, attempts, cancel_requested FROM jobs WHERE id = $1 AND lease = $2 AND status = 'running'";
        let Some(row) = S::Db::fetch_optional(&mut tx, sql, &[(&failure.id).into(), (&failure.lease).into()]).await? else {
            return Ok(false);
        };
        let errors = crate::jobs::push_job_error(&S::Db::text(&row, "errors")?, S::Db::int(&row, "attempts")? as u32, &failure.error);
        let status = match (S::Db::int(&row, "cancel_requested")? != 0, failure.retry_at_ms) {
            (true, _) => "cancelled",
            (false, Some(_)) => "failed",
            (false, None) => "dead",
        };
        let sql = "UPDATE jobs SET status = $3, run_at_ms = COALESCE($4, run_at_ms), errors = $5, lease = NULL, \
                   lease_until_ms = NULL, updated_at_ms = $6 WHERE id = $1 AND lease = $2";
        let args = [(&failure.id).into(), (&failure.lease).into(), status.into(), failure.retry_at_ms.into(), (&errors).into(), crate::now_ms().into()];
        S::Db::execute(&mut tx, sql, &args).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reschedule_job(&self, id: &str, lease: &str, next_run_at_ms: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE jobs SET status = 'scheduled', run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, \
                   updated_at_ms = $4 WHERE id = $1 AND lease = $2 AND status = 'running'";
        let mut conn = self.writer().acquire().await?;
        Ok(S::Db::execute(&mut conn, sql, &[id.into(), lease.into(), next_run_at_ms.into(), crate::now_ms().into()]).await? == 1)
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let mut conn = self.reader().acquire().await?;
        S::Db::fetch_optional(&mut conn, &sql, &[id.into()]).await?.as_ref().map(job_from_row::<S::Db>).transpose()
    }

    async fn jobs(&self, status: Option<JobStatus>, target: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR target = $2) \
             ORDER BY created_at_ms DESC, id LIMIT $3"
        );
        let args = [status.map(|s| s.as_str()).into(), target.into(), (limit.min(i64::MAX as usize) as i64).into()];
        let mut conn = self.reader().acquire().await?;
        S::Db::fetch_all(&mut conn, &sql, &args).await?.iter().map(job_from_row::<S::Db>).collect()
    }

    async fn cancel_job(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.writer().acquire().await?;
        Ok(S::Db::execute(&mut conn, CANCEL_JOB, &[id.into(), crate::now_ms().into()]).await? == 1)
    }

    async fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE jobs SET status = 'scheduled', run_at_ms = $2, attempts = 0, cancel_requested = 0, updated_at_ms = $2 \
                   WHERE id = $1 AND status IN ('dead', 'failed')";
        let mut conn = self.writer().acquire().await?;
        Ok(S::Db::execute(&mut conn, sql, &[id.into(), now_ms.into()]).await? == 1)
    }

    async fn purge_jobs(&self, status: JobStatus, changed_before_ms: Option<i64>) -> Result<u64, StoreError> {
        let mut conn = self.writer().acquire().await?;
        let sql = "DELETE FROM jobs WHERE status = $1 AND updated_at_ms < $2";
        S::Db::execute(&mut conn, sql, &[status.as_str().into(), changed_before_ms.unwrap_or(i64::MAX).into()]).await
    }

    async fn set_job_progress(&self, id: &str, lease: &str, percent: u8, note: &str) -> Result<(), StoreError> {
        let sql = "UPDATE jobs SET progress = $3, progress_note = $4, updated_at_ms = $5 WHERE id = $1 AND lease = $2";
        let mut conn = self.writer().acquire().await?;
        let args = [id.into(), lease.into(), i64::from(percent.min(100)).into(), note.into(), crate::now_ms().into()];
        S::Db::execute(&mut conn, sql, &args).await?;
        Ok(())
    }

    async fn expire_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let sql = "UPDATE jobs SET lease_until_ms = $1 WHERE status = 'running' AND lease_until_ms >= $1";
        let mut conn = self.writer().acquire().await?;
        S::Db::execute(&mut conn, sql, &[(now_ms - 1).into()]).await
    }

    async fn next_job_due(&self) -> Result<Option<i64>, StoreError> {
        // One equality per status, so each MIN reads one index entry (an IN
        // list made SQLite scan every waiting job).
        let sql = "SELECT MIN(t) AS due FROM (SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'scheduled' \
                   UNION ALL SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'failed' \
                   UNION ALL SELECT MIN(lease_until_ms) AS t FROM jobs WHERE status = 'running') AS d";
        let mut conn = self.reader().acquire().await?;
        match S::Db::fetch_optional(&mut conn, sql, &[]).await? {
            Some(row) => S::Db::opt_int(&row, "due"),
            None => Ok(None),
        }
    }

    async fn announce_jobs(&self) -> Result<(), StoreError> {
        SqlStore::announce_jobs(self).await
    }

    async fn job_announcements(&self) -> Option<BoxStream<'static, ()>> {
        SqlStore::job_announcements(self).await
    }
}
