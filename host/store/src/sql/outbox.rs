//! The inbox and the outbox in SQL: inbox entries written with the turn,
//! messages in lanes, claims, failures and retries.

use async_trait::async_trait;
use quark_core::id::ActorId;

use super::{Conn, Dialect, SqlStore};
use crate::{InboxEntry, InboxStore, StoreError, TurnCommit};

/// Writes a batch's inbox entries inside the batch's transaction (with the
/// dialect's batched insert): an entry that exists already (the message
/// was handled) fails the batch with a conflict instead of running twice.
pub(crate) async fn commit_inbox<D: Dialect>(tx: &mut Conn<D>, batch: &[TurnCommit]) -> Result<(), StoreError> {
    let entries: Vec<(&str, &InboxEntry)> = batch.iter().filter_map(|c| c.inbox.as_ref().map(|e| (c.actor.as_str(), e))).collect();
    if D::insert_inbox(tx, &entries).await? != entries.len() as u64 {
        return Err(StoreError::Conflict(match entries[..] {
            [(actor, e)] => format!("{actor} has already handled message {:?} of {}", e.message_id, e.sender_name()),
            _ => "a message in this batch was already handled by its receiver".into(),
        }));
    }
    Ok(())
}

#[async_trait]
impl<S: SqlStore> InboxStore for S {
    async fn inbox_reply(&self, actor: &ActorId, sender: &str, message_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let sql = "SELECT reply FROM inbox WHERE actor = $1 AND sender = $2 AND message_id = $3";
        let row = S::Db::fetch_optional(&mut conn, sql, &[actor.as_str().into(), sender.into(), message_id.into()]).await?;
        row.map(|r| S::Db::bytes(&r, "reply")).transpose()
    }

    async fn expire_inbox(&self, before_ms: i64) -> Result<u64, StoreError> {
        // An entry whose message is still in the outbox (handled, not
        // yet deleted, e.g. its host died) stays: it may be redelivered.
        let mut conn = self.writer().acquire().await?;
        let sql = "DELETE FROM inbox WHERE at_ms < $1 \
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sender = inbox.sender AND o.id = inbox.message_id)";
        S::Db::execute(&mut conn, sql, &[before_ms.into()]).await
    }
}

/// The columns of an outbox row (`o`, with its lane `l`), as
/// [`outbox_from_row`] reads them.
pub(crate) const OUTBOX_COLUMNS: &str = "o.id, o.sender, o.kind, o.target, o.method, o.payload, o.event_type, o.created_at_ms, \
     o.status, o.attempts, o.next_at_ms, l.lease_until_ms, o.last_error";

/// Reads an outbox row selected with [`OUTBOX_COLUMNS`].
pub(crate) fn outbox_from_row<R>(row: &R) -> Result<crate::outbox::OutboxRecord, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    use crate::outbox::Destination;
    let kind: String = row.try_get("kind")?;
    let target: String = row.try_get("target")?;
    let destination = match kind.as_str() {
        "actor" => Destination::Actor { actor: target, method: row.try_get::<Option<String>, _>("method")?.unwrap_or_default() },
        "sink" => Destination::Sink { name: target },
        other => return Err(StoreError::Corrupt(format!("outbox row: unknown kind {other:?}"))),
    };
    Ok(crate::outbox::OutboxRecord {
        message: crate::outbox::OutboxMessage {
            id: row.try_get("id")?,
            sender: row.try_get("sender")?,
            destination,
            payload: row.try_get("payload")?,
            event_type: row.try_get("event_type")?,
            created_at_ms: row.try_get("created_at_ms")?,
        },
        status: row.try_get("status")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        next_at_ms: row.try_get("next_at_ms")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        last_error: row.try_get("last_error")?,
    })
}

/// `(a, b)` pairs as SQL row values (`(id, lease)`, `(sender, id)`), placeholders from `first`.
pub(crate) fn lane_pairs(first: usize, count: usize) -> String {
    (0..count).map(|i| format!("(${}, ${})", first + 2 * i, first + 2 * i + 1)).collect::<Vec<_>>().join(", ")
}

