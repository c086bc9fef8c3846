//! The Redis store: state, components, journals and projections in one
//! Redis server.
//!
//! A batch of turns commits in ONE Lua script, which Redis runs atomically:
//! it checks every journal head and projection checkpoint first and writes
//! nothing if one moved. Layout, under a key prefix (default `quark`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:s:{actor}` | hash | state key → value |
//! | `P:j:{actor}` | stream | events, entry id `0-{version}` |
//! | `P:ja:{actor}` | stream | events moved out by `archive` retention |
//! | `P:jh` | hash | actor → journal version (the concurrency check) |
//! | `P:jseq` | string | last global journal position |
//! | `P:jt:{type}` | sorted set | `actor\n version` scored by global position (projections) |
//! | `P:snapv:{actor}`, `P:snapd:{actor}` | sorted set, hash | snapshot versions; version → snapshot |
//! | `P:projs`, `P:proj:{name}` | set, hash | projection names; definition and checkpoint |
//! | `P:blob:{hash}`, `P:cv:{type}`, `P:heads` | string, hash, hash | component bytes, versions, active versions |
//! | `P:ib:{actor}`, `P:ibt` | hash, sorted set | inbox: `sender\n id` → reply (sender `''` for HTTP keys); `actor\n sender\n id` scored by time (expiry) |
//! | `P:schema` | string | the layout's version ([`SCHEMA_VERSION`]); older data is migrated at connect |
//!
//! Durable jobs, the outbox and the cluster have their own keys; see
//! [`jobs`], [`outbox`] and [`cluster`].
//!
//! Durability is Redis's own: with `appendonly yes` and `appendfsync
//! always` an acknowledged turn survives a crash of Redis; with Redis's
//! defaults it may not. Keys are not declared to the scripts, so this
//! backend needs a single Redis, not Redis Cluster.

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{
    ComponentStore, ComponentVersion, EventRecord, JournalStore, Manifest, PositionedEvent, ProjectionDef, ProjectionStatus,
    Retention, Snapshot, StateStore, Store, StoreError, TurnCommit,
};
use quark_core::id::ActorId;
use crate::outbox::message_key;

mod cluster;
mod jobs;
mod outbox;

/// Key prefix unless the URL names one (`redis://host/0#prefix`).
pub const DEFAULT_PREFIX: &str = "quark";

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(format!("redis: {e}"))
    }
}

/// A Redis-backed [`Store`].
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    commit_script: redis::Script,
    retention_script: redis::Script,
    component_script: redis::Script,
    jobs: jobs::JobScripts,
    outbox: outbox::OutboxScripts,
    expire_inbox_script: redis::Script,
    cluster: cluster::ClusterScripts,
}

/// Commits a batch (after [`jobs::JOB_FUNCTIONS_LUA`]). ARGV: prefix, now,
/// then ten sections, each a count and fixed-size records: fences (actor,
/// epoch), heads (actor,
/// expected, new), checkpoints (name, from, to), job completions (id,
/// lease, next run or ''), inbox entries (actor, sender\n message id, reply, at), state ops (actor, key, 'S' value | 'D' ''),
/// events (actor, type, version, event type, schema, data, at,
/// correlation, causation, caller or '', has-caller, method), new jobs
/// (`JOB_ARGS` each), cancelled job ids, outbox messages (`MESSAGE_ARGS`
/// each). Returns '', a conflict message, or `fenced:` and a message.
const COMMIT_LUA: &str = r#"
local p, now = ARGV[1], ARGV[2]
local i = 3
-- Checks first. Fences: each fenced turn's actor is still owned at its
-- epoch (see cluster.rs).
local nf = tonumber(ARGV[i]); i = i + 1
for _ = 1, nf do
  local entry = redis.call('HGET', p .. ':dir', ARGV[i])
  local epoch = entry and string.match(entry, '\n([^\n]*)$')
  if epoch ~= ARGV[i + 1] then
    return 'fenced:this host no longer owns ' .. ARGV[i] .. ' (its claim, epoch ' .. ARGV[i + 1] .. ', was taken over by another host): the turn did not happen'
  end
  i = i + 2
