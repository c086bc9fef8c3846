//! Membership and the actor directory on PostgreSQL (`cluster_members`,
//! `actor_directory`; migration 0008). Leases are in the server's time.

use async_trait::async_trait;
use quark_core::id::ActorId;
use sqlx::postgres::PgRow;
use sqlx::{Connection, Row};

use super::PostgresStore;
use crate::cluster::{ClusterStore, HostInfo, HostLoad, Member, MemberState, Ownership};
use crate::{StoreError, TurnCommit};

/// The server's time, ms since the epoch (`clock_timestamp()`: the time of
/// the statement, not of its transaction's start).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Whether the member that holds directory row `d` is alive now.
fn owner_alive() -> String {
    format!(
        "EXISTS (SELECT 1 FROM cluster_members m WHERE m.id = d.host AND m.incarnation = d.incarnation \
         AND m.state <> 'dead' AND m.lease_until_ms >= {NOW_MS})"
    )
}

/// How long a claim waits for a commit of the actor's old owner, which
/// holds that owner's membership row (a paused owner's open transaction is
/// cut off by the server's idle timeout).
const CLAIM_LOCK_TIMEOUT: &str = "2s";

fn ownership(row: &PgRow) -> Result<Ownership, StoreError> {
    Ok(Ownership { host: row.try_get("host")?, incarnation: row.try_get("incarnation")?, epoch: row.try_get::<i64, _>("epoch")? as u64 })
}

fn member(row: &PgRow) -> Result<Member, StoreError> {
    Ok(Member {
        host: HostInfo { id: row.try_get("id")?, api: row.try_get("api")?, peer: row.try_get("peer")? },
        incarnation: row.try_get("incarnation")?,
        state: row.try_get::<String, _>("state")?.parse().map_err(StoreError::Corrupt)?,
        started_at_ms: row.try_get("started_at_ms")?,
        heartbeat_ms: row.try_get("heartbeat_ms")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        load: HostLoad {
            activations: row.try_get::<i64, _>("activations")? as u64,
            memory_budget: row.try_get::<i64, _>("memory_budget")? as u64,
            memory_reserved: row.try_get::<i64, _>("memory_reserved")? as u64,
            memory_used: row.try_get::<i64, _>("memory_used")? as u64,
            rss: row.try_get::<i64, _>("memory_rss")? as u64,
            shed: row.try_get::<i64, _>("memory_shed")? as u64,
            refused: row.try_get::<i64, _>("memory_refused")? as u64,
            migrated: row.try_get::<i64, _>("migrated")? as u64,
        },
        read_at_ms: row.try_get("now_ms")?,
    })
}

