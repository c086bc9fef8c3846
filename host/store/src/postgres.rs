//! The PostgreSQL store: production and multi-host.
//!
//! A turn batch is one transaction. Its rows of state, events, inbox
//! entries, messages and lanes pass as arrays through `UNNEST`, one
//! statement per table whatever the batch size.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};

use super::outbox::OutboxMessage;
use super::sql::{Arg, Dialect, LaneKey, SqlStore, bind_args, journal_batch, journal_conflict};
use super::{InboxEntry, StateStore, Store, StoreError, TurnCommit, flatten_batch};
use quark_core::id::ActorId;

/// Pool size: the committer uses one connection, activations read with the rest.
const MAX_CONNECTIONS: u32 = 8;

/// How long to wait for a connection before a turn fails with `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

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
    new_lanes: super::outbox::NewLanes,
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
        options = options.statement_cache_capacity(super::sql::STATEMENT_CACHE);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/migrations/postgres").run(&pool).await?;
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

    fn backend_name(&self) -> &'static str {
        "postgres"
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    async fn load_state(&self, actor: &ActorId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM actor_state WHERE actor = $1 ORDER BY key")
            .bind(actor.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn commit(&self, batch: &[TurnCommit]) -> Result<(), StoreError> {
        let (upserts, deletes) = flatten_batch(batch);
        let journal = journal_batch(batch)?;
        let mut tx = self.pool.begin().await?;
        // Stream heads first: a conflict fails the batch before any write.
        if !journal.created.is_empty() {
            let actors: Vec<&str> = journal.created.iter().map(|c| c.0).collect();
            let versions: Vec<i64> = journal.created.iter().map(|c| c.1).collect();
            let inserted = sqlx::query(
                "INSERT INTO journal_heads (actor, version) SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (actor) DO NOTHING",
            )
            .bind(&actors)
            .bind(&versions)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() != actors.len() as u64 {
                return Err(journal_conflict(batch));
            }
        }
        if !journal.moved.is_empty() {
            let actors: Vec<&str> = journal.moved.iter().map(|m| m.0).collect();
            let expected: Vec<i64> = journal.moved.iter().map(|m| m.1).collect();
            let new: Vec<i64> = journal.moved.iter().map(|m| m.2).collect();
            let moved = sqlx::query(
                "UPDATE journal_heads h SET version = v.new FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS v(actor, expected, new) \
                 WHERE h.actor = v.actor AND h.version = v.expected",
            )
            .bind(&actors)
            .bind(&expected)
            .bind(&new)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() != actors.len() as u64 {
                return Err(journal_conflict(batch));
            }
        }
        if !journal.events.is_empty() {
            let events = &journal.events;
            sqlx::query(
                "INSERT INTO journal (actor, actor_type, version, event_type, schema_version, data, recorded_at_ms, \
                 correlation_id, causation_id, caller, method) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bytea[], $7::bigint[], \
                 $8::text[], $9::text[], $10::text[], $11::text[])",
            )
            .bind(events.iter().map(|e| e.0).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.1).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.version as i64).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.event_type.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| i64::from(e.2.schema_version)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.data.as_slice()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.recorded_at_ms).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.correlation_id.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.causation_id.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.caller.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.2.method.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        super::sql::commit_checkpoints::<sqlx::Postgres>(&mut tx, batch).await?;
        if !upserts.is_empty() {
            let actors: Vec<&str> = upserts.iter().map(|u| u.0).collect();
            let keys: Vec<&str> = upserts.iter().map(|u| u.1).collect();
            let values: Vec<&[u8]> = upserts.iter().map(|u| u.2).collect();
            sqlx::query(
                "INSERT INTO actor_state (actor, key, value) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value",
            )
            .bind(&actors)
            .bind(&keys)
            .bind(&values)
            .execute(&mut *tx)
            .await?;
        }
        if !deletes.is_empty() {
            let actors: Vec<&str> = deletes.iter().map(|d| d.0).collect();
            let keys: Vec<&str> = deletes.iter().map(|d| d.1).collect();
            sqlx::query("DELETE FROM actor_state WHERE (actor, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))")
                .bind(&actors)
                .bind(&keys)
                .execute(&mut *tx)
                .await?;
        }
        if batch.iter().any(|c| c.inbox.is_some()) {
            super::sql::commit_inbox::<sqlx::Postgres>(&mut tx, batch).await?;
        }
        let mut opened = (Vec::new(), Vec::new());
        if batch.iter().any(|c| !c.messages.is_empty()) {
            let lease = self.new_lanes.lease_for_commit(super::now_ms(), super::outbox::LANE_LEASE_MS);
            opened = Self::commit_outbox(&mut tx, batch, lease.as_ref()).await?;
            // Delivered at commit: idle dispatchers on every host wake.
            sqlx::query("SELECT pg_notify($1, $2)").bind(&self.outbox_channel).bind(&self.instance).execute(&mut *tx).await?;
        }
        if batch.iter().any(TurnCommit::has_job_effects) {
            Self::commit_jobs(&mut tx, batch).await?;
            if batch.iter().any(|c| !c.jobs.is_empty()) {
                // Delivered when the transaction commits: idle runners on
                // every host wake within milliseconds.
                sqlx::query("SELECT pg_notify($1, '')").bind(&self.job_channel).execute(&mut *tx).await?;
            }
        }
        // COMMIT sent and no answer (the connection broke): it may have landed.
        tx.commit().await.map_err(|e| {
            let lost = !matches!(e, sqlx::Error::Database(_));
            StoreError::from(e).at_commit(lost)
        })?;
        self.new_lanes.push(opened.0, opened.1);
        Ok(())
    }
}