end
-- Journal heads and checkpoints, against what earlier turns of this batch
-- moved to (pipelined turns of one actor follow each other in a batch).
local nh = tonumber(ARGV[i]); i = i + 1
local heads = {}
for _ = 1, nh do
  local cur = heads[ARGV[i]] or redis.call('HGET', p .. ':jh', ARGV[i]) or '0'
  if cur ~= ARGV[i + 1] then
    return 'the journal of ' .. ARGV[i] .. ' is no longer at version ' .. ARGV[i + 1] .. ': another writer appended first'
  end
  heads[ARGV[i]] = ARGV[i + 2]
  i = i + 3
end
local nc = tonumber(ARGV[i]); i = i + 1
local checkpoints = {}
for _ = 1, nc do
  local key = p .. ':proj:' .. ARGV[i]
  local cur = checkpoints[ARGV[i]]
  if cur == nil then
    if redis.call('EXISTS', key) == 0 then cur = '' else cur = redis.call('HGET', key, 'checkpoint') end
  end
  if cur ~= ARGV[i + 1] then
    return 'projection `' .. ARGV[i] .. '` is no longer at position ' .. ARGV[i + 1] .. ': another runner advanced it first'
  end
  checkpoints[ARGV[i]] = ARGV[i + 2]
  i = i + 3
end
local nd = tonumber(ARGV[i]); i = i + 1
local done = {}
for _ = 1, nd do
  if not holds_lease(p, ARGV[i], ARGV[i + 1]) then
    return 'job ' .. ARGV[i] .. ' is no longer leased to this run (its lease expired and another run took it)'
  end
  table.insert(done, {ARGV[i], ARGV[i + 2]})
  i = i + 3
end
local ni = tonumber(ARGV[i]); i = i + 1
local inbox = {}
for _ = 1, ni do
  if redis.call('HEXISTS', p .. ':ib:' .. ARGV[i], ARGV[i + 1]) == 1 then
    local nl = string.find(ARGV[i + 1], '\n', 1, true)
    return ARGV[i] .. ' has already handled message "' .. string.sub(ARGV[i + 1], nl + 1) .. '" of ' .. string.sub(ARGV[i + 1], 1, nl - 1)
  end
  table.insert(inbox, {ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]})
  i = i + 4
end
local ns = tonumber(ARGV[i]); i = i + 1
for _ = 1, ns do
  if ARGV[i + 2] == 'S' then
    redis.call('HSET', p .. ':s:' .. ARGV[i], ARGV[i + 1], ARGV[i + 3])
  else
    redis.call('HDEL', p .. ':s:' .. ARGV[i], ARGV[i + 1])
  end
  i = i + 4
end
local ne = tonumber(ARGV[i]); i = i + 1
for _ = 1, ne do
  local seq = redis.call('INCR', p .. ':jseq')
  local fields = {'t', ARGV[i + 3], 'sv', ARGV[i + 4], 'd', ARGV[i + 5], 'at', ARGV[i + 6], 'co', ARGV[i + 7],
    'ca', ARGV[i + 8], 'm', ARGV[i + 11], 'q', seq}
  if ARGV[i + 10] == '1' then
    table.insert(fields, 'cl'); table.insert(fields, ARGV[i + 9])
  end
  redis.call('XADD', p .. ':j:' .. ARGV[i], '0-' .. ARGV[i + 2], unpack(fields))
  redis.call('ZADD', p .. ':jt:' .. ARGV[i + 1], seq, ARGV[i] .. '\n' .. ARGV[i + 2])
  i = i + 12
end
for actor, version in pairs(heads) do
  redis.call('HSET', p .. ':jh', actor, version)
end
for name, position in pairs(checkpoints) do
  redis.call('HSET', p .. ':proj:' .. name, 'checkpoint', position)
end
local nj = tonumber(ARGV[i]); i = i + 1
local added = 0
for _ = 1, nj do added = added + add_job(p, i); i = i + JOB_ARGS end
local nx = tonumber(ARGV[i]); i = i + 1
for _ = 1, nx do cancel_job(p, ARGV[i], now); i = i + 1 end
for _, d in ipairs(done) do complete_job(p, d[1], d[2], now) end
for _, e in ipairs(inbox) do
  redis.call('HSET', p .. ':ib:' .. e[1], e[2], e[3])
  redis.call('ZADD', p .. ':ibt', e[4], e[1] .. '\n' .. e[2])
