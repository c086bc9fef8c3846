//! The inbox and the outbox in SQL: inbox entries written with the turn,
//! messages in lanes, claims, failures and retries.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::stream::BoxStream;
use quark_core::id::ActorId;

use super::{Arg, Conn, Dialect, SqlRow, SqlStore, param_pairs, params, placeholders, pow2_chunks};
use crate::outbox::{Destination, LaneClaim, LaneRelease, OutboxMessage, OutboxRecord, OutboxStore, split_message_key};
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
const OUTBOX_COLUMNS: &str = "o.id, o.sender, o.kind, o.target, o.method, o.payload, o.event_type, o.created_at_ms, \
     o.status, o.attempts, o.next_at_ms, l.lease_until_ms, o.last_error";

/// Reads an outbox row selected with [`OUTBOX_COLUMNS`].
fn outbox_from_row<D: Dialect>(row: &SqlRow<D>) -> Result<OutboxRecord, StoreError> {
    let kind = D::text(row, "kind")?;
    let target = D::text(row, "target")?;
    let destination = match kind.as_str() {
        "actor" => Destination::Actor { actor: target, method: D::opt_text(row, "method")?.unwrap_or_default() },
        "sink" => Destination::Sink { name: target },
        other => return Err(StoreError::Corrupt(format!("outbox row: unknown kind {other:?}"))),
    };
    Ok(OutboxRecord {
        message: OutboxMessage {
            id: D::text(row, "id")?,
            sender: D::text(row, "sender")?,
            destination,
            payload: D::bytes(row, "payload")?,
            event_type: D::opt_text(row, "event_type")?,
            created_at_ms: D::int(row, "created_at_ms")?,
        },
        status: D::text(row, "status")?,
        attempts: D::int(row, "attempts")? as u32,
        next_at_ms: D::int(row, "next_at_ms")?,
        lease_until_ms: D::opt_int(row, "lease_until_ms")?,
        last_error: D::opt_text(row, "last_error")?,
    })
}

/// A lane as a commit upserts it: its key and when its first message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Lane<'a> {
    pub(crate) sender: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) target: &'a str,
    pub(crate) due_at_ms: i64,
}

impl Lane<'_> {
    fn key(&self) -> (&str, &str, &str) {
        (self.sender, self.kind, self.target)
    }
}

/// What a commit's messages did to their lanes: lanes it created (leased
/// to this host, to be delivered without a claim), and messages it added
/// to lanes that existed (with each lane's lease then, empty if none).
pub(crate) type OpenedLanes = (Vec<LaneClaim>, Vec<LaneClaim>);

