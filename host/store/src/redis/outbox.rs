//! The outbox on Redis: a hash per message and sorted sets per lane.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:om:{sender}\n{id}` | hash | a message: its fields, status, attempts, last error, `seq`, `lane` |
//! | `P:oseq` | string | the last message `seq` |
//! | `P:ol:{lane}` | sorted set | a lane's pending message keys (`sender\nid`), scored by `seq` |
//! | `P:olanes` | sorted set | lanes not leased, scored by when they are due |
//! | `P:oleased`, `P:olease` | sorted set, hash | leased lanes by lease expiry; lane → lease |
//! | `P:oall`, `P:odead` | sorted sets | every message, dead messages, by `seq` (listing) |
//! | `P:outbox` | channel | a message whenever a commit sent messages (wakes other hosts) |
//!
//! A lane is `sender\nkind\ntarget`; a message's key is `sender\nid`, as
//! ids are unique per sender. Each change is one Lua script; the
//! messages a turn sends are added by its commit script.

use async_trait::async_trait;

use super::RedisStore;
use crate::StoreError;
use crate::outbox::{Destination, LaneClaim, LaneRelease, OutboxMessage, OutboxRecord, OutboxStore};

/// Lua functions shared with the commit script. A message is passed as
/// [`MESSAGE_ARGS`] arguments: id, sender, kind, target, method, payload,
/// event type, created.
pub(super) const OUTBOX_FUNCTIONS_LUA: &str = r#"
local MESSAGE_ARGS = 8
local function add_message(p, i)
  local id = ARGV[i]
  local member = ARGV[i + 1] .. '\n' .. id
  local key = p .. ':om:' .. member
  if redis.call('EXISTS', key) == 1 then return 0 end
  local seq = redis.call('INCR', p .. ':oseq')
  local lane = ARGV[i + 1] .. '\n' .. ARGV[i + 2] .. '\n' .. ARGV[i + 3]
  redis.call('HSET', key, 'id', id, 'sender', ARGV[i + 1], 'kind', ARGV[i + 2], 'target', ARGV[i + 3], 'method', ARGV[i + 4],
    'payload', ARGV[i + 5], 'event_type', ARGV[i + 6], 'created', ARGV[i + 7], 'status', 'pending', 'attempts', '0',
    'next_at', ARGV[i + 7], 'seq', seq, 'lane', lane)
  redis.call('ZADD', p .. ':oall', seq, member)
  redis.call('ZADD', p .. ':ol:' .. lane, seq, member)
  if not redis.call('ZSCORE', p .. ':olanes', lane) and not redis.call('ZSCORE', p .. ':oleased', lane) then
    redis.call('ZADD', p .. ':olanes', ARGV[i + 7], lane)
  end
  return 1
end
"#;

/// Deletes delivered messages, releases lanes, claims lanes. ARGV: prefix,
/// now, max lanes, per lane, lease, lease until, count and delivered keys,
/// count and releases (lane, lease, next or ''). Returns per lane
/// {lane, taken_over, message HGETALLs...}.
const CLAIM_LUA: &str = r#"
local p, now, max, per, lease, lease_until = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local i = 7
local nd = tonumber(ARGV[i]); i = i + 1
for _ = 1, nd do
  local key = p .. ':om:' .. ARGV[i]
  local lane = redis.call('HGET', key, 'lane')
  if lane then redis.call('ZREM', p .. ':ol:' .. lane, ARGV[i]) end
  redis.call('ZREM', p .. ':oall', ARGV[i])
  redis.call('DEL', key)
  i = i + 1
end
local nr = tonumber(ARGV[i]); i = i + 1
for _ = 1, nr do
  local lane = ARGV[i]
  if redis.call('HGET', p .. ':olease', lane) == ARGV[i + 1] then
    redis.call('HDEL', p .. ':olease', lane)
    redis.call('ZREM', p .. ':oleased', lane)
    if redis.call('ZCARD', p .. ':ol:' .. lane) > 0 then
      local next = ARGV[i + 2]
      if next == '' then next = now end
      redis.call('ZADD', p .. ':olanes', next, lane)
    end
  end
  i = i + 3
end
local out = {}
local function take(lane, taken_over, from)
  redis.call('ZREM', from, lane)
  local ids = redis.call('ZRANGE', p .. ':ol:' .. lane, 0, per - 1)
  if #ids == 0 then
    redis.call('HDEL', p .. ':olease', lane)
    return
  end
  redis.call('ZADD', p .. ':oleased', lease_until, lane)
  redis.call('HSET', p .. ':olease', lane, lease)
  local entry = {lane, taken_over}
  for _, id in ipairs(ids) do table.insert(entry, redis.call('HGETALL', p .. ':om:' .. id)) end
  table.insert(out, entry)