end
if added > 0 then redis.call('PUBLISH', p .. ':jobs', '') end
local nm = tonumber(ARGV[i]); i = i + 1
local sent = 0
for _ = 1, nm do sent = sent + add_message(p, i); i = i + MESSAGE_ARGS end
if sent > 0 then redis.call('PUBLISH', p .. ':outbox', '') end
return ''
"#;

/// Stores a snapshot and applies retention to the events it covers,
/// sparing those a projection of the actor's type has not read. ARGV:
/// prefix, actor, type, version, snapshot blob, retention.
const RETENTION_LUA: &str = r#"
local p, actor, atype, version, blob, retention = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
redis.call('ZADD', p .. ':snapv:' .. actor, version, ARGV[4])
redis.call('HSET', p .. ':snapd:' .. actor, ARGV[4], blob)
if retention == 'keep' then return 0 end
local safe = nil
for _, name in ipairs(redis.call('SMEMBERS', p .. ':projs')) do
  local def = p .. ':proj:' .. name
  if redis.call('HGET', def, 'source') == atype then
    local c = tonumber(redis.call('HGET', def, 'checkpoint'))
    if safe == nil or c < safe then safe = c end
  end
end
local moved = 0
local entries = redis.call('XRANGE', p .. ':j:' .. actor, '0-1', '0-' .. ARGV[4])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local seq = nil
  for f = 1, #fields, 2 do if fields[f] == 'q' then seq = tonumber(fields[f + 1]) end end
  if safe == nil or (seq ~= nil and seq <= safe) then
    if retention == 'archive' then
      redis.call('XADD', p .. ':ja:' .. actor, entry[1], unpack(fields))
    else
      redis.call('ZREM', p .. ':jt:' .. atype, actor .. '\n' .. string.sub(entry[1], 3))
    end
    redis.call('XDEL', p .. ':j:' .. actor, entry[1])
    moved = moved + 1
  end
end
return moved
"#;

/// Adds a component version and makes it active. ARGV: prefix, type,
/// hash, bytes, record JSON without the version. Returns the version.
const COMPONENT_LUA: &str = r#"
local p, atype = ARGV[1], ARGV[2]
redis.call('SETNX', p .. ':blob:' .. ARGV[3], ARGV[4])
local version = redis.call('HLEN', p .. ':cv:' .. atype) + 1
redis.call('HSET', p .. ':cv:' .. atype, version, ARGV[5])
redis.call('HSET', p .. ':heads', atype, version)
return version
"#;

