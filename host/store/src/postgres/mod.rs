//! The PostgreSQL store: production and multi-host.
//!
//! A turn batch is one transaction. Its rows of state, events, inbox
//! entries, messages and lanes pass as arrays through `UNNEST`, one
//! statement per table whatever the batch size.

mod cluster;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, Row};

use super::outbox::{NewLanes, OutboxMessage};
use super::sql::{Arg, Dialect, EventRow, HeadMove, Lane, NewHead, News, SqlStore, StateDelete, StateUpsert, bind_args};
use super::{InboxEntry, Store, StoreError, TurnCommit};

/// Pool size: the committer uses one connection, activations read with the rest.
const MAX_CONNECTIONS: u32 = 8;

/// How long to wait for a connection before a turn fails with `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle longer than this is pinged before it is used.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// A PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// The LISTEN/NOTIFY channel that announces new jobs (one per schema).
    job_channel: String,
    /// NOTIFY channel of commits that sent outbox messages.
    outbox_channel: String,
    /// This store's NOTIFY payload: its own announcements are not news to
    /// its host (the dispatcher already has the lanes it opened).
    instance: String,
    new_lanes: NewLanes,
}

impl PostgresStore {
    /// Connects to `url` and migrates. With `schema`, everything lives in
    /// that schema (created if missing), so tests and tenants stay apart.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?;
        if let Some(schema) = schema {
            if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(StoreError::Unavailable(format!("bad schema name {schema:?}")));
            }
            let mut conn = options.connect().await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut conn).await?;
            conn.close().await?;
            options = options.options([("search_path", schema)]);
        }
        // A transaction left open by a host that stopped (SIGSTOP, a long
        // pause) must not hold its rows' locks for ever: the server ends it.
        options = options.options([("idle_in_transaction_session_timeout", "10s")]);
        options = options.statement_cache_capacity(super::sql::STATEMENT_CACHE);
        // No ping before each acquire (sqlx's default): it is a round trip
        // on the path of every commit, claim and read (+58% single enqueues,
        // +20-40% job drain here). sqlx still pings each connection when it
        // returns to the pool and closes one that fails; one that sat idle
        // (and may have been cut meanwhile: a server restart, a proxy's
        // idle timeout) is pinged before it is handed out again.
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        super::sql::migrations::migrator(super::sql::migrations::POSTGRES).await?.run(&pool).await?;
        let job_channel = format!("quark_jobs_{}", schema.unwrap_or("public"));
        let outbox_channel = format!("quark_outbox_{}", schema.unwrap_or("public"));
        Ok(PostgresStore { pool, job_channel, outbox_channel, instance: quark_core::jobs::new_lease(), new_lanes: Default::default() })
    }
}

impl Store for PostgresStore {
    fn job_store(&self) -> Option<&dyn super::jobs::JobStore> {
        Some(self)
    }

    fn outbox_store(&self) -> Option<&dyn super::outbox::OutboxStore> {
        Some(self)
    }

    fn cluster_store(&self) -> Option<&dyn super::cluster::ClusterStore> {
        Some(self)
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }
}

impl PostgresStore {
    /// LISTEN on `channel`, skipping notifications whose payload is
    /// `ignore`; the listener reconnects by itself. `None` (and a warning)
    /// when it cannot: the caller polls instead.
    async fn listen(&self, channel: &str, what: &str, ignore: Option<String>) -> Option<BoxStream<'static, ()>> {
        use futures::StreamExt;
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for {what}; polling instead");
                return None;
            }
        };
        if let Err(e) = listener.listen(channel).await {
            tracing::warn!(error = %e, "cannot LISTEN for {what}; polling instead");
            return None;
        }
        Some(
            listener
                .into_stream()
                .filter_map(move |n| {
                    let own = matches!((&n, &ignore), (Ok(n), Some(own)) if n.payload() == own);
                    futures::future::ready((!own).then_some(()))
                })
                .boxed(),
        )
    }
}

