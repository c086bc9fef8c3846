//! The PostgreSQL store: production and multi-host.
//!
//! A turn batch is one transaction of two statements whatever its size:
//! upserts and deletes pass as arrays through `UNNEST`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use super::{StateStore, Store, StoreError, TurnCommit, flatten_batch};
use crate::id::ActorId;

/// Pool size: the committer uses one connection, activations read with the rest.
const MAX_CONNECTIONS: u32 = 8;

/// How long to wait for a connection before a turn fails with `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: PgPool,
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
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("src/storage/migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

impl Store for PostgresStore {
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
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await?;
        Ok(())
    }
}

super::sql::sql_component_store!(PostgresStore, writer: pool, reader: pool);