/// Forgets inbox entries older than ARGV[2], at most 1000 per call, but
/// not those whose message is still in the outbox. ARGV: prefix, before.
/// Returns {forgotten, looked at}.
const EXPIRE_INBOX_LUA: &str = r#"
local p = ARGV[1]
local old = redis.call('ZRANGEBYSCORE', p .. ':ibt', '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1000)
local expired = 0
for _, member in ipairs(old) do
  -- `actor\n sender\n id`: the field after the actor is the message's key.
  local nl = string.find(member, '\n', 1, true)
  local id = string.sub(member, nl + 1)
  -- Kept while its message is still in the outbox (it may be redelivered).
  if redis.call('EXISTS', p .. ':om:' .. id) == 0 then
    redis.call('HDEL', p .. ':ib:' .. string.sub(member, 1, nl - 1), id)
    redis.call('ZREM', p .. ':ibt', member)
    expired = expired + 1
  end
end
return {expired, #old}
"#;

/// Set to `1` to run on a Redis whose `maxmemory-policy` may evict keys
/// (state, journals and jobs could then vanish without a trace).
pub const ALLOW_EVICTION_ENV: &str = "QUARK_REDIS_ALLOW_EVICTION";

/// Refuses a Redis that may evict keys under memory pressure: every key
/// here is data, and an evicted one is lost without an error. Quark sets
/// no TTLs, so `volatile-*` policies evict nothing of it; `allkeys-*` may
/// evict anything. A server that hides `CONFIG` (a managed Redis) is let
/// through with a warning.
async fn check_eviction_policy(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    let policy: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(conn).await;
    match policy {
        Ok(pair) => {
            let policy = pair.get(1).cloned().unwrap_or_default();
            if policy.starts_with("allkeys-") {
                if std::env::var(ALLOW_EVICTION_ENV).is_ok_and(|v| v == "1") {
                    tracing::warn!(policy, "Redis may evict keys (maxmemory-policy); running anyway as {ALLOW_EVICTION_ENV}=1 says");
                } else {
                    return Err(StoreError::Unavailable(format!(
                        "this Redis runs with maxmemory-policy {policy}, which evicts keys when memory runs short: Quark's state, \
                         journals and jobs would vanish without an error. Set it to noeviction (`CONFIG SET maxmemory-policy \
                         noeviction`, or in redis.conf), or set {ALLOW_EVICTION_ENV}=1 to accept the risk"
                    )));
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read Redis's maxmemory-policy; make sure it is noeviction");
            Ok(())
        }
    }
}

/// The version of the key layout this code reads and writes. 2: message
/// ids are unique per sender (outbox keys `om:{sender}\n{id}`, inbox
/// fields `sender\n id`).
pub const SCHEMA_VERSION: i64 = 2;

/// Moves data of layout 1 to layout 2, once (`P:schema` says which it is).
/// Outbox messages take their sender into their key; an inbox entry takes
/// the sender of the outbox message it matches (one still in the outbox may
/// be redelivered) and `''` otherwise (HTTP keys; delivered messages are
/// never redelivered). ARGV: prefix, version.
const MIGRATE_LUA: &str = r#"
local p, version = ARGV[1], ARGV[2]
if tonumber(redis.call('GET', p .. ':schema') or '1') >= tonumber(version) then return 0 end
local senders = {}
for _, id in ipairs(redis.call('ZRANGE', p .. ':oall', 0, -1)) do
  local old = p .. ':om:' .. id
  local sender, target, seq, lane, status = unpack(redis.call('HMGET', old, 'sender', 'target', 'seq', 'lane', 'status'))
  if sender then
    local key = sender .. '\n' .. id
    redis.call('RENAME', old, p .. ':om:' .. key)
    redis.call('ZREM', p .. ':oall', id)
    redis.call('ZADD', p .. ':oall', seq, key)
    if status == 'dead' then
      redis.call('ZREM', p .. ':odead', id)
      redis.call('ZADD', p .. ':odead', seq, key)
    elseif lane and redis.call('ZREM', p .. ':ol:' .. lane, id) == 1 then
      redis.call('ZADD', p .. ':ol:' .. lane, seq, key)
    end
    senders[target .. '\n' .. id] = sender
  end
end
local entries = redis.call('ZRANGE', p .. ':ibt', 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local member, at = entries[i], entries[i + 1]
  local nl = string.find(member, '\n', 1, true)
  local actor, id = string.sub(member, 1, nl - 1), string.sub(member, nl + 1)
  local sender = senders[member] or ''
  local reply = redis.call('HGET', p .. ':ib:' .. actor, id)
  redis.call('ZREM', p .. ':ibt', member)
  if reply then
    redis.call('HDEL', p .. ':ib:' .. actor, id)
    redis.call('HSET', p .. ':ib:' .. actor, sender .. '\n' .. id, reply)
    redis.call('ZADD', p .. ':ibt', at, actor .. '\n' .. sender .. '\n' .. id)
  end
end
redis.call('SET', p .. ':schema', version)
return 1
"#;

/// A component version as stored (its number is the hash field).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredVersion {
    hash: String,
    size: u64,
    manifest: Manifest,
    created_at_ms: i64,
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379`, optionally `#prefix`).
    /// With `prefix`, every key starts with it (tests use one each).
    pub async fn connect(url: &str, prefix: Option<&str>) -> Result<Self, StoreError> {
        let (url, url_prefix) = match url.split_once('#') {
            Some((u, p)) => (u, Some(p)),
            None => (url, None),
        };
        let prefix = prefix.or(url_prefix).unwrap_or(DEFAULT_PREFIX).to_string();
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(StoreError::Unavailable(format!("bad Redis key prefix {prefix:?}")));
        }
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(3))
            .set_response_timeout(std::time::Duration::from_secs(10))
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        check_eviction_policy(&mut conn).await?;
        let _: i64 = redis::Script::new(MIGRATE_LUA).prepare_invoke().arg(&prefix).arg(SCHEMA_VERSION).invoke_async(&mut conn).await?;
        Ok(RedisStore {
            client,
            conn,
            prefix,
            commit_script: redis::Script::new(&format!("{}{}{COMMIT_LUA}", jobs::JOB_FUNCTIONS_LUA, outbox::OUTBOX_FUNCTIONS_LUA)),
            retention_script: redis::Script::new(RETENTION_LUA),
            component_script: redis::Script::new(COMPONENT_LUA),
            jobs: jobs::JobScripts::new(),
            outbox: outbox::OutboxScripts::new(),
            expire_inbox_script: redis::Script::new(EXPIRE_INBOX_LUA),
            cluster: cluster::ClusterScripts::new(),
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// SUBSCRIBE to `P:{channel}`. `None` (and a warning) when it cannot:
    /// the caller polls instead.
    async fn subscribe(&self, channel: &str, what: &str) -> Option<futures::stream::BoxStream<'static, ()>> {
        use futures::StreamExt;
        let mut pubsub = match self.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot SUBSCRIBE for {what}; polling instead");
                return None;
            }
        };
        if let Err(e) = pubsub.subscribe(format!("{}:{channel}", self.prefix)).await {
            tracing::warn!(error = %e, "cannot SUBSCRIBE for {what}; polling instead");
            return None;
        }
        Some(pubsub.into_on_message().map(|_| ()).boxed())
    }

    /// Reads events of one stream (`j` or `ja`) from version `from`.
    async fn read_stream(&self, kind: &str, actor: &str, from: u64, max: usize) -> Result<Vec<(u64, EventRecord)>, StoreError> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(self.key(kind, actor))
            .arg(format!("0-{}", from.max(1)))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.conn())
            .await?;
        entries.into_iter().map(|(id, fields)| decode_event(&id, &fields)).collect()
    }

    /// Events of `actor` from `from` on, live and archived, in order.
    async fn events_of(&self, actor: &str, from: u64, max: usize) -> Result<Vec<(u64, EventRecord)>, StoreError> {
        let mut events = self.read_stream("ja", actor, from, max).await?;
        events.extend(self.read_stream("j", actor, from, max).await?);
        events.sort_by_key(|(_, e)| e.version);
        events.truncate(max);
        Ok(events)
    }
}