end
if max > 0 then
  for _, lane in ipairs(redis.call('ZRANGEBYSCORE', p .. ':oleased', '-inf', '(' .. now, 'LIMIT', 0, max)) do
    take(lane, 1, p .. ':oleased')
  end
  if #out < max then
    for _, lane in ipairs(redis.call('ZRANGEBYSCORE', p .. ':olanes', '-inf', now, 'LIMIT', 0, max - #out)) do
      take(lane, 0, p .. ':olanes')
    end
  end
end
return out
"#;

/// Records a failed delivery. ARGV: prefix, message key, error, retry at or ''.
const FAIL_LUA: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':om:' .. id
if redis.call('HGET', key, 'status') ~= 'pending' then return 0 end
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'last_error', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', key, 'next_at', ARGV[4])
else
  local seq, lane = unpack(redis.call('HMGET', key, 'seq', 'lane'))
  redis.call('HSET', key, 'status', 'dead')
  redis.call('ZREM', p .. ':ol:' .. lane, id)
  redis.call('ZADD', p .. ':odead', seq, id)
end
return 1
"#;

/// Makes dead messages pending again: the one of a sender, or every dead
/// message with the id. ARGV: prefix, id, sender or '', now. Returns how many.
const RETRY_LUA: &str = r#"
local p, id, sender, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local members = {}
if sender ~= '' then
  members = {sender .. '\n' .. id}
else
  local suffix = '\n' .. id
  for _, m in ipairs(redis.call('ZRANGE', p .. ':odead', 0, -1)) do
    if string.sub(m, -#suffix) == suffix and not string.find(string.sub(m, 1, #m - #suffix), '\n', 1, true) then
      table.insert(members, m)
    end
  end
end
local retried = 0
for _, member in ipairs(members) do
  local key = p .. ':om:' .. member
  if redis.call('HGET', key, 'status') == 'dead' then
    local seq, lane = unpack(redis.call('HMGET', key, 'seq', 'lane'))
    redis.call('HSET', key, 'status', 'pending', 'attempts', '0', 'next_at', now)
    redis.call('ZREM', p .. ':odead', member)
    redis.call('ZADD', p .. ':ol:' .. lane, seq, member)
    if not redis.call('ZSCORE', p .. ':olanes', lane) and not redis.call('ZSCORE', p .. ':oleased', lane) then
      redis.call('ZADD', p .. ':olanes', now, lane)
    end
    retried = retried + 1
  end
end
return retried
"#;

/// Deletes dead messages. ARGV: prefix. Returns how many.
const PURGE_LUA: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGE', p .. ':odead', 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', p .. ':om:' .. id)
  redis.call('ZREM', p .. ':oall', id)
end
redis.call('DEL', p .. ':odead')
return #ids
"#;

/// The earliest lane due time or lease expiry. ARGV: prefix. Returns '' or ms.
const NEXT_DUE_LUA: &str = r#"
local p = ARGV[1]
local best = nil
for _, set in ipairs({':olanes', ':oleased'}) do
  local first = redis.call('ZRANGE', p .. set, 0, 0, 'WITHSCORES')
  if first[2] then
    local t = tonumber(first[2])
    if best == nil or t < best then best = t end
  end
end
if best == nil then return '' end
return string.format('%d', best)
"#;

/// The outbox scripts, loaded once per store.
pub(super) struct OutboxScripts {
    claim: redis::Script,
    fail: redis::Script,
    retry: redis::Script,
    purge: redis::Script,
    next_due: redis::Script,
}

impl OutboxScripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{OUTBOX_FUNCTIONS_LUA}{body}"));
        OutboxScripts { claim: script(CLAIM_LUA), fail: script(FAIL_LUA), retry: script(RETRY_LUA), purge: script(PURGE_LUA), next_due: script(NEXT_DUE_LUA) }
    }
}

/// Appends a message as the `add_message` Lua function reads it.
pub(super) fn push_message_args(invocation: &mut redis::ScriptInvocation<'_>, m: &OutboxMessage) {
    let (kind, target) = m.destination.kind_and_target();
    let method = match &m.destination {
        Destination::Actor { method, .. } => method.as_str(),
        Destination::Sink { .. } => "",
    };
    invocation
        .arg(&m.id)
        .arg(&m.sender)
        .arg(kind)
        .arg(target)
        .arg(method)
        .arg(m.payload.as_slice())
        .arg(m.event_type.as_deref().unwrap_or(""))
        .arg(m.created_at_ms);
}

