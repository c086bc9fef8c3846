//! Membership and the actor directory on Redis, each operation one Lua
//! script (atomic), timed by the server's `TIME`.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:members` | set | member ids |
//! | `P:member:{id}` | hash | incarnation, api, peer, state, started_at_ms, heartbeat_ms, lease_until_ms, activations, memory_budget, memory_reserved, memory_used, memory_rss, memory_shed, memory_refused, migrated |
//! | `P:dir` | hash | actor → `host\n incarnation\n epoch` |
//! | `P:dirh:{id}` | set | the actors a host id owns (for cleanup) |
//! | `P:incarnations`, `P:epochs` | string | counters, never reused |

use async_trait::async_trait;
use quark_core::id::ActorId;

use super::RedisStore;
use crate::StoreError;
use crate::cluster::{ClusterStore, HostInfo, HostLoad, Member, MemberState, Ownership};

/// Lua helpers every cluster script starts with: the server's time in ms,
/// and whether a directory entry's owner is alive.
const CLUSTER_FUNCTIONS_LUA: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owner_alive(p, host, inc, now)
  local m = redis.call('HMGET', p .. ':member:' .. host, 'incarnation', 'state', 'lease_until_ms')
  return m[1] == inc and m[2] ~= false and m[2] ~= 'dead' and tonumber(m[3]) >= now
end
local function split_entry(entry)
  local host, inc, epoch = string.match(entry, '^(.*)\n([^\n]*)\n([^\n]*)$')
  return host, inc, epoch
end
-- Drops the directory entries of (host, incarnation).
local function drop_entries(p, host, inc)
  for _, actor in ipairs(redis.call('SMEMBERS', p .. ':dirh:' .. host)) do
    local entry = redis.call('HGET', p .. ':dir', actor)
    if entry then
      local h, i = split_entry(entry)
      if h == host and i == inc then redis.call('HDEL', p .. ':dir', actor) end
    end
  end
  redis.call('DEL', p .. ':dirh:' .. host)
end
"#;

/// ARGV: prefix, id, api, peer, lease ms. The new incarnation, or -1 when
/// a live member holds the id.
const JOIN_LUA: &str = r#"
local p, id = ARGV[1], ARGV[2]
local now = now_ms()
local key = p .. ':member:' .. id
local m = redis.call('HMGET', key, 'state', 'lease_until_ms')
if m[1] and m[1] ~= 'dead' and tonumber(m[2]) >= now then return -1 end
local inc = redis.call('INCR', p .. ':incarnations')
redis.call('HSET', key, 'incarnation', inc, 'api', ARGV[3], 'peer', ARGV[4], 'state', 'joining', 'started_at_ms', now,
  'heartbeat_ms', now, 'lease_until_ms', now + tonumber(ARGV[5]), 'activations', 0,
  'memory_budget', 0, 'memory_reserved', 0, 'memory_used', 0, 'memory_rss', 0, 'memory_shed', 0, 'memory_refused', 0, 'migrated', 0)
redis.call('SADD', p .. ':members', id)
return inc
"#;

/// ARGV: prefix, id, incarnation, lease ms, state, activations, memory
/// budget, reserved, used, RSS, shed, refused, migrated. 1, or 0
/// when that incarnation is no longer a member.
const HEARTBEAT_LUA: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':member:' .. id
local m = redis.call('HMGET', key, 'incarnation', 'state')
if m[1] ~= ARGV[3] or m[2] == false or m[2] == 'dead' then return 0 end
local now = now_ms()
redis.call('HSET', key, 'heartbeat_ms', now, 'lease_until_ms', now + tonumber(ARGV[4]), 'state', ARGV[5], 'activations', ARGV[6],
  'memory_budget', ARGV[7], 'memory_reserved', ARGV[8], 'memory_used', ARGV[9], 'memory_rss', ARGV[10],
  'memory_shed', ARGV[11], 'memory_refused', ARGV[12], 'migrated', ARGV[13])
return 1
"#;

