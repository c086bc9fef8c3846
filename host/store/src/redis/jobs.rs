//! Durable jobs on Redis: a hash per job and sorted sets by due time.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:job:{id}` | hash | the job's fields, its lease and lease expiry |
//! | `P:jdue:{priority}` | sorted set | scheduled and failed jobs of one priority, scored by due time |
//! | `P:jprio` | sorted set | the priorities that have (or had) due jobs |
//! | `P:jrun` | sorted set | running jobs, scored by lease expiry |
//! | `P:jall` | sorted set | every job, scored by creation time (listing, purge) |
//! | `P:jobs` | channel | a message whenever jobs are added (wakes other hosts' runners) |
//!
//! Every change of a job's status is one Lua script, so the hash and the
//! sorted sets never disagree. A claim walks priorities from the highest,
//! and each priority's jobs by due time, so it reads only what it takes
//! (plus what the concurrency filter skips, bounded per claim).

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use crate::StoreError;
use crate::jobs::{CatchUp, ClaimFilter, JobClaim, JobCompletion, JobFailure, JobRecord, JobStatus, JobStore};

/// Lua functions shared by the job scripts and the commit script. A job is
/// passed as [`JOB_ARGS`] consecutive arguments (see [`push_job_args`]).
pub(super) const JOB_FUNCTIONS_LUA: &str = r#"
local JOB_ARGS = 19
local function job_due(p, id, priority, run_at)
  redis.call('ZADD', p .. ':jdue:' .. priority, run_at, id)
  redis.call('ZADD', p .. ':jprio', priority, priority)
end
local function add_job(p, i)
  local id = ARGV[i]
  local key = p .. ':job:' .. id
  if redis.call('EXISTS', key) == 1 then return 0 end
  redis.call('HSET', key, 'id', id, 'target', ARGV[i + 1], 'type', ARGV[i + 2], 'method', ARGV[i + 3], 'payload', ARGV[i + 4],
    'queue', ARGV[i + 5], 'priority', ARGV[i + 6], 'status', ARGV[i + 7], 'run_at', ARGV[i + 8], 'cron', ARGV[i + 9],
    'tz', ARGV[i + 10], 'catch_up', ARGV[i + 11], 'attempts', '0', 'max_attempts', ARGV[i + 12], 'backoff', ARGV[i + 13],
    'max_backoff', ARGV[i + 14], 'timeout', ARGV[i + 15], 'key', ARGV[i + 16], 'cancel', '0', 'errors', '[]',
    'created', ARGV[i + 17], 'updated', ARGV[i + 18])
  redis.call('ZADD', p .. ':jall', ARGV[i + 17], id)
  if ARGV[i + 7] == 'scheduled' or ARGV[i + 7] == 'failed' then job_due(p, id, ARGV[i + 6], ARGV[i + 8]) end
  return 1
end
local function cancel_job(p, id, now)
  local key = p .. ':job:' .. id
  local st, pr = unpack(redis.call('HMGET', key, 'status', 'priority'))
  if st == 'scheduled' or st == 'failed' then
    redis.call('ZREM', p .. ':jdue:' .. pr, id)
    redis.call('HSET', key, 'status', 'cancelled', 'cancel', '1', 'updated', now)
    return 1
  elseif st == 'running' then
    redis.call('HSET', key, 'cancel', '1', 'updated', now)
    return 1
  end
  return 0
end
-- Ends a run: one-shot jobs succeed, recurring ones wait for next_run.
local function complete_job(p, id, next_run, now)
  local key = p .. ':job:' .. id
  redis.call('ZREM', p .. ':jrun', id)
  redis.call('HDEL', key, 'lease', 'lease_until')
  if next_run == '' then
    redis.call('HSET', key, 'status', 'succeeded', 'updated', now)
  elseif redis.call('HGET', key, 'cancel') == '1' then
    redis.call('HSET', key, 'status', 'cancelled', 'run_at', next_run, 'attempts', '0', 'updated', now)
  else
    redis.call('HSET', key, 'status', 'scheduled', 'run_at', next_run, 'attempts', '0', 'updated', now)
    job_due(p, id, redis.call('HGET', key, 'priority'), next_run)
  end
end
local function holds_lease(p, id, lease)
  local st, l = unpack(redis.call('HMGET', p .. ':job:' .. id, 'status', 'lease'))
  return st == 'running' and l == lease