/// A message hash (HGETALL pairs) read back.
fn decode_message(pairs: Vec<Vec<u8>>, lease_until_ms: Option<i64>) -> Result<OutboxRecord, StoreError> {
    let mut map = std::collections::HashMap::with_capacity(pairs.len() / 2);
    let mut pairs = pairs.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        map.insert(String::from_utf8_lossy(&name).into_owned(), value);
    }
    let text = |name: &str| map.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let corrupt = |what: &str| StoreError::Corrupt(format!("outbox message {:?}: field {what}", text("id")));
    let required = |name: &str| text(name).ok_or_else(|| corrupt(name));
    let number = |name: &str| -> Result<i64, StoreError> { required(name)?.parse().map_err(|_| corrupt(name)) };
    let destination = match required("kind")?.as_str() {
        "actor" => Destination::Actor { actor: required("target")?, method: required("method")? },
        "sink" => Destination::Sink { name: required("target")? },
        _ => return Err(corrupt("kind")),
    };
    Ok(OutboxRecord {
        message: OutboxMessage {
            id: required("id")?,
            sender: required("sender")?,
            destination,
            payload: map.get("payload").cloned().unwrap_or_default(),
            event_type: text("event_type").filter(|t| !t.is_empty()),
            created_at_ms: number("created")?,
        },
        status: required("status")?,
        attempts: number("attempts")? as u32,
        next_at_ms: number("next_at")?,
        lease_until_ms,
        last_error: text("last_error"),
    })
}

#[async_trait]
impl OutboxStore for RedisStore {
    async fn claim_lanes(
        &self,
        now_ms: i64,
        max_lanes: usize,
        per_lane: usize,
        lease_ms: i64,
        delivered: &[String],
        released: &[LaneRelease],
    ) -> Result<Vec<LaneClaim>, StoreError> {
        let lease = crate::jobs::new_lease();
        let mut invocation = self.outbox.claim.prepare_invoke();
        invocation.arg(&self.prefix).arg(now_ms).arg(max_lanes).arg(per_lane).arg(&lease).arg(now_ms + lease_ms);
        invocation.arg(delivered.len());
        for id in delivered {
            invocation.arg(id);
        }
        invocation.arg(released.len());
        for r in released {
            invocation.arg(&r.lane).arg(&r.lease).arg(r.next_at_ms.map(|t| t.to_string()).unwrap_or_default());
        }
        let lanes: Vec<redis::Value> = invocation.invoke_async(&mut self.conn()).await?;
        let mut claims = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let redis::Value::Array(mut parts) = lane else { return Err(StoreError::Corrupt("outbox claim reply".into())) };
            if parts.len() < 2 {
                return Err(StoreError::Corrupt("outbox claim reply".into()));
            }
            let hashes = parts.split_off(2);
            let name: String = redis::from_redis_value(&parts[0])?;
            let taken_over: i64 = redis::from_redis_value(&parts[1])?;
            let messages = hashes
                .iter()
                .map(|h| decode_message(redis::from_redis_value(h)?, Some(now_ms + lease_ms)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            claims.push(LaneClaim { lane: name, lease: lease.clone(), taken_over: taken_over != 0, messages });
        }
        Ok(claims)
    }

    async fn fail_message(&self, key: &str, error: &str, retry_at_ms: Option<i64>) -> Result<(), StoreError> {
        let error: String = error.chars().take(4000).collect();
        let retry = retry_at_ms.map(|t| t.to_string()).unwrap_or_default();
        let _: i64 = self.outbox.fail.prepare_invoke().arg(&self.prefix).arg(key).arg(error).arg(retry).invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        let mut from = 0;
        while out.len() < limit {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(format!("{}:oall", self.prefix))
                .arg(from)
                .arg(from + PAGE - 1)
                .query_async(&mut self.conn())
                .await?;
            from += ids.len();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(self.key("om", id));
            }
            let hashes: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut self.conn()).await?;
            let mut page = Vec::new();
            for hash in hashes.into_iter().filter(|h| !h.is_empty()) {
                let record = decode_message(hash, None)?;
                if status.is_none_or(|s| s == record.status) {
                    page.push(record);
                }
            }
            page.truncate(limit - out.len());
            // Each message's lane lease, in one round trip for the page.
            let mut pipe = redis::pipe();
            for record in &page {
                let (kind, target) = record.message.destination.kind_and_target();
                pipe.cmd("ZSCORE").arg(format!("{}:oleased", self.prefix)).arg(format!("{}\n{kind}\n{target}", record.message.sender));
            }
            let leases: Vec<Option<i64>> = if page.is_empty() { Vec::new() } else { pipe.query_async(&mut self.conn()).await? };
            for (mut record, lease) in page.into_iter().zip(leases) {
                record.lease_until_ms = lease;
                out.push(record);
            }
            if ids.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    async fn retry_message(&self, id: &str, sender: Option<&str>, now_ms: i64) -> Result<u64, StoreError> {
        Ok(self.outbox.retry.prepare_invoke().arg(&self.prefix).arg(id).arg(sender.unwrap_or("")).arg(now_ms).invoke_async(&mut self.conn()).await?)
    }

    async fn purge_dead_messages(&self) -> Result<u64, StoreError> {
        Ok(self.outbox.purge.prepare_invoke().arg(&self.prefix).invoke_async(&mut self.conn()).await?)
    }

    async fn next_message_due(&self) -> Result<Option<i64>, StoreError> {
        let due: String = self.outbox.next_due.prepare_invoke().arg(&self.prefix).invoke_async(&mut self.conn()).await?;
        Ok(due.parse().ok())
    }

    async fn message_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        self.subscribe("outbox", "new outbox messages").await
    }
}