/// Decodes a stream entry written by the commit script.
fn decode_event(id: &str, fields: &[Vec<u8>]) -> Result<(u64, EventRecord), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("journal entry {id}: {what}"));
    let version = id.strip_prefix("0-").and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| corrupt("bad id"))?;
    let mut map = std::collections::HashMap::new();
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            map.insert(String::from_utf8_lossy(name).into_owned(), value.clone());
        }
    }
    let text = |name: &str| -> Result<String, StoreError> {
        map.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).ok_or_else(|| corrupt(&format!("no field {name}")))
    };
    let number = |name: &str| -> Result<i64, StoreError> { text(name)?.parse::<i64>().map_err(|_| corrupt(&format!("field {name}"))) };
    let event = EventRecord {
        version,
        event_type: text("t")?,
        schema_version: number("sv")? as u32,
        data: map.get("d").cloned().ok_or_else(|| corrupt("no data"))?,
        recorded_at_ms: number("at")?,
        correlation_id: text("co")?,
        causation_id: text("ca")?,
        caller: map.get("cl").map(|v| String::from_utf8_lossy(v).into_owned()),
        method: text("m")?,
    };
    Ok((number("q")? as u64, event))
}

impl Store for RedisStore {
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    fn job_store(&self) -> Option<&dyn super::jobs::JobStore> {
        Some(self)
    }

    fn outbox_store(&self) -> Option<&dyn super::outbox::OutboxStore> {
        Some(self)
    }