/// How the shared SQL code runs on PostgreSQL: concurrent writers, so
/// claims skip locked rows and lock lanes in commit order; batched writes
/// as one statement whatever the batch size (a shape prepared once), rows
/// passed as arrays through `UNNEST` (`WITH ORDINALITY` where order
/// matters: rows go in, take their `seq` and their locks in the order given).
#[async_trait]
impl Dialect for Postgres {
    const CLAIM_INDEX_HINTS: bool = false;
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    // A claim lost in a crash of PostgreSQL leaves its jobs due (and a turn
    // commit under a lost lease fails), and the completions it carries are
    // of effect-free runs, which may run again: no need to wait for fsync.
    // A later synchronous commit flushes it anyway (the WAL is sequential).
    const CLAIM_BEGIN: &'static str = "BEGIN; SET LOCAL synchronous_commit = off";
    const RELAXED_CLAIMS: (&'static str, &'static str) = ("", "");
    const LOCK_LANES: &'static str = "SELECT id FROM outbox_lanes WHERE id IN ({}) ORDER BY sender, kind COLLATE \"C\", target FOR UPDATE";

    async fn execute(conn: &mut PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).execute(conn).await?.rows_affected())
    }

    async fn fetch_all(conn: &mut PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_all(conn).await?)
    }

    async fn fetch_optional(conn: &mut PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<Option<PgRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_optional(conn).await?)
    }

    fn text(row: &PgRow, column: &str) -> Result<String, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn opt_text(row: &PgRow, column: &str) -> Result<Option<String>, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn int(row: &PgRow, column: &str) -> Result<i64, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn opt_int(row: &PgRow, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn bytes(row: &PgRow, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(row.try_get(column)?)
    }

    /// COMMIT sent and no answer (the connection broke): it may have landed.
    fn commit_failed(error: sqlx::Error) -> StoreError {
        let lost = !matches!(error, sqlx::Error::Database(_));
        StoreError::from(error).at_commit(lost)
    }

    async fn insert_heads(conn: &mut PgConnection, heads: &[NewHead<'_>]) -> Result<u64, StoreError> {
        let sql = "INSERT INTO journal_heads (actor, version) SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (actor) DO NOTHING";
        Ok(sqlx::query(sql)
            .bind(heads.iter().map(|h| h.actor).collect::<Vec<_>>())
            .bind(heads.iter().map(|h| h.version).collect::<Vec<_>>())
            .execute(conn)
            .await?
            .rows_affected())
    }

    async fn move_heads(conn: &mut PgConnection, moves: &[HeadMove<'_>]) -> Result<u64, StoreError> {
        let sql = "UPDATE journal_heads h SET version = v.new FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS v(actor, expected, new) \
                   WHERE h.actor = v.actor AND h.version = v.expected";
        Ok(sqlx::query(sql)
            .bind(moves.iter().map(|m| m.actor).collect::<Vec<_>>())
            .bind(moves.iter().map(|m| m.expected).collect::<Vec<_>>())
            .bind(moves.iter().map(|m| m.new).collect::<Vec<_>>())
            .execute(conn)
            .await?
            .rows_affected())
    }

    async fn insert_events(conn: &mut PgConnection, events: &[EventRow<'_>]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO journal (actor, actor_type, version, event_type, schema_version, data, recorded_at_ms, \
             correlation_id, causation_id, caller, method) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bytea[], $7::bigint[], \
             $8::text[], $9::text[], $10::text[], $11::text[])",
        )
        .bind(events.iter().map(|r| r.actor).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.actor_type).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.version as i64).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|r| i64::from(r.event.schema_version)).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.data.as_slice()).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.recorded_at_ms).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.causation_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.caller.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|r| r.event.method.as_str()).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn upsert_state(conn: &mut PgConnection, rows: &[StateUpsert<'_>]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO actor_state (actor, key, value) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[]) \
             ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value",
        )
        .bind(rows.iter().map(|u| u.actor).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.key).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.value).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn delete_state(conn: &mut PgConnection, rows: &[StateDelete<'_>]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM actor_state WHERE (actor, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))")
            .bind(rows.iter().map(|d| d.actor).collect::<Vec<_>>())
            .bind(rows.iter().map(|d| d.key).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn insert_inbox(conn: &mut PgConnection, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "INSERT INTO inbox (actor, sender, message_id, reply, at_ms) \
             SELECT * FROM UNNEST($1::text[], $5::text[], $2::text[], $3::bytea[], $4::bigint[]) \
             ON CONFLICT (actor, sender, message_id) DO NOTHING",
        )
        .bind(entries.iter().map(|e| e.0).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.1.message_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.1.reply.as_slice()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.1.at_ms).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.1.sender.as_str()).collect::<Vec<_>>())
        .execute(conn)
        .await?
        .rows_affected())
    }

    async fn insert_messages(conn: &mut PgConnection, messages: &[&OutboxMessage], returning: bool) -> Result<HashSet<String>, StoreError> {
        const INSERT: &str = "INSERT INTO outbox (id, sender, kind, target, method, payload, event_type, status, attempts, next_at_ms, created_at_ms) \
             SELECT id, sender, kind, target, method, payload, event_type, 'pending', 0, at, at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::bigint[]) \
             WITH ORDINALITY AS m(id, sender, kind, target, method, payload, event_type, at, n) ORDER BY n \
             ON CONFLICT (sender, id) DO NOTHING";
        let returning_sql;
        let sql = if returning {
            returning_sql = format!("{INSERT} RETURNING sender || E'\\n' || id");
            returning_sql.as_str()
        } else {
            INSERT
        };
        let destinations: Vec<(&str, &str)> = messages.iter().map(|m| m.destination.kind_and_target()).collect();
        let query = sqlx::query(sql)
            .bind(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.sender.as_str()).collect::<Vec<_>>())
            .bind(destinations.iter().map(|d| d.0).collect::<Vec<_>>())
            .bind(destinations.iter().map(|d| d.1).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.destination.method()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.payload.as_slice()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.event_type.as_deref()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.created_at_ms).collect::<Vec<_>>());
        if !returning {
            query.execute(&mut *conn).await?;
            return Ok(HashSet::new());
        }
        query.fetch_all(&mut *conn).await?.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    async fn upsert_lanes(conn: &mut PgConnection, lanes: &[Lane<'_>], lease: Option<&(String, i64)>) -> Result<Vec<PgRow>, StoreError> {
        const UPSERT: &str = "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms, lease, lease_until_ms) \
             SELECT sender, kind, target, at, $5::text, $6::bigint \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS l(sender, kind, target, at, n) ORDER BY n \
             ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms";
        let returning_sql;
        let sql = if lease.is_some() {
            returning_sql = format!("{UPSERT} RETURNING id, sender, kind, target, lease");
            returning_sql.as_str()
        } else {
            UPSERT
        };
        let query = sqlx::query(sql)
            .bind(lanes.iter().map(|l| l.sender).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.kind).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.target).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.due_at_ms).collect::<Vec<_>>())
            .bind(lease.map(|l| l.0.as_str()))
            .bind(lease.map(|l| l.1));
        if lease.is_none() {
            query.execute(&mut *conn).await?;
            return Ok(Vec::new());
        }
        Ok(query.fetch_all(&mut *conn).await?)
    }
}