end
"#;

/// Adds jobs. ARGV: prefix, count, jobs. Returns how many were new.
const ADD_LUA: &str = r#"
local p, n = ARGV[1], tonumber(ARGV[2])
local added, i = 0, 3
for _ = 1, n do added = added + add_job(p, i); i = i + JOB_ARGS end
if added > 0 then redis.call('PUBLISH', p .. ':jobs', '') end
return added
"#;

/// Ends effect-free runs, then claims due jobs. ARGV: prefix, now, max,
/// lease, lease until, count and completed runs (id, lease, next run or
/// ''), count and full queues, count and full types, '1' to skip expired
/// leases. Returns each claimed job's HGETALL.
const CLAIM_LUA: &str = r#"
local p, now, max, lease, lease_until = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local i = 6
local nd = tonumber(ARGV[i]); i = i + 1
for _ = 1, nd do
  if holds_lease(p, ARGV[i], ARGV[i + 1]) then complete_job(p, ARGV[i], ARGV[i + 2], now) end
  i = i + 3
end
local full = {}
local nq = tonumber(ARGV[i]); i = i + 1
for _ = 1, nq do full['q:' .. ARGV[i]] = true; i = i + 1 end
local nt = tonumber(ARGV[i]); i = i + 1
for _ = 1, nt do full['t:' .. ARGV[i]] = true; i = i + 1 end
local skip_expired = ARGV[i]
-- Jobs of full queues or types are skipped; this bounds how many are read.
local scan = max
if nq + nt > 0 then scan = max * 4 + 64 end
local out = {}
local function take(id, index)
  local key = p .. ':job:' .. id
  local q, t = unpack(redis.call('HMGET', key, 'queue', 'type'))
  if not q then redis.call('ZREM', index, id); return end
  if full['q:' .. q] or full['t:' .. t] then return end
  redis.call('ZREM', index, id)
  redis.call('ZADD', p .. ':jrun', lease_until, id)
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'running', 'lease', lease, 'lease_until', lease_until, 'updated', now)
  table.insert(out, redis.call('HGETALL', key))
end
-- Expired leases first (their hosts died), then due jobs by priority.
if skip_expired ~= '1' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. ':jrun', '-inf', '(' .. now, 'LIMIT', 0, scan)) do
    if #out >= max then break end
    take(id, p .. ':jrun')
  end
end
for _, pr in ipairs(redis.call('ZREVRANGE', p .. ':jprio', 0, -1)) do
  if #out >= max then break end
  local index = p .. ':jdue:' .. pr
  if redis.call('ZCARD', index) == 0 then
    redis.call('ZREM', p .. ':jprio', pr)
  else
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, scan)) do
      if #out >= max then break end
      take(id, index)
    end
  end
end
return out
"#;

/// Records a failed attempt. ARGV: prefix, id, lease, retry at or '',
/// errors JSON, now. Returns 1, or 0 when the lease was lost.
const FAIL_LUA: &str = r#"
local p, id, lease, retry_at, errors, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not holds_lease(p, id, lease) then return 0 end
local key = p .. ':job:' .. id
redis.call('ZREM', p .. ':jrun', id)
redis.call('HDEL', key, 'lease', 'lease_until')
local status = 'dead'
if redis.call('HGET', key, 'cancel') == '1' then status = 'cancelled' elseif retry_at ~= '' then status = 'failed' end
redis.call('HSET', key, 'status', status, 'errors', errors, 'updated', now)
if retry_at ~= '' then redis.call('HSET', key, 'run_at', retry_at) end
if status == 'failed' then job_due(p, id, redis.call('HGET', key, 'priority'), retry_at) end
return 1
"#;

/// Moves a running recurring job to its next tick. ARGV: prefix, id, lease,
/// next run, now. Returns 1, or 0 when the lease was lost.
const RESCHEDULE_LUA: &str = r#"
local p, id, lease = ARGV[1], ARGV[2], ARGV[3]
if not holds_lease(p, id, lease) then return 0 end
local key = p .. ':job:' .. id
redis.call('ZREM', p .. ':jrun', id)
redis.call('HDEL', key, 'lease', 'lease_until')
redis.call('HSET', key, 'status', 'scheduled', 'run_at', ARGV[4], 'attempts', '0', 'updated', ARGV[5])
job_due(p, id, redis.call('HGET', key, 'priority'), ARGV[4])
return 1
"#;