    fn cluster_store(&self) -> Option<&dyn super::cluster::ClusterStore> {
        Some(self)
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn load_state(&self, actor: &ActorId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut rows: Vec<(String, Vec<u8>)> = self.conn().hgetall(self.key("s", actor.as_str())).await?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    async fn commit(&self, batch: &[TurnCommit]) -> Result<(), StoreError> {
        let mut invocation = self.commit_script.prepare_invoke();
        invocation.arg(&self.prefix).arg(super::now_ms());
        let fences: Vec<_> = batch.iter().filter_map(|c| Some((c.actor.as_str(), c.fence?))).collect();
        invocation.arg(fences.len());
        for (actor, epoch) in &fences {
            invocation.arg(*actor).arg(*epoch);
        }
        let appends: Vec<_> = batch.iter().filter_map(|c| c.journal.as_ref().filter(|j| !j.events.is_empty()).map(|j| (c, j))).collect();
        invocation.arg(appends.len());
        for (commit, journal) in &appends {
            let last = journal.events.last().map_or(journal.expected_version, |e| e.version);
            invocation.arg(commit.actor.as_str()).arg(journal.expected_version).arg(last);
        }
        let checkpoints: Vec<_> = batch.iter().filter_map(|c| c.checkpoint.as_ref()).collect();
        invocation.arg(checkpoints.len());
        for c in &checkpoints {
            invocation.arg(&c.projection).arg(c.from).arg(c.to);
        }
        let done: Vec<_> = batch.iter().filter_map(|c| c.job_done.as_ref()).collect();
        invocation.arg(done.len());
        for d in &done {
            invocation.arg(&d.id).arg(&d.lease).arg(d.next_run_at_ms.map(|t| t.to_string()).unwrap_or_default());
        }
        let inbox: Vec<_> = batch.iter().filter_map(|c| c.inbox.as_ref().map(|e| (c.actor.as_str(), e))).collect();
        invocation.arg(inbox.len());
        for (actor, e) in &inbox {
            invocation.arg(*actor).arg(message_key(&e.sender, &e.message_id)).arg(e.reply.as_slice()).arg(e.at_ms);
        }
        let ops: Vec<_> = batch.iter().flat_map(|c| c.state.iter().map(move |w| (c.actor.as_str(), w))).collect();
        invocation.arg(ops.len());
        for (actor, write) in &ops {
            match &write.value {
                Some(v) => invocation.arg(*actor).arg(&write.key).arg("S").arg(v.as_slice()),
                None => invocation.arg(*actor).arg(&write.key).arg("D").arg(""),
            };
        }
        invocation.arg(appends.iter().map(|(_, j)| j.events.len()).sum::<usize>());
        for (commit, journal) in &appends {
            for e in &journal.events {
                invocation
                    .arg(commit.actor.as_str())
                    .arg(commit.actor.actor_type())
                    .arg(e.version)
                    .arg(&e.event_type)
                    .arg(e.schema_version)
                    .arg(e.data.as_slice())
                    .arg(e.recorded_at_ms)
                    .arg(&e.correlation_id)
                    .arg(&e.causation_id)
                    .arg(e.caller.as_deref().unwrap_or(""))
                    .arg(if e.caller.is_some() { "1" } else { "0" })
                    .arg(&e.method);
            }
        }
        invocation.arg(batch.iter().map(|c| c.jobs.len()).sum::<usize>());
        for job in batch.iter().flat_map(|c| c.jobs.iter()) {
            jobs::push_job_args(&mut invocation, job);
        }
        invocation.arg(batch.iter().map(|c| c.cancels.len()).sum::<usize>());
        for id in batch.iter().flat_map(|c| c.cancels.iter()) {
            invocation.arg(id);
        }
        invocation.arg(batch.iter().map(|c| c.messages.len()).sum::<usize>());
        for message in batch.iter().flat_map(|c| c.messages.iter()) {
            outbox::push_message_args(&mut invocation, message);
        }
        // Sent and no answer (a timeout, a dropped connection): the script
        // may have run. A refused connection sent nothing.
        let conflict: String = invocation.invoke_async(&mut self.conn()).await.map_err(|e| {
            let lost = (e.is_timeout() || e.is_connection_dropped() || e.is_io_error()) && !e.is_connection_refusal();
            StoreError::from(e).at_commit(lost)
        })?;
        match conflict.strip_prefix("fenced:") {
            _ if conflict.is_empty() => Ok(()),
            Some(message) => Err(StoreError::Fenced(message.to_string())),
            None => Err(StoreError::Conflict(conflict)),
        }
    }
}

#[async_trait]
impl super::InboxStore for RedisStore {
    async fn inbox_reply(&self, actor: &ActorId, sender: &str, message_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn().hget(self.key("ib", actor.as_str()), message_key(sender, message_id)).await?)
    }

    async fn expire_inbox(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (n, seen): (u64, u64) =
                self.expire_inbox_script.prepare_invoke().arg(&self.prefix).arg(before_ms).invoke_async(&mut self.conn()).await?;
            total += n;
            // A page of entries all kept for their messages: try again later.
            if seen < 1000 || n == 0 {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl ComponentStore for RedisStore {
    async fn add_component_version(
        &self,
        actor_type: &str,
        hash: &str,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<ComponentVersion, StoreError> {
        let created_at_ms = super::now_ms();
        let record = StoredVersion { hash: hash.to_string(), size: bytes.len() as u64, manifest: manifest.clone(), created_at_ms };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let version: u64 = self
            .component_script
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(actor_type)
            .arg(hash)
            .arg(bytes)
            .arg(json)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ComponentVersion {
            actor_type: actor_type.to_string(),
            version,
            hash: hash.to_string(),
            size: bytes.len() as u64,
            manifest: manifest.clone(),
            created_at_ms,
        })
    }

    async fn component_versions(&self, actor_type: &str) -> Result<Vec<ComponentVersion>, StoreError> {
        let rows: Vec<(u64, String)> = self.conn().hgetall(self.key("cv", actor_type)).await?;
        let mut versions = rows
            .into_iter()
            .map(|(version, json)| {
                let s: StoredVersion = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("component record: {e}")))?;
                Ok(ComponentVersion {
                    actor_type: actor_type.to_string(),
                    version,
                    hash: s.hash,
                    size: s.size,
                    manifest: s.manifest,
                    created_at_ms: s.created_at_ms,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn component_bytes(&self, actor_type: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let json: Option<String> = self.conn().hget(self.key("cv", actor_type), version).await?;
        let Some(json) = json else { return Ok(None) };
        let s: StoredVersion = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("component record: {e}")))?;
        Ok(self.conn().get(self.key("blob", &s.hash)).await?)
    }

    async fn set_active_version(&self, actor_type: &str, version: u64) -> Result<(), StoreError> {
        let _: () = self.conn().hset(format!("{}:heads", self.prefix), actor_type, version).await?;
        Ok(())
    }

    async fn active_versions(&self) -> Result<Vec<ComponentVersion>, StoreError> {
        let heads: Vec<(String, u64)> = self.conn().hgetall(format!("{}:heads", self.prefix)).await?;
        let mut out = Vec::new();
        for (actor_type, version) in heads {
            if let Some(v) = self.component_versions(&actor_type).await?.into_iter().find(|v| v.version == version) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.actor_type.cmp(&b.actor_type));
        Ok(out)
    }
}

#[async_trait]
impl JournalStore for RedisStore {
    async fn journal_head(&self, actor: &ActorId) -> Result<u64, StoreError> {
        let v: Option<u64> = self.conn().hget(format!("{}:jh", self.prefix), actor.as_str()).await?;
        Ok(v.unwrap_or(0))
    }

    async fn read_events(&self, actor: &ActorId, from: u64, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.events_of(actor.as_str(), from, max).await?.into_iter().map(|(_, e)| e).collect())
    }

    async fn version_at(&self, actor: &ActorId, at_ms: i64) -> Result<u64, StoreError> {
        let mut best = 0;
        let mut from = 1;
        loop {
            let page = self.events_of(actor.as_str(), from, 1000).await?;
            let Some((_, last)) = page.last() else { break };
            from = last.version + 1;
            best = page.iter().filter(|(_, e)| e.recorded_at_ms <= at_ms).map(|(_, e)| e.version).max().unwrap_or(best).max(best);
            if page.len() < 1000 {
                break;
            }
        }
        Ok(best)
    }

    async fn latest_snapshot(&self, actor: &ActorId, at_most: u64) -> Result<Option<Snapshot>, StoreError> {
        let versions: Vec<u64> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.key("snapv", actor.as_str()))
            .arg(at_most.min(1 << 53))
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        let Some(version) = versions.first().copied() else { return Ok(None) };
        let blob: Option<Vec<u8>> = self.conn().hget(self.key("snapd", actor.as_str()), version).await?;
        let Some(blob) = blob.filter(|b| b.len() >= 16) else { return Ok(None) };
        Ok(Some(Snapshot {
            version,
            component_version: u64::from_be_bytes(blob[0..8].try_into().unwrap_or_default()),
            taken_at_ms: i64::from_be_bytes(blob[8..16].try_into().unwrap_or_default()),
            data: blob[16..].to_vec(),
        }))
    }

    async fn save_snapshot(&self, actor: &ActorId, snapshot: &Snapshot, retention: Retention) -> Result<(), StoreError> {
        let mut blob = Vec::with_capacity(16 + snapshot.data.len());
        blob.extend_from_slice(&snapshot.component_version.to_be_bytes());
        blob.extend_from_slice(&snapshot.taken_at_ms.to_be_bytes());
        blob.extend_from_slice(&snapshot.data);
        let retention = match retention {
            Retention::Keep => "keep",
            Retention::Archive => "archive",
            Retention::Delete => "delete",
        };
        let _: i64 = self
            .retention_script
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(actor.as_str())
            .arg(actor.actor_type())
            .arg(snapshot.version)
            .arg(blob)
            .arg(retention)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn create_projection(&self, def: &ProjectionDef) -> Result<bool, StoreError> {
        let key = self.key("proj", &def.name);
        let created: bool = self.conn().hset_nx(&key, "source", &def.source_type).await?;
        if created {
            let fields = [("target", def.target.as_str()), ("method", def.method.as_str()), ("checkpoint", "0")];
            let _: () = self.conn().hset_multiple(&key, &fields).await?;
            let _: () = self.conn().sadd(format!("{}:projs", self.prefix), &def.name).await?;
            return Ok(true);
        }
        let (source, target, method): (String, String, String) =
            redis::cmd("HMGET").arg(&key).arg("source").arg("target").arg("method").query_async(&mut self.conn()).await?;
        if (source.as_str(), target.as_str(), method.as_str()) == (def.source_type.as_str(), def.target.as_str(), def.method.as_str()) {
            Ok(false)
        } else {
            Err(StoreError::Rejected(format!(
                "projection `{}` exists already with source `{source}`, target `{target}`, method `{method}`",
                def.name
            )))
        }
    }

    async fn delete_projection(&self, name: &str) -> Result<bool, StoreError> {
        let removed: u64 = self.conn().srem(format!("{}:projs", self.prefix), name).await?;
        let _: () = self.conn().del(self.key("proj", name)).await?;
        Ok(removed > 0)
    }

    async fn projections(&self) -> Result<Vec<ProjectionStatus>, StoreError> {
        let mut names: Vec<String> = self.conn().smembers(format!("{}:projs", self.prefix)).await?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let (source, target, method, checkpoint): (Option<String>, Option<String>, Option<String>, Option<u64>) = redis::cmd("HMGET")
                .arg(self.key("proj", &name))
                .arg("source")
                .arg("target")
                .arg("method")
                .arg("checkpoint")
                .query_async(&mut self.conn())
                .await?;
            if let (Some(source_type), Some(target), Some(method)) = (source, target, method) {
                out.push(ProjectionStatus { def: ProjectionDef { name, source_type, target, method }, checkpoint: checkpoint.unwrap_or(0) });
            }
        }
        Ok(out)
    }

    async fn read_type_events(&self, actor_type: &str, after: u64, max: usize) -> Result<Vec<PositionedEvent>, StoreError> {
        let members: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("jt", actor_type))
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn())
            .await?;
        // One round trip for every event: live stream and archive.
        let mut pipe = redis::pipe();
        for (member, _) in &members {
            let (actor, version) = member.split_once('\n').ok_or_else(|| StoreError::Corrupt(format!("type index entry {member:?}")))?;
            for kind in ["j", "ja"] {
                pipe.cmd("XRANGE").arg(self.key(kind, actor)).arg(format!("0-{version}")).arg(format!("0-{version}"));
            }
        }
        let replies: Vec<Vec<(String, Vec<Vec<u8>>)>> = pipe.query_async(&mut self.conn()).await?;
        let mut out = Vec::with_capacity(members.len());
        for ((member, position), pair) in members.iter().zip(replies.chunks(2)) {
            let actor = member.split_once('\n').map_or("", |(a, _)| a);
            let Some((id, fields)) = pair.iter().flatten().next() else {
                return Err(StoreError::Corrupt(format!("journal entry {member:?} is indexed but missing")));
            };
            let (_, event) = decode_event(id, fields)?;
            out.push(PositionedEvent { position: *position, actor: actor.to_string(), event });
        }
        Ok(out)
    }

    async fn count_type_events(&self, actor_type: &str, after: u64) -> Result<u64, StoreError> {
        Ok(self.conn().zcount(self.key("jt", actor_type), format!("({after}"), "+inf").await?)
    }
}