/// ARGV: prefix. The server's time, then each member: id and its hash's
/// fields as a flat list.
const MEMBERS_LUA: &str = r#"
local p = ARGV[1]
local out = {tostring(now_ms())}
for _, id in ipairs(redis.call('SMEMBERS', p .. ':members')) do
  local fields = redis.call('HGETALL', p .. ':member:' .. id)
  if #fields > 0 then table.insert(out, {id, fields}) end
end
return out
"#;

/// ARGV: prefix, id, incarnation.
const SUSPECT_LUA: &str = r#"
local key = ARGV[1] .. ':member:' .. ARGV[2]
local m = redis.call('HMGET', key, 'incarnation', 'state')
if m[1] == ARGV[3] and (m[2] == 'joining' or m[2] == 'active') then redis.call('HSET', key, 'state', 'suspect') end
return 1
"#;

/// ARGV: prefix, grace ms, forget ms. The ids declared dead.
const REAP_LUA: &str = r#"
local p = ARGV[1]
local now = now_ms()
local dead = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. ':members')) do
  local key = p .. ':member:' .. id
  local m = redis.call('HMGET', key, 'incarnation', 'state', 'lease_until_ms')
  if m[2] == false then
    redis.call('SREM', p .. ':members', id)
  elseif m[2] ~= 'dead' and tonumber(m[3]) < now - tonumber(ARGV[2]) then
    redis.call('HSET', key, 'state', 'dead')
    drop_entries(p, id, m[1])
    table.insert(dead, id)
  elseif m[2] == 'dead' then
    -- Declared dead by a takeover: its other entries go now.
    drop_entries(p, id, m[1])
    if tonumber(m[3]) < now - tonumber(ARGV[3]) then
      redis.call('DEL', key)
      redis.call('SREM', p .. ':members', id)
    end
  end
end
return dead
"#;

/// ARGV: prefix, id, incarnation.
const LEAVE_LUA: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':member:' .. id
if redis.call('HGET', key, 'incarnation') ~= ARGV[3] then return 0 end
drop_entries(p, id, ARGV[3])
redis.call('DEL', key)
redis.call('SREM', p .. ':members', id)
return 1
"#;

/// ARGV: prefix, actor, id, incarnation. The entry after the claim.
const CLAIM_LUA: &str = r#"
local p, actor, id, inc = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local entry = redis.call('HGET', p .. ':dir', actor)
if entry then
  local host, held = split_entry(entry)
  local take = (host == id and held ~= inc) or not owner_alive(p, host, held, now_ms())
  if not take then return entry end
  -- An owner that is not alive is declared dead (as on PostgreSQL).
  local key = p .. ':member:' .. host
  if host ~= id and redis.call('HGET', key, 'incarnation') == held then redis.call('HSET', key, 'state', 'dead') end
  redis.call('SREM', p .. ':dirh:' .. host, actor)
end
local epoch = redis.call('INCR', p .. ':epochs')
entry = id .. '\n' .. inc .. '\n' .. epoch
redis.call('HSET', p .. ':dir', actor, entry)
redis.call('SADD', p .. ':dirh:' .. id, actor)
return entry
"#;

/// ARGV: prefix, actor, epoch. 1 if released.
const RELEASE_LUA: &str = r#"
local p, actor = ARGV[1], ARGV[2]
local entry = redis.call('HGET', p .. ':dir', actor)
if not entry then return 0 end
local host, _, epoch = split_entry(entry)
if epoch ~= ARGV[3] then return 0 end
redis.call('HDEL', p .. ':dir', actor)
redis.call('SREM', p .. ':dirh:' .. host, actor)
return 1
"#;

/// ARGV: prefix, actor, epoch, target id, target incarnation. The new
/// entry, or nil when the actor is not held at that epoch or the target
/// is not alive.
const HAND_OFF_LUA: &str = r#"
local p, actor, to, inc = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local entry = redis.call('HGET', p .. ':dir', actor)
if not entry then return false end
local host, _, epoch = split_entry(entry)
if epoch ~= ARGV[3] or not owner_alive(p, to, inc, now_ms()) then return false end
local fresh = redis.call('INCR', p .. ':epochs')
entry = to .. '\n' .. inc .. '\n' .. fresh
redis.call('HSET', p .. ':dir', actor, entry)
redis.call('SREM', p .. ':dirh:' .. host, actor)
redis.call('SADD', p .. ':dirh:' .. to, actor)
return entry
"#;