/// Cancels a job. ARGV: prefix, id, now.
const CANCEL_LUA: &str = "return cancel_job(ARGV[1], ARGV[2], ARGV[3])";

/// Makes a dead or failed job due now. ARGV: prefix, id, now.
const RETRY_LUA: &str = r#"
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':job:' .. id
local st, pr = unpack(redis.call('HMGET', key, 'status', 'priority'))
if st ~= 'dead' and st ~= 'failed' then return 0 end
redis.call('HSET', key, 'status', 'scheduled', 'run_at', now, 'attempts', '0', 'cancel', '0', 'updated', now)
job_due(p, id, pr, now)
return 1
"#;

/// Deletes jobs of one status among `count` jobs from rank `from` of the
/// creation index. ARGV: prefix, status, from, count. Returns {deleted, scanned}.
const PURGE_LUA: &str = r#"
local p, status, before = ARGV[1], ARGV[2], tonumber(ARGV[5])
local ids = redis.call('ZRANGE', p .. ':jall', ARGV[3], tonumber(ARGV[3]) + tonumber(ARGV[4]) - 1)
local deleted = 0
for _, id in ipairs(ids) do
  local key = p .. ':job:' .. id
  local st, pr, updated = unpack(redis.call('HMGET', key, 'status', 'priority', 'updated'))
  if not st or (st == status and (before < 0 or tonumber(updated or '0') < before)) then
    redis.call('DEL', key)
    redis.call('ZREM', p .. ':jall', id)
    if pr then redis.call('ZREM', p .. ':jdue:' .. pr, id) end
    redis.call('ZREM', p .. ':jrun', id)
    if st then deleted = deleted + 1 end
  end
end
return {deleted, #ids}
"#;

/// Records progress under the lease. ARGV: prefix, id, lease, percent, note, now.
const PROGRESS_LUA: &str = r#"
if not holds_lease(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', ARGV[1] .. ':job:' .. ARGV[2], 'progress', ARGV[4], 'progress_note', ARGV[5], 'updated', ARGV[6])
return 1
"#;

/// The earliest due time or lease expiry. ARGV: prefix. Returns '' or ms.
const NEXT_DUE_LUA: &str = r#"
local p = ARGV[1]
local best = nil
local function consider(index)
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if first[2] then
    local t = tonumber(first[2])
    if best == nil or t < best then best = t end
  end
end
consider(p .. ':jrun')
for _, pr in ipairs(redis.call('ZRANGE', p .. ':jprio', 0, -1)) do consider(p .. ':jdue:' .. pr) end
if best == nil then return '' end
return string.format('%d', best)
"#;

/// The job scripts, loaded once per store.
pub(super) struct JobScripts {
    add: redis::Script,
    claim: redis::Script,
    fail: redis::Script,
    reschedule: redis::Script,
    cancel: redis::Script,
    retry: redis::Script,
    purge: redis::Script,
    progress: redis::Script,
    next_due: redis::Script,
}

impl JobScripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{JOB_FUNCTIONS_LUA}{body}"));
        JobScripts {
            add: script(ADD_LUA),
            claim: script(CLAIM_LUA),
            fail: script(FAIL_LUA),
            reschedule: script(RESCHEDULE_LUA),
            cancel: script(CANCEL_LUA),
            retry: script(RETRY_LUA),
            purge: script(PURGE_LUA),
            progress: script(PROGRESS_LUA),
            next_due: script(NEXT_DUE_LUA),
        }
    }
}

/// Appends a job as the [`JOB_FUNCTIONS_LUA`] `add_job` function reads it.
pub(super) fn push_job_args(invocation: &mut redis::ScriptInvocation<'_>, j: &JobRecord) {
    let actor_type = j.target.split_once('/').map_or(j.target.as_str(), |(t, _)| t);
    invocation
        .arg(&j.id)
        .arg(&j.target)
        .arg(actor_type)
        .arg(&j.method)
        .arg(j.payload.as_slice())
        .arg(&j.queue)
        .arg(j.priority)
        .arg(j.status.as_str())
        .arg(j.run_at_ms)
        .arg(j.cron.as_deref().unwrap_or(""))
        .arg(j.time_zone.as_deref().unwrap_or(""))
        .arg(catch_up_name(j.catch_up))
        .arg(j.max_attempts)
        .arg(j.backoff_ms)
        .arg(j.max_backoff_ms)
        .arg(j.timeout_ms.map(|t| t.to_string()).unwrap_or_default())
        .arg(j.idempotency_key.as_deref().unwrap_or(""))
        .arg(j.created_at_ms)
        .arg(j.updated_at_ms);
}

