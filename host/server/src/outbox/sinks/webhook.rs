//! A webhook sink: POST the event, retried (by the outbox) until a 2xx.

use async_trait::async_trait;

use super::Sink;

/// Longest one POST may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Webhook {
    url: String,
    http: reqwest::Client,
}

impl Webhook {
    pub(crate) fn new(url: String) -> Self {
        Webhook { url, http: reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_default() }
    }
}

#[async_trait]
impl Sink for Webhook {
    async fn send(&self, id: &str, event: &[u8]) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/cloudevents+json; charset=utf-8")
            .header("idempotency-key", id)
            .body(event.to_vec())
            .send()
            .await
            .map_err(|e| format!("webhook {}: {e}", self.url))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(format!("webhook {} answered {status}: {}", self.url, body.chars().take(200).collect::<String>()))
        }
    }
}