/// The outbox insert, without its `RETURNING` (a macro, for `concat!`).
macro_rules! insert_messages_sql {
    () => {
        "INSERT INTO outbox (id, sender, kind, target, method, payload, event_type, status, attempts, next_at_ms, created_at_ms) \
         SELECT id, sender, kind, target, method, payload, event_type, 'pending', 0, at, at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::bigint[]) \
         WITH ORDINALITY AS m(id, sender, kind, target, method, payload, event_type, at, n) ORDER BY n \
         ON CONFLICT (sender, id) DO NOTHING"
    };
}

/// The lane upsert, without its `RETURNING`.
macro_rules! upsert_lanes_sql {
    () => {
        "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms, lease, lease_until_ms) \
         SELECT sender, kind, target, at, $5::text, $6::bigint \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS l(sender, kind, target, at, n) ORDER BY n \
         ON CONFLICT (sender, kind, target) DO UPDATE SET next_at_ms = outbox_lanes.next_at_ms"
    };
}

/// The batched statements of the outbox and inbox: one statement each
/// whatever the batch size (a shape prepared once), its rows passed as
/// arrays through `UNNEST`; `WITH ORDINALITY`, so that rows go in (and take
/// their `seq`, and their locks) in the order given.
impl PostgresStore {
    /// Inserts messages, skipping (sender, id) pairs already there; with
    /// `returning`, the keys ([`OutboxMessage::key`]) it inserted.
    async fn insert_messages(
        conn: &mut sqlx::PgConnection,
        messages: &[&OutboxMessage],
        returning: bool,
    ) -> Result<HashSet<String>, StoreError> {
        let destinations: Vec<(&str, &str)> = messages.iter().map(|m| m.destination.kind_and_target()).collect();
        let sql = if returning { concat!(insert_messages_sql!(), " RETURNING sender || E'\\n' || id") } else { insert_messages_sql!() };
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

    /// Upserts `lanes` (sorted, each once), new ones under `lease`; with a
    /// lease, each lane's `id, sender, kind, target, lease` after it.
    async fn upsert_lanes(
        conn: &mut sqlx::PgConnection,
        lanes: &[LaneKey<'_>],
        lease: Option<&(String, i64)>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let sql = if lease.is_some() { concat!(upsert_lanes_sql!(), " RETURNING id, sender, kind, target, lease") } else { upsert_lanes_sql!() };
        let query = sqlx::query(sql)
            .bind(lanes.iter().map(|l| l.0).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.1).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.2).collect::<Vec<_>>())
            .bind(lanes.iter().map(|l| l.3).collect::<Vec<_>>())
            .bind(lease.map(|l| l.0.as_str()))
            .bind(lease.map(|l| l.1));
        if lease.is_none() {
            query.execute(&mut *conn).await?;
            return Ok(Vec::new());
        }
        Ok(query.fetch_all(&mut *conn).await?)
    }
}