fn catch_up_name(c: CatchUp) -> &'static str {
    match c {
        CatchUp::Once => "once",
        CatchUp::All => "all",
        CatchUp::Skip => "skip",
    }
}

/// A job hash (HGETALL, as field/value pairs) read back into a record.
fn decode_job(pairs: Vec<Vec<u8>>) -> Result<JobRecord, StoreError> {
    let mut map = std::collections::HashMap::with_capacity(pairs.len() / 2);
    let mut pairs = pairs.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        map.insert(String::from_utf8_lossy(&name).into_owned(), value);
    }
    let id = map.get("id").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let corrupt = |what: &str| StoreError::Corrupt(format!("job {id}: field {what}"));
    let text = |name: &str| -> Option<String> { map.get(name).map(|v| String::from_utf8_lossy(v).into_owned()) };
    let optional = |name: &str| text(name).filter(|s| !s.is_empty());
    let required = |name: &str| text(name).ok_or_else(|| corrupt(name));
    let number = |name: &str| -> Result<i64, StoreError> { required(name)?.parse::<i64>().map_err(|_| corrupt(name)) };
    let record = JobRecord {
        id: id.clone(),
        target: required("target")?,
        method: required("method")?,
        payload: map.get("payload").cloned().unwrap_or_default(),
        queue: required("queue")?,
        priority: number("priority")? as i32,
        status: required("status")?.parse().map_err(|_| corrupt("status"))?,
        run_at_ms: number("run_at")?,
        cron: optional("cron"),
        time_zone: optional("tz"),
        catch_up: required("catch_up")?.parse().map_err(|_| corrupt("catch_up"))?,
        attempts: number("attempts")? as u32,
        max_attempts: number("max_attempts")? as u32,
        backoff_ms: number("backoff")? as u64,
        max_backoff_ms: number("max_backoff")? as u64,
        timeout_ms: optional("timeout").map(|t| t.parse::<u64>().map_err(|_| corrupt("timeout"))).transpose()?,
        idempotency_key: optional("key"),
        cancel_requested: text("cancel").as_deref() == Some("1"),
        progress: optional("progress").and_then(|p| p.parse::<u8>().ok()),
        progress_note: text("progress_note"),
        errors: serde_json::from_str(&required("errors")?).map_err(|_| corrupt("errors"))?,
        created_at_ms: number("created")?,
        updated_at_ms: number("updated")?,
    };
    Ok(record)
}

