//! Deployed components in SQL: version rows and the `ComponentStore` statements.

use crate::{ComponentVersion, Manifest, StoreError};

/// Reads a `component_versions` row; the same columns in every SQL backend.
pub(crate) fn version_from_row<R>(row: &R) -> Result<ComponentVersion, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let manifest: String = row.try_get("manifest")?;
    Ok(ComponentVersion {
        actor_type: row.try_get("actor_type")?,
        version: row.try_get::<i64, _>("version")? as u64,
        hash: row.try_get("hash")?,
        size: row.try_get::<i64, _>("size")? as u64,
        manifest: serde_json::from_str::<Manifest>(&manifest).map_err(|e| StoreError::Corrupt(format!("manifest: {e}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// Implements `ComponentStore` for a SQL store whose pools are the fields
/// `writer` (transactions) and `reader` (queries).
macro_rules! sql_component_store {
    ($store:ty, writer: $writer:ident, reader: $reader:ident) => {
        #[async_trait::async_trait]
        impl $crate::ComponentStore for $store {
            async fn add_component_version(
                &self,
                actor_type: &str,
                hash: &str,
                bytes: &[u8],
                manifest: &$crate::Manifest,
            ) -> Result<$crate::ComponentVersion, $crate::StoreError> {
                let mut tx = self.$writer.begin().await?;
                ::sqlx::query("INSERT INTO component_blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(hash)
                    .bind(bytes)
                    .execute(&mut *tx)
                    .await?;
                let version: i64 =
                    ::sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM component_versions WHERE actor_type = $1")
                        .bind(actor_type)
                        .fetch_one(&mut *tx)
                        .await?;
                let created_at_ms = $crate::now_ms();
                let manifest_json = ::serde_json::to_string(manifest).map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
                ::sqlx::query(
                    "INSERT INTO component_versions (actor_type, version, hash, size, manifest, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(actor_type)
                .bind(version)
                .bind(hash)
                .bind(bytes.len() as i64)
                .bind(&manifest_json)
                .bind(created_at_ms)
                .execute(&mut *tx)
                .await?;
                ::sqlx::query(
                    "INSERT INTO component_heads (actor_type, version) VALUES ($1, $2) ON CONFLICT (actor_type) DO UPDATE SET version = excluded.version",
                )
                .bind(actor_type)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok($crate::ComponentVersion {
                    actor_type: actor_type.to_string(),
                    version: version as u64,
                    hash: hash.to_string(),
                    size: bytes.len() as u64,
                    manifest: manifest.clone(),
                    created_at_ms,
                })
            }

            async fn component_versions(&self, actor_type: &str) -> Result<Vec<$crate::ComponentVersion>, $crate::StoreError> {
                let rows = ::sqlx::query("SELECT * FROM component_versions WHERE actor_type = $1 ORDER BY version")
                    .bind(actor_type)
                    .fetch_all(&self.$reader)
                    .await?;
                rows.iter().map($crate::sql::version_from_row).collect()
            }

            async fn component_bytes(&self, actor_type: &str, version: u64) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                Ok(::sqlx::query_scalar(
                    "SELECT b.bytes FROM component_versions v JOIN component_blobs b ON b.hash = v.hash WHERE v.actor_type = $1 AND v.version = $2",
                )
                .bind(actor_type)
                .bind(version as i64)
                .fetch_optional(&self.$reader)
                .await?)
            }

            async fn set_active_version(&self, actor_type: &str, version: u64) -> Result<(), $crate::StoreError> {
                ::sqlx::query(
                    "INSERT INTO component_heads (actor_type, version) VALUES ($1, $2) ON CONFLICT (actor_type) DO UPDATE SET version = excluded.version",
                )
                .bind(actor_type)
                .bind(version as i64)
                .execute(&self.$writer)
                .await?;
                Ok(())
            }

            async fn active_versions(&self) -> Result<Vec<$crate::ComponentVersion>, $crate::StoreError> {
                let rows = ::sqlx::query(
                    "SELECT v.* FROM component_heads h JOIN component_versions v ON v.actor_type = h.actor_type AND v.version = h.version ORDER BY v.actor_type",
                )
                .fetch_all(&self.$reader)
                .await?;
                rows.iter().map($crate::sql::version_from_row).collect()
            }
        }
    };
}

pub(crate) use sql_component_store;