super::sql::sql_outbox_store!(PostgresStore, ::sqlx::Postgres, writer: pool, reader: pool, lock: " FOR UPDATE SKIP LOCKED",
    lock_lanes: "SELECT id FROM outbox_lanes WHERE id IN ({}) ORDER BY sender, kind COLLATE \"C\", target FOR UPDATE",
    claim_begin: "BEGIN; SET LOCAL synchronous_commit = off", relaxed_claims: ("", ""),
    announce: {
    async fn message_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        self.listen(&self.outbox_channel, "new outbox messages", Some(self.instance.clone())).await
    }
});
super::sql::sql_job_store!(PostgresStore, ::sqlx::Postgres, writer: pool, reader: pool, index_hint: false, lock: " FOR UPDATE SKIP LOCKED",
    // A claim lost in a crash of PostgreSQL leaves its jobs due (and a turn
    // commit under a lost lease fails), and the completions it carries are
    // of effect-free runs, which may run again: no need to wait for fsync.
    // A later synchronous commit flushes it anyway (the WAL is sequential).
    claim_begin: "BEGIN; SET LOCAL synchronous_commit = off",
    announce: {
    async fn announce_jobs(&self) -> Result<(), StoreError> {
        self.notify_jobs().await
    }

    async fn job_announcements(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        self.listen_jobs().await
    }
});

impl PostgresStore {
    /// NOTIFY on the job channel.
    async fn notify_jobs(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')").bind(&self.job_channel).execute(&self.pool).await?;
        Ok(())
    }

    /// LISTEN on the job channel.
    async fn listen_jobs(&self) -> Option<futures::stream::BoxStream<'static, ()>> {
        self.listen(&self.job_channel, "new jobs", None).await
    }

    /// LISTEN on `channel`, skipping notifications whose payload is
    /// `ignore`; the listener reconnects by itself. `None` (and a warning)
    /// when it cannot: the caller polls instead.
    async fn listen(&self, channel: &str, what: &str, ignore: Option<String>) -> Option<futures::stream::BoxStream<'static, ()>> {
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

/// How the shared SQL code runs on Postgres.
#[async_trait]
impl Dialect for sqlx::Postgres {
    async fn execute(conn: &mut sqlx::PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).execute(conn).await?.rows_affected())
    }

    async fn fetch_all(conn: &mut sqlx::PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        Ok(bind_args(sqlx::query(sql), args).fetch_all(conn).await?)
    }

    async fn fetch_optional(conn: &mut sqlx::PgConnection, sql: &str, args: &[Arg<'_>]) -> Result<Option<PgRow>, StoreError> {
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

    /// Inserts inbox entries, skipping ones there already; the number inserted.
    async fn insert_inbox(conn: &mut sqlx::PgConnection, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError> {
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
        .execute(&mut *conn)
        .await?
        .rows_affected())
    }
}

impl SqlStore for PostgresStore {
    type Db = sqlx::Postgres;

    fn writer(&self) -> &sqlx::Pool<sqlx::Postgres> {
        &self.pool
    }

    fn reader(&self) -> &sqlx::Pool<sqlx::Postgres> {
        &self.pool
    }
}