/// Inserts a batch's messages and opens their lanes inside the batch's
/// transaction (a message id sent before is not sent again). With `lease`
/// (token, expiry), a lane this commit creates is leased to this host at
/// once and returned with the messages inserted into it; so are the
/// messages added to lanes that existed.
pub(crate) async fn commit_outbox<D: Dialect>(
    tx: &mut Conn<D>,
    batch: &[TurnCommit],
    lease: Option<&(String, i64)>,
) -> Result<OpenedLanes, StoreError> {
    let messages: Vec<&OutboxMessage> = batch.iter().flat_map(|c| c.messages.iter()).collect();
    let mut inserted = D::insert_messages(tx, &messages, lease.is_some()).await?;
    // Each lane once per statement (PostgreSQL refuses to upsert a row
    // twice in one), sorted: claims lock the lanes they release in this
    // order too. The no-op update, rather than DO NOTHING, waits for a
    // concurrent release deleting the lane, then inserts it again: a
    // message never lands in no lane.
    let mut lanes: Vec<Lane> = messages
        .iter()
        .map(|m| {
            let (kind, target) = m.destination.kind_and_target();
            Lane { sender: m.sender.as_str(), kind, target, due_at_ms: m.created_at_ms }
        })
        .collect();
    lanes.sort_unstable();
    lanes.dedup_by(|a, b| a.key() == b.key());
    let Some((token, until)) = lease else {
        D::upsert_lanes(tx, &lanes, None).await?;
        return Ok((Vec::new(), Vec::new()));
    };
    let lane_index = |key: (&str, &str, &str)| lanes.binary_search_by(|l| l.key().cmp(&key)).ok();
    // Each of `lanes`: its id, and the lease it had if it existed (None
    // when this commit created it). An existing lane keeps its lease (or
    // none): only lanes this statement created carry this commit's token.
    let mut opened: Vec<Option<(i64, Option<String>)>> = vec![None; lanes.len()];
    for row in D::upsert_lanes(tx, &lanes, lease).await? {
        let held = D::opt_text(&row, "lease")?;
        let created = held.as_deref() == Some(token.as_str());
        let (sender, kind, target) = (D::text(&row, "sender")?, D::text(&row, "kind")?, D::text(&row, "target")?);
        if let Some(i) = lane_index((&sender, &kind, &target)) {
            let lease_before = (!created).then(|| held.unwrap_or_default());
            opened[i] = Some((D::int(&row, "id")?, lease_before));
        }
    }
    // Per lane: whether this commit created it, and its claim.
    let mut claims: BTreeMap<i64, (bool, LaneClaim)> = BTreeMap::new();
    for m in messages {
        let (kind, target) = m.destination.kind_and_target();
        let Some((lane, lease_before)) = lane_index((&m.sender, kind, target)).and_then(|i| opened[i].as_ref()) else { continue };
        let (_, claim) = claims.entry(*lane).or_insert_with(|| {
            let claim = LaneClaim {
                lane: lane.to_string(),
                lease: lease_before.clone().unwrap_or_else(|| token.clone()),
                taken_over: false,
                messages: Vec::new(),
            };
            (lease_before.is_none(), claim)
        });
        if inserted.remove(&m.key()) {
            claim.messages.push(OutboxRecord {
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

/// Inside a claim's transaction: deletes the messages `delivered`, and
/// hands back the lanes `released` (due now, or at their retry), deleting
/// those left empty.
async fn settle_lanes<D: Dialect>(tx: &mut Conn<D>, now_ms: i64, delivered: &[String], released: &[LaneRelease]) -> Result<(), StoreError> {
    for chunk in pow2_chunks(delivered, 256) {
        let sql = format!("DELETE FROM outbox WHERE (sender, id) IN (VALUES {})", param_pairs::<D>(1, chunk.len()));
        let args: Vec<Arg> = chunk.iter().flat_map(|key| {
            let (sender, id) = split_message_key(key);
            [Arg::from(sender), Arg::from(id)]
        }).collect();
        D::execute(tx, &sql, &args).await?;
    }
    // A commit that sends messages upserts their lanes sorted by (sender,
    // kind, target): lock the lanes released here in that order first, in
    // one statement, so neither waits for the other in a cycle. (Both
    // touch outbox rows before lanes.)
    let ids: Vec<i64> = released.iter().filter_map(|r| r.lane.parse().ok()).collect();
    if !D::LOCK_LANES.is_empty() && !ids.is_empty() {
        let sql = D::LOCK_LANES.replace("{}", &placeholders(1, ids.len()));
        let args: Vec<Arg> = ids.iter().map(|id| Arg::from(*id)).collect();
        D::execute(tx, &sql, &args).await?;
    }
    // Released lanes: due now in one statement per chunk, those waiting
    // for a retry one by one; then the empty ones go.
    let lane_ids: Vec<i64> = released.iter().map(|r| r.lane.parse::<i64>().unwrap_or(-1)).collect();
    let (now_due, later): (Vec<_>, Vec<_>) = released.iter().zip(&lane_ids).partition(|(r, _)| r.next_at_ms.is_none());
    for chunk in pow2_chunks(&now_due, 128) {
        let sql = format!(
            "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = {} WHERE (id, lease) IN (VALUES {})",
            D::param(1),
            param_pairs::<D>(2, chunk.len())
        );
        let mut args: Vec<Arg> = vec![now_ms.into()];
        for (r, id) in chunk {
            args.extend([Arg::from(**id), Arg::from(&r.lease)]);
        }
        D::execute(tx, &sql, &args).await?;
    }
    for (r, id) in later {
        let sql = "UPDATE outbox_lanes SET lease = NULL, lease_until_ms = NULL, taken_over = 0, next_at_ms = $1 WHERE id = $2 AND lease = $3";
        D::execute(tx, sql, &[r.next_at_ms.into(), (*id).into(), (&r.lease).into()]).await?;
    }
    for chunk in pow2_chunks(&ids, 256) {
        let sql = format!(
            "DELETE FROM outbox_lanes WHERE id IN ({}) AND lease IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o \
             WHERE o.status = 'pending' AND o.sender = outbox_lanes.sender AND o.kind = outbox_lanes.kind \
             AND o.target = outbox_lanes.target)",
            params::<D>(1, chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|id| Arg::from(*id)).collect();
        D::execute(tx, &sql, &args).await?;
    }
    Ok(())
}

/// Inside a claim's transaction: leases up to `max_lanes` due lanes (free
/// or with a lapsed lease) and reads up to `per_lane` pending messages of
/// each, in order.
async fn lease_lanes<D: Dialect>(
    tx: &mut Conn<D>,
    lease: &str,
    now_ms: i64,
    max_lanes: usize,
    per_lane: usize,
    lease_ms: i64,
) -> Result<Vec<LaneClaim>, StoreError> {
    let sql = format!(
        "UPDATE outbox_lanes SET taken_over = CASE WHEN lease IS NULL THEN 0 ELSE 1 END, lease = $1, lease_until_ms = $2 \
         WHERE id IN (SELECT id FROM outbox_lanes WHERE next_at_ms <= $3 \
         AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY next_at_ms LIMIT $4{}) RETURNING id, taken_over",
        D::SKIP_LOCKED
    );
    let lanes = D::fetch_all(tx, &sql, &[lease.into(), (now_ms + lease_ms).into(), now_ms.into(), (max_lanes as i64).into()]).await?;
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let mut by_lane = BTreeMap::new();
    for row in &lanes {
        let lane = D::int(row, "id")?;
        let taken_over = D::int(row, "taken_over")? != 0;
        by_lane.insert(lane, LaneClaim { lane: lane.to_string(), lease: lease.to_string(), taken_over, messages: Vec::new() });
    }
    let sql = format!(
        "SELECT lane, id, sender, kind, target, method, payload, event_type, created_at_ms, status, attempts, next_at_ms, \
         lease_until_ms, last_error FROM (SELECT l.id AS lane, {OUTBOX_COLUMNS}, o.seq, \
         ROW_NUMBER() OVER (PARTITION BY l.id ORDER BY o.seq) AS rn \
         FROM outbox_lanes l JOIN outbox o ON o.sender = l.sender AND o.kind = l.kind AND o.target = l.target \
         AND o.status = 'pending' WHERE l.lease = $1) AS x WHERE rn <= $2 ORDER BY lane, seq"
    );
    for row in &D::fetch_all(tx, &sql, &[lease.into(), (per_lane as i64).into()]).await? {
        if let Some(claim) = by_lane.get_mut(&D::int(row, "lane")?) {
            claim.messages.push(outbox_from_row::<D>(row)?);
        }
    }
    Ok(by_lane.into_values().collect())
}

#[async_trait]
impl<S: SqlStore> OutboxStore for S {
    fn deliver_new_lanes_here(&self) -> bool {
        self.new_lanes().enable();
        true
    }

    fn take_new_lanes(&self) -> (Vec<LaneClaim>, Vec<LaneClaim>) {
        self.new_lanes().take()
    }

    /// A claim only moves delivery bookkeeping: it need not wait for the
    /// disk ([`Dialect::CLAIM_BEGIN`], [`Dialect::RELAXED_CLAIMS`]). A
    /// claim lost to an OS crash only redelivers messages the inbox
    /// recognises, or leaves a lease to expire.
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
        let (relax, restore) = S::Db::RELAXED_CLAIMS;
        let mut conn = self.writer().acquire().await?;
        if !relax.is_empty() {
            S::Db::execute(&mut conn, relax, &[]).await?;
        }
        let outcome: Result<_, StoreError> = async {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, S::Db::CLAIM_BEGIN).await?;
            settle_lanes::<S::Db>(&mut tx, now_ms, delivered, released).await?;
            let claims = if max_lanes > 0 { lease_lanes::<S::Db>(&mut tx, &lease, now_ms, max_lanes, per_lane, lease_ms).await? } else { Vec::new() };
            tx.commit().await?;
            Ok(claims)
        }
        .await;
        if !restore.is_empty()
            && let Err(e) = S::Db::execute(&mut conn, restore, &[]).await
        {
            // Never hand back a writer that skips the fsync.
            conn.close_on_drop();
            return Err(e);
        }
        outcome
    }

    async fn fail_message(&self, key: &str, error: &str, retry_at_ms: Option<i64>) -> Result<(), StoreError> {
        let (sender, id) = split_message_key(key);
        let sql = "UPDATE outbox SET status = $2, next_at_ms = COALESCE($3, next_at_ms), last_error = $4, attempts = attempts + 1 \
                   WHERE id = $1 AND sender = $5 AND status = 'pending'";
        let error: String = error.chars().take(4000).collect();
        let status = if retry_at_ms.is_some() { "pending" } else { "dead" };
        let mut conn = self.writer().acquire().await?;
        S::Db::execute(&mut conn, sql, &[id.into(), status.into(), retry_at_ms.into(), (&error).into(), sender.into()]).await?;
        Ok(())
    }

    async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o LEFT JOIN outbox_lanes l ON l.sender = o.sender AND l.kind = o.kind AND l.target = o.target \
             WHERE ($1 IS NULL OR o.status = $1) ORDER BY o.seq LIMIT $2"
        );
        let mut conn = self.reader().acquire().await?;
        let rows = S::Db::fetch_all(&mut conn, &sql, &[status.into(), (limit.min(i64::MAX as usize) as i64).into()]).await?;
        rows.iter().map(outbox_from_row::<S::Db>).collect()
    }

    async fn retry_message(&self, id: &str, sender: Option<&str>, now_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let sql = "UPDATE outbox SET status = 'pending', attempts = 0, next_at_ms = $2 \
                   WHERE id = $1 AND ($3 IS NULL OR sender = $3) AND status = 'dead' RETURNING sender, kind, target";
        let rows = S::Db::fetch_all(&mut tx, sql, &[id.into(), now_ms.into(), sender.into()]).await?;
        let mut lanes = rows
            .iter()
            .map(|r| Ok((S::Db::text(r, "sender")?, S::Db::text(r, "kind")?, S::Db::text(r, "target")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let retried = lanes.len() as u64;
        lanes.sort_unstable();
        lanes.dedup();
        for (sender, kind, target) in &lanes {
            let sql = "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms) VALUES ($1, $2, $3, $4) \
                       ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms";
            S::Db::execute(&mut tx, sql, &[sender.into(), kind.into(), target.into(), now_ms.into()]).await?;
        }
        tx.commit().await?;
        Ok(retried)
    }

    async fn purge_dead_messages(&self) -> Result<u64, StoreError> {
        let mut conn = self.writer().acquire().await?;
        S::Db::execute(&mut conn, "DELETE FROM outbox WHERE status = 'dead'", &[]).await
    }

    async fn next_message_due(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MIN(CASE WHEN lease_until_ms IS NOT NULL AND lease_until_ms > next_at_ms THEN lease_until_ms ELSE next_at_ms END) \
                   AS due FROM outbox_lanes";
        let mut conn = self.reader().acquire().await?;
        match S::Db::fetch_optional(&mut conn, sql, &[]).await? {
            Some(row) => S::Db::opt_int(&row, "due"),
            None => Ok(None),
        }
    }

    async fn message_announcements(&self) -> Option<BoxStream<'static, ()>> {
        SqlStore::message_announcements(self).await
    }
}