/// Implements `OutboxStore` for a SQL store of database `$db`, plus
/// `commit_outbox`, which inserts a batch's messages and opens their lanes
/// inside the batch's transaction (a message id sent before is not sent
/// again). `$lock` ends the lane claim's inner select; `lock_lanes` (empty
/// for a single-writer store) locks the lanes a claim releases, in the
/// order a commit upserts them, so the two never deadlock; `claim_begin`
/// starts each claim's transaction; `relaxed_claims` are the statements
/// run on the writer before and after a claim, so that a claim does not
/// wait for the fsync (SQLite: `synchronous = NORMAL`, then `FULL` again;
/// PostgreSQL does it in `claim_begin`). A claim lost to an OS crash only
/// redelivers messages the inbox recognises, or leaves a lease to expire.
/// `announce` adds `message_announcements`.
macro_rules! sql_outbox_store {
    ($store:ty, $db:ty, writer: $writer:ident, reader: $reader:ident, lock: $lock:expr, lock_lanes: $lock_lanes:literal,
     claim_begin: $claim_begin:literal, relaxed_claims: ($relax:literal, $restore:literal), announce: { $($announce:tt)* }) => {
        impl $store {
            /// Inserts a batch's messages and opens their lanes. With
            /// `lease` (token, expiry), a lane this commit creates is
            /// leased to this host at once and returned with the messages
            /// inserted into it, to be delivered without a claim; so are
            /// the messages added to lanes that existed, with each lane's
            /// lease then (empty if none).
            async fn commit_outbox(
                tx: &mut ::sqlx::Transaction<'_, $db>,
                batch: &[$crate::TurnCommit],
                lease: Option<&(String, i64)>,
            ) -> Result<(Vec<$crate::outbox::LaneClaim>, Vec<$crate::outbox::LaneClaim>), $crate::StoreError> {
                use ::sqlx::Row;
                let messages: Vec<&$crate::outbox::OutboxMessage> = batch.iter().flat_map(|c| c.messages.iter()).collect();
                let mut inserted = Self::insert_messages(&mut **tx, &messages, lease.is_some()).await?;
                // Each lane once per statement (PostgreSQL refuses to upsert a
                // row twice in one), sorted: claims lock the lanes they
                // release in this order too. The no-op update, rather than
                // DO NOTHING, waits for a concurrent release deleting the
                // lane, then inserts it again: a message never lands in no lane.
                let mut lanes: Vec<$crate::sql::LaneKey> = messages
                    .iter()
                    .map(|m| {
                        let (kind, target) = m.destination.kind_and_target();
                        (m.sender.as_str(), kind, target, m.created_at_ms)
                    })
                    .collect();
                lanes.sort_unstable();
                lanes.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
                // Each of `lanes`: its id, and the lease it had if it existed
                // (None when this commit created it).
                let mut opened: Vec<Option<(i64, Option<String>)>> = vec![None; lanes.len()];
                let lane_index = |sender: &str, kind: &str, target: &str| {
                    lanes.binary_search_by(|l| (l.0, l.1, l.2).cmp(&(sender, kind, target))).ok()
                };
                let Some((token, until)) = lease else {
                    Self::upsert_lanes(&mut **tx, &lanes, None).await?;
                    return Ok((Vec::new(), Vec::new()));
                };
                // An existing lane keeps its lease (or none): only lanes
                // this statement created carry this commit's token.
                for row in Self::upsert_lanes(&mut **tx, &lanes, lease).await? {
                    let held: Option<&str> = row.try_get(4)?;
                    let created = held == Some(token.as_str());
                    if let Some(i) = lane_index(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?) {
                        let lease_before = (!created).then(|| held.unwrap_or_default().to_string());
                        opened[i] = Some((row.try_get::<i64, _>(0)?, lease_before));
                    }
                }
                // Per lane: whether this commit created it, and its claim.
                let mut claims: std::collections::BTreeMap<i64, (bool, $crate::outbox::LaneClaim)> = std::collections::BTreeMap::new();
                for m in messages {
                    let (kind, target) = m.destination.kind_and_target();
                    let Some((lane, lease_before)) = lane_index(&m.sender, kind, target).and_then(|i| opened[i].as_ref()) else { continue };
                    let (_, claim) = claims.entry(*lane).or_insert_with(|| {
                        let claim = $crate::outbox::LaneClaim {
                            lane: lane.to_string(),
                            lease: lease_before.clone().unwrap_or_else(|| token.clone()),
                            taken_over: false,
                            messages: Vec::new(),
                        };
                        (lease_before.is_none(), claim)
                    });
                    if inserted.remove(&m.key()) {
                        claim.messages.push($crate::outbox::OutboxRecord {
                            message: (*m).clone(),
                            status: "pending".into(),
                            attempts: 0,
                            next_at_ms: m.created_at_ms,
                            lease_until_ms: Some(*until),
                            last_error: None,
                        });
                    }
                }
                let (created, added): (Vec<_>, Vec<_>) = claims.into_values().partition(|(created, _)| *created);
                let added = added.into_iter().map(|(_, c)| c).filter(|c| !c.messages.is_empty()).collect();
                Ok((created.into_iter().map(|(_, c)| c).collect(), added))
            }
        }

        #[async_trait::async_trait]
        impl $crate::outbox::OutboxStore for $store {
            fn deliver_new_lanes_here(&self) -> bool {
                self.new_lanes.enable();
                true
            }

            fn take_new_lanes(&self) -> (Vec<$crate::outbox::LaneClaim>, Vec<$crate::outbox::LaneClaim>) {
                self.new_lanes.take()
            }

            async fn claim_lanes(
                &self,
                now_ms: i64,
                max_lanes: usize,
                per_lane: usize,
                lease_ms: i64,
                delivered: &[String],
                released: &[$crate::outbox::LaneRelease],
            ) -> Result<Vec<$crate::outbox::LaneClaim>, $crate::StoreError> {
                use ::sqlx::Row;
                let lease = $crate::jobs::new_lease();
                // A claim only moves delivery bookkeeping: it need not wait
                // for the disk (see `relaxed_claims`).
                let mut conn = self.$writer.acquire().await?;
                if !$relax.is_empty() {
                    ::sqlx::query($relax).execute(&mut *conn).await?;
                }
                let outcome: Result<_, $crate::StoreError> = async {
                    let mut tx = ::sqlx::Connection::begin_with(&mut *conn, $claim_begin).await?;
                    for chunk in $crate::sql::pow2_chunks(delivered, 256) {
                        let sql = format!(
                            "DELETE FROM outbox WHERE (sender, id) IN (VALUES {})",
                            $crate::sql::lane_pairs(1, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql);
                        for key in chunk {
                            let (sender, id) = $crate::outbox::split_message_key(key);
                            q = q.bind(sender).bind(id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    // A commit that sends messages upserts their lanes sorted by
                    // (sender, kind, target): lock the lanes released here in
                    // that order first, in one statement, so neither waits for
                    // the other in a cycle. (Both touch outbox rows before lanes.)
                    let ids: Vec<i64> = released.iter().filter_map(|r| r.lane.parse().ok()).collect();
                    if !$lock_lanes.is_empty() && !ids.is_empty() {
                        let sql = $lock_lanes.replace("{}", &$crate::sql::placeholders(1, ids.len()));
                        let mut q = ::sqlx::query(&sql);
                        for id in &ids {
                            q = q.bind(*id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    // Released lanes: due now in one statement per chunk, those
                    // waiting for a retry one by one; then the empty ones go.
                    let (now_due, later): (Vec<_>, Vec<_>) = released.iter().partition(|r| r.next_at_ms.is_none());
                    for chunk in $crate::sql::pow2_chunks(&now_due, 128) {
                        let sql = format!(
                            "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = $1 WHERE (id, lease) IN (VALUES {})",
                            $crate::sql::lane_pairs(2, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql).bind(now_ms);
                        for r in chunk {
                            q = q.bind(r.lane.parse::<i64>().unwrap_or(-1)).bind(&r.lease);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    for r in later {
                        ::sqlx::query(
                            "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = $1 WHERE id = $2 AND lease = $3",
                        )
                        .bind(r.next_at_ms)
                        .bind(r.lane.parse::<i64>().unwrap_or(-1))
                        .bind(&r.lease)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for chunk in $crate::sql::pow2_chunks(&ids, 256) {
                        let sql = format!(
                            "DELETE FROM outbox_lanes WHERE id IN ({}) AND lease IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o \
                             WHERE o.status = 'pending' AND o.sender = outbox_lanes.sender AND o.kind = outbox_lanes.kind \
                             AND o.target = outbox_lanes.target)",
                            $crate::sql::placeholders(1, chunk.len())
                        );
                        let mut q = ::sqlx::query(&sql);
                        for id in chunk {
                            q = q.bind(*id);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    let mut claims = Vec::new();
                    if max_lanes > 0 {
                        let sql = format!(
                            "UPDATE outbox_lanes SET taken_over = CASE WHEN lease IS NULL THEN 0 ELSE 1 END, lease = $1, lease_until_ms = $2 \
                             WHERE id IN (SELECT id FROM outbox_lanes WHERE next_at_ms <= $3 \
                             AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY next_at_ms LIMIT $4{}) RETURNING id, taken_over",
                            $lock
                        );
                        let lanes = ::sqlx::query(&sql)
                            .bind(&lease)
                            .bind(now_ms + lease_ms)
                            .bind(now_ms)
                            .bind(max_lanes as i64)
                            .fetch_all(&mut *tx)
                            .await?;
                        if !lanes.is_empty() {
                            let mut by_lane = std::collections::BTreeMap::new();
                            for row in &lanes {
                                let lane: i64 = row.try_get("id")?;
                                let taken_over = row.try_get::<i64, _>("taken_over")? != 0;
                                by_lane.insert(
                                    lane,
                                    $crate::outbox::LaneClaim { lane: lane.to_string(), lease: lease.clone(), taken_over, messages: Vec::new() },
                                );
                            }
                            let sql = format!(
                                "SELECT lane, id, sender, kind, target, method, payload, event_type, created_at_ms, status, attempts, next_at_ms, \
                                 lease_until_ms, last_error FROM (SELECT l.id AS lane, {}, o.seq, \
                                 ROW_NUMBER() OVER (PARTITION BY l.id ORDER BY o.seq) AS rn \
                                 FROM outbox_lanes l JOIN outbox o ON o.sender = l.sender AND o.kind = l.kind AND o.target = l.target \
                                 AND o.status = 'pending' WHERE l.lease = $1) AS x WHERE rn <= $2 ORDER BY lane, seq",
                                $crate::sql::OUTBOX_COLUMNS
                            );
                            let rows = ::sqlx::query(&sql).bind(&lease).bind(per_lane as i64).fetch_all(&mut *tx).await?;
                            for row in &rows {
                                let lane: i64 = row.try_get("lane")?;
                                if let Some(claim) = by_lane.get_mut(&lane) {
                                    claim.messages.push($crate::sql::outbox_from_row(row)?);
                                }
                            }
                            claims = by_lane.into_values().collect();
                        }
                    }
                    tx.commit().await?;
                    Ok(claims)
                }
                .await;
                if !$restore.is_empty()
                    && let Err(e) = ::sqlx::query($restore).execute(&mut *conn).await
                {
                    // Never hand back a writer that skips the fsync.
                    conn.close_on_drop();
                    return Err(e.into());
                }
                outcome
            }

            async fn fail_message(&self, key: &str, error: &str, retry_at_ms: Option<i64>) -> Result<(), $crate::StoreError> {
                let (sender, id) = $crate::outbox::split_message_key(key);
                ::sqlx::query(
                    "UPDATE outbox SET status = $2, next_at_ms = COALESCE($3, next_at_ms), last_error = $4, attempts = attempts + 1 \
                     WHERE id = $1 AND sender = $5 AND status = 'pending'",
                )
                .bind(id)
                .bind(if retry_at_ms.is_some() { "pending" } else { "dead" })
                .bind(retry_at_ms)
                .bind(error.chars().take(4000).collect::<String>())
                .bind(sender)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<$crate::outbox::OutboxRecord>, $crate::StoreError> {
                let sql = format!(
                    "SELECT {} FROM outbox o LEFT JOIN outbox_lanes l ON l.sender = o.sender AND l.kind = o.kind AND l.target = o.target \
                     WHERE ($1 IS NULL OR o.status = $1) ORDER BY o.seq LIMIT $2",
                    $crate::sql::OUTBOX_COLUMNS
                );
                let rows = ::sqlx::query(&sql).bind(status).bind(limit.min(i64::MAX as usize) as i64).fetch_all(&self.$reader).await?;
                rows.iter().map($crate::sql::outbox_from_row).collect()
            }

            async fn retry_message(&self, id: &str, sender: Option<&str>, now_ms: i64) -> Result<u64, $crate::StoreError> {
                let mut tx = self.$writer.begin().await?;
                let mut lanes: Vec<(String, String, String)> = ::sqlx::query_as(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_at_ms = $2 \
                     WHERE id = $1 AND ($3 IS NULL OR sender = $3) AND status = 'dead' RETURNING sender, kind, target",
                )
                .bind(id)
                .bind(now_ms)
                .bind(sender)
                .fetch_all(&mut *tx)
                .await?;
                let retried = lanes.len() as u64;
                lanes.sort_unstable();
                lanes.dedup();
                for (sender, kind, target) in lanes {
                    ::sqlx::query(
                        "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms",
                    )
                    .bind(sender)
                    .bind(kind)
                    .bind(target)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(retried)
            }

            async fn purge_dead_messages(&self) -> Result<u64, $crate::StoreError> {
                Ok(::sqlx::query("DELETE FROM outbox WHERE status = 'dead'").execute(&self.$writer).await?.rows_affected())
            }

            async fn next_message_due(&self) -> Result<Option<i64>, $crate::StoreError> {
                Ok(::sqlx::query_scalar(
                    "SELECT MIN(CASE WHEN lease_until_ms IS NOT NULL AND lease_until_ms > next_at_ms THEN lease_until_ms ELSE next_at_ms END) \
                     FROM outbox_lanes",
                )
                .fetch_one(&self.$reader)
                .await?)
            }

            $($announce)*
        }
    };
}

pub(crate) use sql_outbox_store;
