//! A NATS sink: publish the event on a subject, with the message id as the
//! `Nats-Msg-Id` header (JetStream deduplicates by it), then flush.

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::Sink;

pub(crate) struct Nats {
    url: String,
    subject: String,
    client: OnceCell<async_nats::Client>,
}

impl Nats {
    pub(crate) fn new(url: String, subject: String) -> Self {
        Nats { url, subject, client: OnceCell::new() }
    }
}

#[async_trait]
impl Sink for Nats {
    async fn send(&self, id: &str, event: &[u8]) -> Result<(), String> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let options = async_nats::ConnectOptions::new().connection_timeout(std::time::Duration::from_secs(3));
                options.connect(self.url.as_str()).await.map_err(|e| format!("nats sink {}: {e}", self.url))
            })
            .await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Content-Type", "application/cloudevents+json");
        client
            .publish_with_headers(self.subject.clone(), headers, event.to_vec().into())
            .await
            .map_err(|e| format!("nats sink {} subject {}: {e}", self.url, self.subject))?;
        client.flush().await.map_err(|e| format!("nats sink {} subject {}: {e}", self.url, self.subject))
    }
}