/// The cluster scripts, prepared once.
pub(super) struct ClusterScripts {
    join: redis::Script,
    heartbeat: redis::Script,
    members: redis::Script,
    suspect: redis::Script,
    reap: redis::Script,
    leave: redis::Script,
    claim: redis::Script,
    release: redis::Script,
    hand_off: redis::Script,
}

impl ClusterScripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{CLUSTER_FUNCTIONS_LUA}{body}"));
        ClusterScripts {
            join: script(JOIN_LUA),
            heartbeat: script(HEARTBEAT_LUA),
            members: script(MEMBERS_LUA),
            suspect: script(SUSPECT_LUA),
            reap: script(REAP_LUA),
            leave: script(LEAVE_LUA),
            claim: script(CLAIM_LUA),
            release: script(RELEASE_LUA),
            hand_off: script(HAND_OFF_LUA),
        }
    }
}

/// Reads a directory entry, `host\n incarnation\n epoch`.
fn ownership(entry: &str) -> Result<Ownership, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("directory entry {entry:?}"));
    let mut parts = entry.rsplitn(3, '\n');
    let epoch = parts.next().and_then(|e| e.parse().ok()).ok_or_else(corrupt)?;
    let incarnation = parts.next().and_then(|i| i.parse().ok()).ok_or_else(corrupt)?;
    let host = parts.next().ok_or_else(corrupt)?.to_string();
    Ok(Ownership { host, incarnation, epoch })
}

/// Reads a member from its id and its hash's fields.
fn member(id: String, fields: Vec<String>, read_at_ms: i64) -> Result<Member, StoreError> {
    let map: std::collections::HashMap<&str, &str> = fields.chunks(2).filter_map(|kv| Some((kv.first()?.as_str(), kv.get(1)?.as_str()))).collect();
    let text = |name: &str| map.get(name).map(|v| v.to_string()).ok_or_else(|| StoreError::Corrupt(format!("member {id}: no {name}")));
    let int = |name: &str| text(name)?.parse::<i64>().map_err(|e| StoreError::Corrupt(format!("member {id}, {name}: {e}")));
    // Load figures a member of an older build did not write read as 0.
    let count = |name: &str| if map.contains_key(name) { int(name).map(|v| v.max(0) as u64) } else { Ok(0) };
    Ok(Member {
        incarnation: int("incarnation")?,
        state: text("state")?.parse().map_err(StoreError::Corrupt)?,
        started_at_ms: int("started_at_ms")?,
        heartbeat_ms: int("heartbeat_ms")?,
        lease_until_ms: int("lease_until_ms")?,
        load: HostLoad {
            activations: count("activations")?,
            memory_budget: count("memory_budget")?,
            memory_reserved: count("memory_reserved")?,
            memory_used: count("memory_used")?,
            rss: count("memory_rss")?,
            shed: count("memory_shed")?,
            refused: count("memory_refused")?,
            migrated: count("migrated")?,
        },
        read_at_ms,
        host: HostInfo { api: text("api")?, peer: text("peer")?, id },
    })
}

#[async_trait]
impl ClusterStore for RedisStore {
    async fn join(&self, host: &HostInfo, lease_ms: i64) -> Result<i64, StoreError> {
        let s = &self.cluster.join;
        let incarnation: i64 =
            s.prepare_invoke().arg(&self.prefix).arg(&host.id).arg(&host.api).arg(&host.peer).arg(lease_ms).invoke_async(&mut self.conn()).await?;
        if incarnation < 0 {
            return Err(StoreError::Conflict(format!(
                "host id {:?} belongs to a live member of this cluster: give each host its own --host-id (or none), \
                 or wait until the other one's lease lapses",
                host.id
            )));
        }
        Ok(incarnation)
    }