#[async_trait]
impl SqlStore for PostgresStore {
    type Db = Postgres;

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn new_lanes(&self) -> &NewLanes {
        &self.new_lanes
    }

    /// NOTIFY, delivered when the transaction commits: idle runners and
    /// dispatchers on every host wake within milliseconds. A message
    /// notification carries this store's instance, so its own host skips
    /// it (its dispatcher already has the lanes it opened).
    async fn check_fences(&self, tx: &mut PgConnection, batch: &[TurnCommit]) -> Result<(), StoreError> {
        Self::check_fences(tx, batch).await
    }

    async fn announce_in(&self, tx: &mut PgConnection, news: News) -> Result<(), StoreError> {
        let (channel, payload) = match news {
            News::Jobs => (&self.job_channel, ""),
            News::Messages => (&self.outbox_channel, self.instance.as_str()),
        };
        sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(tx).await?;
        Ok(())
    }

    async fn announce_jobs(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')").bind(&self.job_channel).execute(&self.pool).await?;
        Ok(())
    }

    async fn job_announcements(&self) -> Option<BoxStream<'static, ()>> {
        self.listen(&self.job_channel, "new jobs", None).await
    }

    async fn message_announcements(&self) -> Option<BoxStream<'static, ()>> {
        self.listen(&self.outbox_channel, "new outbox messages", Some(self.instance.clone())).await
    }
}