impl RedisStore {
    /// The ids of every job, newest first, a page at a time.
    async fn job_ids_newest_first(&self, from: usize, count: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.conn().zrevrange(format!("{}:jall", self.prefix), from as isize, (from + count) as isize - 1).await?)
    }

    /// Reads jobs by id in one round trip; ids whose hash is gone are left out.
    async fn read_jobs(&self, ids: &[String]) -> Result<Vec<JobRecord>, StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.key("job", id));
        }
        let hashes: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut self.conn()).await?;
        ids.iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(_, h)| decode_job(h))
            .collect()
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn add_jobs(&self, jobs: &[JobRecord]) -> Result<u64, StoreError> {
        let mut added = 0;
        for chunk in jobs.chunks(1000) {
            let mut invocation = self.jobs.add.prepare_invoke();
            invocation.arg(&self.prefix).arg(chunk.len());
            for j in chunk {
                push_job_args(&mut invocation, j);
            }
            added += invocation.invoke_async::<u64>(&mut self.conn()).await?;
        }
        Ok(added)
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
        let mut invocation = self.jobs.claim.prepare_invoke();
        invocation.arg(&self.prefix).arg(now_ms).arg(max).arg(&lease).arg(now_ms + lease_ms);
        invocation.arg(completed.len());
        for d in completed {
            invocation.arg(&d.id).arg(&d.lease).arg(d.next_run_at_ms.map(|t| t.to_string()).unwrap_or_default());
        }
        invocation.arg(filter.full_queues.len());
        for q in &filter.full_queues {
            invocation.arg(q);
        }
        invocation.arg(filter.full_types.len());
        for t in &filter.full_types {
            invocation.arg(t);
        }
        invocation.arg(if filter.skip_expired { "1" } else { "0" });
        let hashes: Vec<Vec<Vec<u8>>> = invocation.invoke_async(&mut self.conn()).await?;
        let mut claims = hashes.into_iter().map(|h| Ok(JobClaim { job: decode_job(h)?, lease: lease.clone() })).collect::<Result<Vec<_>, StoreError>>()?;
        claims.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.job.run_at_ms.cmp(&b.job.run_at_ms)));
        Ok(claims)
    }

    async fn fail_job(&self, failure: &JobFailure) -> Result<bool, StoreError> {
        let key = self.key("job", &failure.id);
        let (errors, attempts, lease): (Option<String>, Option<u32>, Option<String>) =
            redis::cmd("HMGET").arg(&key).arg("errors").arg("attempts").arg("lease").query_async(&mut self.conn()).await?;
        if lease.as_deref() != Some(failure.lease.as_str()) {
            return Ok(false);
        }
        let errors = crate::jobs::push_job_error(errors.as_deref().unwrap_or("[]"), attempts.unwrap_or(0), &failure.error);
        let done: i64 = self
            .jobs
            .fail
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(&failure.id)
            .arg(&failure.lease)
            .arg(failure.retry_at_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(errors)
            .arg(crate::now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn reschedule_job(&self, id: &str, lease: &str, next_run_at_ms: i64) -> Result<bool, StoreError> {
        let done: i64 = self
            .jobs
            .reschedule
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(id)
            .arg(lease)
            .arg(next_run_at_ms)
            .arg(crate::now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(done == 1)
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.read_jobs(&[id.to_string()]).await?.pop())
    }

    async fn jobs(&self, status: Option<JobStatus>, target: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        let mut from = 0;
        while out.len() < limit {
            let ids = self.job_ids_newest_first(from, PAGE).await?;
            from += ids.len();
            let page = self.read_jobs(&ids).await?;
            out.extend(
                page.into_iter()
                    .filter(|j| status.is_none_or(|s| j.status == s) && target.is_none_or(|t| j.target == t))
                    .take(limit - out.len()),
            );
            if ids.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    async fn cancel_job(&self, id: &str) -> Result<bool, StoreError> {
        let done: i64 =
            self.jobs.cancel.prepare_invoke().arg(&self.prefix).arg(id).arg(crate::now_ms()).invoke_async(&mut self.conn()).await?;
        Ok(done == 1)
    }

    async fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done: i64 = self.jobs.retry.prepare_invoke().arg(&self.prefix).arg(id).arg(now_ms).invoke_async(&mut self.conn()).await?;
        if done == 1 {
            self.announce_jobs().await?;
        }
        Ok(done == 1)
    }

    async fn purge_jobs(&self, status: JobStatus, changed_before_ms: Option<i64>) -> Result<u64, StoreError> {
        // A page per script call, so a large purge never blocks Redis for long.
        const PAGE: usize = 1000;
        let (mut deleted, mut from) = (0u64, 0usize);
        loop {
            let (gone, scanned): (u64, usize) = self
                .jobs
                .purge
                .prepare_invoke()
                .arg(&self.prefix)
                .arg(status.as_str())
                .arg(from)
                .arg(PAGE)
                .arg(changed_before_ms.unwrap_or(-1))
                .invoke_async(&mut self.conn())
                .await?;
            deleted += gone;
            from += scanned - gone as usize;
            if scanned < PAGE {
                return Ok(deleted);
            }
        }
    }

    async fn set_job_progress(&self, id: &str, lease: &str, percent: u8, note: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .jobs
            .progress
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(id)
            .arg(lease)
            .arg(percent.min(100))
            .arg(note)
            .arg(crate::now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn next_job_due(&self) -> Result<Option<i64>, StoreError> {
        let due: String = self.jobs.next_due.prepare_invoke().arg(&self.prefix).invoke_async(&mut self.conn()).await?;
        Ok(due.parse().ok())
    }

    async fn announce_jobs(&self) -> Result<(), StoreError> {
        let _: i64 = self.conn().publish(format!("{}:jobs", self.prefix), "").await?;
        Ok(())
    }

    async fn job_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        self.subscribe("jobs", "new jobs").await
    }
}
