//! Deployed components in SQL: version rows and the `ComponentStore` statements.

use async_trait::async_trait;

use super::{Dialect, SqlRow, SqlStore};
use crate::{ComponentStore, ComponentVersion, Manifest, StoreError};

/// Reads a `component_versions` row; the same columns in every SQL backend.
fn version_from_row<D: Dialect>(row: &SqlRow<D>) -> Result<ComponentVersion, StoreError> {
    let manifest = D::text(row, "manifest")?;
    Ok(ComponentVersion {
        actor_type: D::text(row, "actor_type")?,
        version: D::int(row, "version")? as u64,
        hash: D::text(row, "hash")?,
        size: D::int(row, "size")? as u64,
        manifest: serde_json::from_str::<Manifest>(&manifest).map_err(|e| StoreError::Corrupt(format!("manifest: {e}")))?,
        created_at_ms: D::int(row, "created_at_ms")?,
    })
}

/// Makes `version` the active version of its type.
const SET_HEAD: &str =
    "INSERT INTO component_heads (actor_type, version) VALUES ($1, $2) ON CONFLICT (actor_type) DO UPDATE SET version = excluded.version";

#[async_trait]
impl<S: SqlStore> ComponentStore for S {
    async fn add_component_version(
        &self,
        actor_type: &str,
        hash: &str,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<ComponentVersion, StoreError> {
        let mut tx = self.writer().begin().await?;
        S::Db::execute(&mut tx, "INSERT INTO component_blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[hash.into(), bytes.into()])
            .await?;
        let next = "SELECT COALESCE(MAX(version), 0) + 1 AS version FROM component_versions WHERE actor_type = $1";
        let row = S::Db::fetch_optional(&mut tx, next, &[actor_type.into()]).await?;
        let version = row.map(|r| S::Db::int(&r, "version")).transpose()?.unwrap_or(1);
        let created_at_ms = crate::now_ms();
        let manifest_json = serde_json::to_string(manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        S::Db::execute(
            &mut tx,
            "INSERT INTO component_versions (actor_type, version, hash, size, manifest, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[actor_type.into(), version.into(), hash.into(), (bytes.len() as i64).into(), manifest_json.as_str().into(), created_at_ms.into()],
        )
        .await?;
        S::Db::execute(&mut tx, SET_HEAD, &[actor_type.into(), version.into()]).await?;
        tx.commit().await?;
        Ok(ComponentVersion {
            actor_type: actor_type.to_string(),
            version: version as u64,
            hash: hash.to_string(),
            size: bytes.len() as u64,
            manifest: manifest.clone(),
            created_at_ms,
        })
    }

    async fn component_versions(&self, actor_type: &str) -> Result<Vec<ComponentVersion>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let sql = "SELECT * FROM component_versions WHERE actor_type = $1 ORDER BY version";
        S::Db::fetch_all(&mut conn, sql, &[actor_type.into()]).await?.iter().map(version_from_row::<S::Db>).collect()
    }

    async fn component_bytes(&self, actor_type: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let sql = "SELECT b.bytes FROM component_versions v JOIN component_blobs b ON b.hash = v.hash WHERE v.actor_type = $1 AND v.version = $2";
        let row = S::Db::fetch_optional(&mut conn, sql, &[actor_type.into(), (version as i64).into()]).await?;
        row.map(|r| S::Db::bytes(&r, "bytes")).transpose()
    }

    async fn set_active_version(&self, actor_type: &str, version: u64) -> Result<(), StoreError> {
        let mut conn = self.writer().acquire().await?;
        S::Db::execute(&mut conn, SET_HEAD, &[actor_type.into(), (version as i64).into()]).await?;
        Ok(())
    }

    async fn active_versions(&self) -> Result<Vec<ComponentVersion>, StoreError> {
        let mut conn = self.reader().acquire().await?;
        let sql = "SELECT v.* FROM component_heads h JOIN component_versions v ON v.actor_type = h.actor_type AND v.version = h.version \
                   ORDER BY v.actor_type";
        S::Db::fetch_all(&mut conn, sql, &[]).await?.iter().map(version_from_row::<S::Db>).collect()
    }
}
