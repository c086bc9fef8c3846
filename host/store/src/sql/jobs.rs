//! Durable jobs in SQL: job rows, claims, completions in the turn's commit.

use crate::StoreError;

/// The columns of a job row, in the order [`job_from_row`] reads them.
pub(crate) const JOB_COLUMNS: &str = "id, target, method, payload, queue, priority, status, run_at_ms, cron, time_zone, catch_up, \
     attempts, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, idempotency_key, cancel_requested, progress, progress_note, \
     errors, created_at_ms, updated_at_ms";

/// Reads a job row selected with [`JOB_COLUMNS`].
pub(crate) fn job_from_row<R>(row: &R) -> Result<crate::jobs::JobRecord, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("job row, {what}: {e}"));
    let errors: String = row.try_get("errors")?;
    Ok(crate::jobs::JobRecord {
        id: row.try_get("id")?,
        target: row.try_get("target")?,
        method: row.try_get("method")?,
        payload: row.try_get("payload")?,
        queue: row.try_get("queue")?,
        priority: row.try_get::<i64, _>("priority")? as i32,
        status: row.try_get::<String, _>("status")?.parse().map_err(|e| corrupt("status", e))?,
        run_at_ms: row.try_get("run_at_ms")?,
        cron: row.try_get("cron")?,
        time_zone: row.try_get("time_zone")?,
        catch_up: row.try_get::<String, _>("catch_up")?.parse().map_err(|e| corrupt("catch_up", e))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        backoff_ms: row.try_get::<i64, _>("backoff_ms")? as u64,
        max_backoff_ms: row.try_get::<i64, _>("max_backoff_ms")? as u64,
        timeout_ms: row.try_get::<Option<i64>, _>("timeout_ms")?.map(|t| t as u64),
        idempotency_key: row.try_get("idempotency_key")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        progress: row.try_get::<Option<i64>, _>("progress")?.map(|p| p.clamp(0, 100) as u8),
        progress_note: row.try_get("progress_note")?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt("errors", e.to_string()))?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// Implements `JobStore` for a SQL store of database `$db` whose pools are
/// `writer` and `reader`, plus `commit_jobs`, which writes a batch's job
/// effects inside the batch's transaction. `index_hint: true` names the
/// claim index of each status (`INDEXED BY`, for SQLite, whose planner
/// without statistics sorts every due job otherwise); `$lock` ends the
/// claim's inner select (`FOR UPDATE SKIP LOCKED` on PostgreSQL);
/// `claim_begin` starts each claim's transaction.
macro_rules! sql_job_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, index_hint: $hint:expr, lock: $lock:expr) => {
        $crate::sql::sql_job_store!($store, $db, writer: $writer, reader: $reader, index_hint: $hint, lock: $lock, claim_begin: "BEGIN", announce: {});
    };
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, index_hint: $hint:expr, lock: $lock:expr, claim_begin: $claim_begin:literal, announce: { $($announce:tt)* }) => {
        impl $store {
            /// Writes the job effects of a batch of turns: schedules,
            /// cancels, and completions (which must still hold their lease).
            async fn commit_jobs(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::TurnCommit],
            ) -> Result<(), $crate::StoreError> {
                let now = $crate::now_ms();
                let new: Vec<&$crate::jobs::JobRecord> = batch.iter().flat_map(|c| c.jobs.iter()).collect();
                Self::insert_jobs(&mut **tx, &new).await?;
                for id in batch.iter().flat_map(|c| c.cancels.iter()) {
                    ::sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
                         cancel_requested = 1, updated_at_ms = $2 WHERE id = $1 AND status IN ('scheduled', 'failed', 'running')",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                let done: Vec<&$crate::jobs::JobCompletion> = batch.iter().filter_map(|c| c.job_done.as_ref()).collect();
                if Self::complete_runs(tx, &done).await? != done.len() as u64 {
                    return Err($crate::StoreError::Conflict(match done.as_slice() {
                        [one] => format!("job {} is no longer leased to this run (its lease expired and another run took it)", one.id),
                        _ => "a job in this batch is no longer leased to its run".into(),
                    }));
                }
                Ok(())
            }

            /// Ends runs that still hold their lease: one-shot jobs
            /// succeed, recurring ones move to their next tick. Returns
            /// how many did.
            async fn complete_runs(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                done: &[&$crate::jobs::JobCompletion],
            ) -> Result<u64, $crate::StoreError> {
                let now = $crate::now_ms();
                let mut completed = 0;
                // One-shot completions in one statement per chunk (power-of-two
                // sizes, so each shape is prepared once), driven by the primary
                // key; recurring ones, rarer, move to their next tick one by one.
                let (recurring, one_shot): (Vec<_>, Vec<_>) = done.iter().copied().partition(|d| d.next_run_at_ms.is_some());
                for chunk in $crate::sql::pow2_chunks(&one_shot, 256) {
                    // Each (id, lease) pair, not ids × leases: a stale lease
                    // of one job must not pass because another job of the
                    // batch holds the lease it has now. `id IN` keeps the
                    // primary key driving the update.
                    let sql = format!(
                        "UPDATE jobs SET status = 'succeeded', lease = NULL, lease_until_ms = NULL, updated_at_ms = $1 \
                         WHERE status = 'running' AND id IN ({}) AND (id, lease) IN (VALUES {})",
                        $crate::sql::placeholders(2, chunk.len()),
                        $crate::sql::lane_pairs(2 + chunk.len(), chunk.len())
                    );
                    let mut q = ::sqlx::query(&sql).bind(now);
                    for d in chunk {
                        q = q.bind(&d.id);
                    }
                    for d in chunk {
                        q = q.bind(&d.id).bind(&d.lease);
                    }
                    completed += q.execute(&mut **tx).await?.rows_affected();
                }
                for d in recurring {
                    completed += ::sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'scheduled' END, \
                         run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, updated_at_ms = $4 \
                         WHERE id = $1 AND lease = $2 AND status = 'running'",
                    )
                    .bind(&d.id)
                    .bind(&d.lease)
                    .bind(d.next_run_at_ms)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                }
                Ok(completed)
            }

            async fn insert_jobs(
                conn: &mut <$db as ::sqlx::Database>::Connection,
                jobs: &[&$crate::jobs::JobRecord],
            ) -> Result<u64, $crate::StoreError> {
                let mut inserted = 0;
                for chunk in $crate::sql::pow2_chunks(jobs, 512) {
                    let mut q = ::sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO jobs (id, target, actor_type, method, payload, queue, priority, status, run_at_ms, cron, \
                         time_zone, catch_up, attempts, max_attempts, backoff_ms, max_backoff_ms, timeout_ms, idempotency_key, \
                         errors, created_at_ms, updated_at_ms) ",
                    );
                    q.push_values(chunk, |mut row, j| {
                        let actor_type = j.target.split_once('/').map_or(j.target.as_str(), |(t, _)| t);
                        row.push_bind(j.id.as_str())
                            .push_bind(j.target.as_str())
                            .push_bind(actor_type)
                            .push_bind(j.method.as_str())
                            .push_bind(j.payload.as_slice())
                            .push_bind(j.queue.as_str())
                            .push_bind(i64::from(j.priority))
                            .push_bind(j.status.as_str())
                            .push_bind(j.run_at_ms)
                            .push_bind(j.cron.as_deref())
                            .push_bind(j.time_zone.as_deref())
                            .push_bind(match j.catch_up {
                                $crate::jobs::CatchUp::Once => "once",
                                $crate::jobs::CatchUp::All => "all",
                                $crate::jobs::CatchUp::Skip => "skip",
                            })
                            .push_bind(0_i64)
                            .push_bind(i64::from(j.max_attempts))
                            .push_bind(j.backoff_ms as i64)
                            .push_bind(j.max_backoff_ms as i64)
                            .push_bind(j.timeout_ms.map(|t| t as i64))
                            .push_bind(j.idempotency_key.as_deref())
                            .push_bind("[]")
                            .push_bind(j.created_at_ms)
                            .push_bind(j.updated_at_ms);
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    inserted += q.build().execute(&mut *conn).await?.rows_affected();
                }
                Ok(inserted)
            }
        }

        #[async_trait::async_trait]
        impl $crate::jobs::JobStore for $store {
            async fn add_jobs(&self, jobs: &[$crate::jobs::JobRecord]) -> Result<u64, $crate::StoreError> {
                let refs: Vec<&$crate::jobs::JobRecord> = jobs.iter().collect();
                let mut tx = self.$writer.begin().await?;
                let n = Self::insert_jobs(&mut *tx, &refs).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn claim_jobs(
                &self,
                now_ms: i64,
                max: usize,
                lease_ms: i64,
                filter: &$crate::jobs::ClaimFilter,
                completed: &[$crate::jobs::JobCompletion],
            ) -> Result<Vec<$crate::jobs::JobClaim>, $crate::StoreError> {
                let lease = $crate::jobs::new_lease();
                let mut tx = self.$writer.begin_with($claim_begin).await?;
                let completed: Vec<&$crate::jobs::JobCompletion> = completed.iter().collect();
                // A run whose lease lapsed meanwhile is another run's now: skip it.
                Self::complete_runs(&mut tx, &completed).await?;
                let mut exclude = String::new();
                let mut next = 5;
                if !filter.full_queues.is_empty() {
                    exclude.push_str(&format!(" AND queue NOT IN ({})", $crate::sql::placeholders(next, filter.full_queues.len())));
                    next += filter.full_queues.len();
                }
                if !filter.full_types.is_empty() {
                    exclude.push_str(&format!(" AND actor_type NOT IN ({})", $crate::sql::placeholders(next, filter.full_types.len())));
                }
                // Expired leases first (rare), then retries, then new jobs:
                // one statement per status, so each walks the claim index in
                // order and stops at its LIMIT.
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
                    let sql = format!(
                        "UPDATE jobs SET status = 'running', lease = $1, lease_until_ms = $2, attempts = attempts + 1, updated_at_ms = $3 \
                         WHERE id IN (SELECT id FROM jobs{} WHERE {due}{exclude} ORDER BY priority DESC, run_at_ms LIMIT $4{}) \
                         RETURNING {}",
                        match index {
                            Some(index) if $hint => format!(" INDEXED BY {index}"),
                            _ => String::new(),
                        },
                        $lock,
                        $crate::sql::JOB_COLUMNS
                    );
                    let mut q = ::sqlx::query(&sql).bind(&lease).bind(now_ms + lease_ms).bind(now_ms).bind(want as i64);
                    for name in filter.full_queues.iter().chain(filter.full_types.iter()) {
                        q = q.bind(name);
                    }
                    rows.extend(q.fetch_all(&mut *tx).await?);
                }
                tx.commit().await?;
                let mut claims = rows
                    .iter()
                    .map(|r| Ok($crate::jobs::JobClaim { job: $crate::sql::job_from_row(r)?, lease: lease.clone() }))
                    .collect::<Result<Vec<_>, $crate::StoreError>>()?;
                claims.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.job.run_at_ms.cmp(&b.job.run_at_ms)));
                Ok(claims)
            }

            async fn fail_job(&self, failure: &$crate::jobs::JobFailure) -> Result<bool, $crate::StoreError> {
                use ::sqlx::Row;
                let mut tx = self.$writer.begin().await?;
                let row = ::sqlx::query("SELECT errors, attempts, cancel_requested FROM jobs WHERE id = $1 AND lease = $2 AND status = 'running'")
                    .bind(&failure.id)
                    .bind(&failure.lease)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else { return Ok(false) };
                let errors = $crate::jobs::push_job_error(
                    &row.try_get::<String, _>(0)?,
                    row.try_get::<i64, _>(1)? as u32,
                    &failure.error,
                );
                let status = match (row.try_get::<i64, _>(2)? != 0, failure.retry_at_ms) {
                    (true, _) => "cancelled",
                    (false, Some(_)) => "failed",
                    (false, None) => "dead",
                };
                ::sqlx::query(
                    "UPDATE jobs SET status = $3, run_at_ms = COALESCE($4, run_at_ms), errors = $5, lease = NULL, \
                     lease_until_ms = NULL, updated_at_ms = $6 WHERE id = $1 AND lease = $2",
                )
                .bind(&failure.id)
                .bind(&failure.lease)
                .bind(status)
                .bind(failure.retry_at_ms)
                .bind(errors)
                .bind($crate::now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn reschedule_job(&self, id: &str, lease: &str, next_run_at_ms: i64) -> Result<bool, $crate::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = 'scheduled', run_at_ms = $3, attempts = 0, lease = NULL, lease_until_ms = NULL, \
                     updated_at_ms = $4 WHERE id = $1 AND lease = $2 AND status = 'running'",
                )
                .bind(id)
                .bind(lease)
                .bind(next_run_at_ms)
                .bind($crate::now_ms())
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn job(&self, id: &str) -> Result<Option<$crate::jobs::JobRecord>, $crate::StoreError> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1", $crate::sql::JOB_COLUMNS);
                let row = ::sqlx::query(&sql).bind(id).fetch_optional(&self.$reader).await?;
                row.as_ref().map($crate::sql::job_from_row).transpose()
            }

            async fn jobs(
                &self,
                status: Option<$crate::jobs::JobStatus>,
                target: Option<&str>,
                limit: usize,
            ) -> Result<Vec<$crate::jobs::JobRecord>, $crate::StoreError> {
                let sql = format!(
                    "SELECT {} FROM jobs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR target = $2) \
                     ORDER BY created_at_ms DESC, id LIMIT $3",
                    $crate::sql::JOB_COLUMNS
                );
                let rows = ::sqlx::query(&sql)
                    .bind(status.map(|s| s.as_str()))
                    .bind(target)
                    .bind(limit.min(i64::MAX as usize) as i64)
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter().map($crate::sql::job_from_row).collect()
            }

            async fn cancel_job(&self, id: &str) -> Result<bool, $crate::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
                     cancel_requested = 1, updated_at_ms = $2 WHERE id = $1 AND status IN ('scheduled', 'failed', 'running')",
                )
                .bind(id)
                .bind($crate::now_ms())
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, $crate::StoreError> {
                let n = ::sqlx::query(
                    "UPDATE jobs SET status = 'scheduled', run_at_ms = $2, attempts = 0, cancel_requested = 0, updated_at_ms = $2 \
                     WHERE id = $1 AND status IN ('dead', 'failed')",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&self.$writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn purge_jobs(
                &self,
                status: $crate::jobs::JobStatus,
                changed_before_ms: Option<i64>,
            ) -> Result<u64, $crate::StoreError> {
                Ok(::sqlx::query("DELETE FROM jobs WHERE status = $1 AND updated_at_ms < $2")
                    .bind(status.as_str())
                    .bind(changed_before_ms.unwrap_or(i64::MAX))
                    .execute(&self.$writer)
                    .await?
                    .rows_affected())
            }

            async fn set_job_progress(&self, id: &str, lease: &str, percent: u8, note: &str) -> Result<(), $crate::StoreError> {
                ::sqlx::query("UPDATE jobs SET progress = $3, progress_note = $4, updated_at_ms = $5 WHERE id = $1 AND lease = $2")
                    .bind(id)
                    .bind(lease)
                    .bind(i64::from(percent.min(100)))
                    .bind(note)
                    .bind($crate::now_ms())
                    .execute(&self.$writer)
                    .await?;
                Ok(())
            }

            async fn next_job_due(&self) -> Result<Option<i64>, $crate::StoreError> {
                // One equality per status, so each MIN reads one index entry
                // (an IN list made SQLite scan every waiting job).
                Ok(::sqlx::query_scalar(
                    "SELECT MIN(t) FROM (SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'scheduled' \
                     UNION ALL SELECT MIN(run_at_ms) AS t FROM jobs WHERE status = 'failed' \
                     UNION ALL SELECT MIN(lease_until_ms) AS t FROM jobs WHERE status = 'running') AS d",
                )
                .fetch_one(&self.$reader)
                .await?)
            }

            $($announce)*
        }
    };
}

pub(crate) use sql_job_store;