impl PostgresStore {
    /// Inside a commit: the fenced turns of `batch` must still own their
    /// actors at their epoch, under a member that is not dead. Only the
    /// owners' membership rows are share-locked until the commit ends (one
    /// row for a host's batch, not one per actor): a claim that takes an
    /// actor from a host that is no longer alive first marks that host
    /// dead, which waits for its commit in flight and fails every later one.
    pub(super) async fn check_fences(tx: &mut sqlx::PgConnection, batch: &[TurnCommit]) -> Result<(), StoreError> {
        // One check per (actor, epoch): pipelined turns of one actor share
        // a batch, each carrying the same fence.
        let mut fences: Vec<(&str, i64)> = batch.iter().filter_map(|c| Some((c.actor.as_str(), c.fence? as i64))).collect();
        if fences.is_empty() {
            return Ok(());
        }
        fences.sort_unstable();
        fences.dedup();
        let (actors, epochs): (Vec<&str>, Vec<i64>) = fences.iter().copied().unzip();
        // Driven by the batch's rows (a nested loop on the primary keys),
        // not by the directory: an `IN (SELECT … UNNEST)` made PostgreSQL
        // scan every entry. One row per fence that holds.
        let held = sqlx::query(
            "SELECT d.actor FROM UNNEST($1::text[], $2::bigint[]) AS f(actor, epoch) \
             JOIN actor_directory d ON d.actor = f.actor AND d.epoch = f.epoch \
             JOIN cluster_members m ON m.id = d.host AND m.incarnation = d.incarnation \
             WHERE m.state <> 'dead' FOR SHARE OF m",
        )
        .bind(&actors)
        .bind(&epochs)
        .fetch_all(&mut *tx)
        .await?;
        if held.len() != fences.len() {
            return Err(crate::cluster::fence_conflict(batch));
        }
        Ok(())
    }
}

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn join(&self, host: &HostInfo, lease_ms: i64) -> Result<i64, StoreError> {
        let sql = format!(
            "INSERT INTO cluster_members AS c (id, incarnation, api, peer, state, started_at_ms, heartbeat_ms, lease_until_ms) \
             VALUES ($1, nextval('cluster_incarnations'), $2, $3, 'joining', {NOW_MS}, {NOW_MS}, {NOW_MS} + $4) \
             ON CONFLICT (id) DO UPDATE SET incarnation = excluded.incarnation, api = excluded.api, peer = excluded.peer, \
             state = 'joining', started_at_ms = excluded.started_at_ms, heartbeat_ms = excluded.heartbeat_ms, \
             lease_until_ms = excluded.lease_until_ms, activations = 0, \
             memory_budget = 0, memory_reserved = 0, memory_used = 0, memory_rss = 0, memory_shed = 0, memory_refused = 0, migrated = 0 \
             WHERE c.state = 'dead' OR c.lease_until_ms < excluded.started_at_ms \
             RETURNING incarnation"
        );
        let row = sqlx::query(&sql).bind(&host.id).bind(&host.api).bind(&host.peer).bind(lease_ms).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(row.try_get("incarnation")?),
            None => Err(StoreError::Conflict(format!(
                "host id {:?} belongs to a live member of this cluster: give each host its own --host-id (or none), \
                 or wait until the other one's lease lapses",
                host.id
            ))),
        }
    }

    async fn heartbeat(&self, id: &str, incarnation: i64, state: MemberState, lease_ms: i64, load: &HostLoad) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE cluster_members SET heartbeat_ms = {NOW_MS}, lease_until_ms = {NOW_MS} + $3, state = $4, activations = $5, \
             memory_budget = $6, memory_reserved = $7, memory_used = $8, memory_rss = $9, \
             memory_shed = $10, memory_refused = $11, migrated = $12 \
             WHERE id = $1 AND incarnation = $2 AND state <> 'dead'"
        );
        let n = sqlx::query(&sql)
            .bind(id)
            .bind(incarnation)
            .bind(lease_ms)
            .bind(state.as_str())
            .bind(load.activations as i64)
            .bind(load.memory_budget as i64)
            .bind(load.memory_reserved as i64)
            .bind(load.memory_used as i64)
            .bind(load.rss as i64)
            .bind(load.shed as i64)
            .bind(load.refused as i64)
            .bind(load.migrated as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::Fenced(format!("host {id} (incarnation {incarnation}) is no longer a member: it was declared dead")));
        }
        Ok(())
    }

    async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let sql = format!("SELECT *, {NOW_MS} AS now_ms FROM cluster_members ORDER BY id");
        sqlx::query(&sql).fetch_all(&self.pool).await?.iter().map(member).collect()
    }

    async fn suspect(&self, id: &str, incarnation: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE cluster_members SET state = 'suspect' WHERE id = $1 AND incarnation = $2 AND state IN ('joining', 'active')")
            .bind(id)
            .bind(incarnation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reap(&self, grace_ms: i64, forget_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("UPDATE cluster_members SET state = 'dead' WHERE state <> 'dead' AND lease_until_ms < {NOW_MS} - $1 RETURNING id");
        let dead = sqlx::query(&sql).bind(grace_ms).fetch_all(&mut *tx).await?;
        let ids = dead.iter().map(|r| r.try_get("id")).collect::<Result<Vec<String>, _>>()?;
        // The entries of every dead member go: those declared dead now,
        // and those a takeover declared dead.
        sqlx::query(
            "DELETE FROM actor_directory d USING cluster_members m \
             WHERE m.state = 'dead' AND d.host = m.id AND d.incarnation = m.incarnation",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DELETE FROM cluster_members WHERE state = 'dead' AND lease_until_ms < {NOW_MS} - $1"))
            .bind(forget_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn leave(&self, id: &str, incarnation: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM actor_directory WHERE host = $1 AND incarnation = $2").bind(id).bind(incarnation).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM cluster_members WHERE id = $1 AND incarnation = $2").bind(id).bind(incarnation).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn owner(&self, actor: &ActorId) -> Result<Option<Ownership>, StoreError> {
        let row = sqlx::query("SELECT host, incarnation, epoch FROM actor_directory WHERE actor = $1")
            .bind(actor.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ownership).transpose()
    }

    async fn claim(&self, actor: &ActorId, id: &str, incarnation: i64) -> Result<Ownership, StoreError> {
        // Already this incarnation's (a reactivation): one read, no write.
        if let Some(owner) = self.owner(actor).await?
            && owner.host == id
            && owner.incarnation == incarnation
        {
            return Ok(owner);
        }
        // An owner that is not alive is marked dead first: that waits for
        // its commit in flight (which holds its membership row) and fails
        // its later ones (see `check_fences`).
        let bury = format!(
            "UPDATE cluster_members m SET state = 'dead' FROM actor_directory d \
             WHERE d.actor = $1 AND m.id = d.host AND m.incarnation = d.incarnation AND m.state <> 'dead' \
             AND m.lease_until_ms < {NOW_MS}"
        );
        // New owner: no row, a row of an earlier incarnation of this host,
        // or a row whose owner is not alive. Otherwise the row stays and
        // is read back (this host's own claim, or the live owner's).
        let take = format!(
            "INSERT INTO actor_directory AS d (actor, host, incarnation, epoch) VALUES ($1, $2, $3, nextval('cluster_epochs')) \
             ON CONFLICT (actor) DO UPDATE SET host = excluded.host, incarnation = excluded.incarnation, epoch = excluded.epoch \
             WHERE (d.host = excluded.host AND d.incarnation <> excluded.incarnation) OR NOT {} \
             RETURNING host, incarnation, epoch",
            owner_alive()
        );
        for _ in 0..3 {
            let mut conn = self.pool.acquire().await?;
            let mut tx = conn.begin().await?;
            sqlx::query(&format!("SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
            sqlx::query(&bury).bind(actor.as_str()).execute(&mut *tx).await?;
            let claimed = sqlx::query(&take).bind(actor.as_str()).bind(id).bind(incarnation).fetch_optional(&mut *tx).await?;
            let row = match claimed {
                Some(row) => Some(row),
                None => {
                    sqlx::query("SELECT host, incarnation, epoch FROM actor_directory WHERE actor = $1")
                        .bind(actor.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                }
            };
            tx.commit().await?;
            // Gone in between (its owner was reaped): claim again.
            if let Some(row) = row {
                return ownership(&row);
            }
        }
        Err(StoreError::Unavailable(format!("claiming {actor}: its directory entry keeps changing")))
    }

    async fn release(&self, actor: &ActorId, epoch: u64) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM actor_directory WHERE actor = $1 AND epoch = $2")
            .bind(actor.as_str())
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn hand_off(&self, actor: &ActorId, epoch: u64, to: &str, incarnation: i64) -> Result<Option<Ownership>, StoreError> {
        let sql = format!(
            "UPDATE actor_directory SET host = $3, incarnation = $4, epoch = nextval('cluster_epochs') \
             WHERE actor = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM cluster_members m WHERE m.id = $3 \
             AND m.incarnation = $4 AND m.state <> 'dead' AND m.lease_until_ms >= {NOW_MS}) \
             RETURNING host, incarnation, epoch"
        );
        let row = sqlx::query(&sql).bind(actor.as_str()).bind(epoch as i64).bind(to).bind(incarnation).fetch_optional(&self.pool).await?;
        row.as_ref().map(ownership).transpose()
    }
}
