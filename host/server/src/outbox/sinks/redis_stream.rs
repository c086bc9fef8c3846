//! A Redis stream sink: XADD the event (fields `id`, `type`, `event`).

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::Sink;

pub(crate) struct RedisStream {
    url: String,
    stream: String,
    conn: OnceCell<ConnectionManager>,
}

impl RedisStream {
    pub(crate) fn new(url: String, stream: String) -> Self {
        RedisStream { url, stream, conn: OnceCell::new() }
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str()).map_err(|e| format!("redis sink {}: {e}", self.url))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(std::time::Duration::from_secs(3))
                    .set_response_timeout(std::time::Duration::from_secs(10))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(client, config).await.map_err(|e| format!("redis sink {}: {e}", self.url))
            })
            .await?;
        Ok(conn.clone())
    }
}

#[async_trait]
impl Sink for RedisStream {
    async fn send(&self, id: &str, event: &[u8]) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let event_type = serde_json::from_slice::<serde_json::Value>(event)
            .ok()
            .and_then(|e| e["type"].as_str().map(str::to_string))
            .unwrap_or_default();
        let _: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("type")
            .arg(event_type)
            .arg("event")
            .arg(event)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("redis sink {} stream {}: {e}", self.url, self.stream))?;
        Ok(())
    }
}