    async fn heartbeat(&self, id: &str, incarnation: i64, state: MemberState, lease_ms: i64, load: &HostLoad) -> Result<(), StoreError> {
        let renewed: i64 = self
            .cluster
            .heartbeat
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(id)
            .arg(incarnation)
            .arg(lease_ms)
            .arg(state.as_str())
            .arg(load.activations)
            .arg(load.memory_budget)
            .arg(load.memory_reserved)
            .arg(load.memory_used)
            .arg(load.rss)
            .arg(load.shed)
            .arg(load.refused)
            .arg(load.migrated)
            .invoke_async(&mut self.conn())
            .await?;
        if renewed == 0 {
            return Err(StoreError::Fenced(format!("host {id} (incarnation {incarnation}) is no longer a member: it was declared dead")));
        }
        Ok(())
    }

    async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let (now, rows): (String, Vec<(String, Vec<String>)>) = {
            let value: redis::Value = self.cluster.members.prepare_invoke().arg(&self.prefix).invoke_async(&mut self.conn()).await?;
            let redis::Value::Array(mut items) = value else { return Err(StoreError::Corrupt("members: not a list".into())) };
            if items.is_empty() {
                return Err(StoreError::Corrupt("members: empty reply".into()));
            }
            let now: String = redis::from_redis_value(&items.remove(0))?;
            let rows = items.iter().map(redis::from_redis_value).collect::<Result<Vec<(String, Vec<String>)>, _>>()?;
            (now, rows)
        };
        let now: i64 = now.parse().map_err(|e| StoreError::Corrupt(format!("members: time {now:?}: {e}")))?;
        let mut members = rows.into_iter().map(|(id, fields)| member(id, fields, now)).collect::<Result<Vec<_>, _>>()?;
        members.sort_by(|a, b| a.host.id.cmp(&b.host.id));
        Ok(members)
    }

    async fn suspect(&self, id: &str, incarnation: i64) -> Result<(), StoreError> {
        let _: i64 = self.cluster.suspect.prepare_invoke().arg(&self.prefix).arg(id).arg(incarnation).invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn reap(&self, grace_ms: i64, forget_ms: i64) -> Result<Vec<String>, StoreError> {
        Ok(self.cluster.reap.prepare_invoke().arg(&self.prefix).arg(grace_ms).arg(forget_ms).invoke_async(&mut self.conn()).await?)
    }

    async fn leave(&self, id: &str, incarnation: i64) -> Result<(), StoreError> {
        let _: i64 = self.cluster.leave.prepare_invoke().arg(&self.prefix).arg(id).arg(incarnation).invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn owner(&self, actor: &ActorId) -> Result<Option<Ownership>, StoreError> {
        let entry: Option<String> = redis::AsyncCommands::hget(&mut self.conn(), format!("{}:dir", self.prefix), actor.as_str()).await?;
        entry.as_deref().map(ownership).transpose()
    }

    async fn claim(&self, actor: &ActorId, id: &str, incarnation: i64) -> Result<Ownership, StoreError> {
        let entry: String =
            self.cluster.claim.prepare_invoke().arg(&self.prefix).arg(actor.as_str()).arg(id).arg(incarnation).invoke_async(&mut self.conn()).await?;
        ownership(&entry)
    }

    async fn release(&self, actor: &ActorId, epoch: u64) -> Result<bool, StoreError> {
        let n: i64 = self.cluster.release.prepare_invoke().arg(&self.prefix).arg(actor.as_str()).arg(epoch).invoke_async(&mut self.conn()).await?;
        Ok(n == 1)
    }

    async fn hand_off(&self, actor: &ActorId, epoch: u64, to: &str, incarnation: i64) -> Result<Option<Ownership>, StoreError> {
        let entry: Option<String> = self
            .cluster
            .hand_off
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(actor.as_str())
            .arg(epoch)
            .arg(to)
            .arg(incarnation)
            .invoke_async(&mut self.conn())
            .await?;
        entry.as_deref().map(ownership).transpose()
    }
}
