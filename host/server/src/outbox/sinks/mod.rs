//! External sinks: where outbox messages leave Quark. Each message is sent
//! as a CloudEvents 1.0 event in structured JSON mode, at least once, with
//! the message id as the event `id` so the receiver can deduplicate.
//!
//! Sinks are named in the host's config (`--sink NAME=KIND:TARGET`):
//! - `webhook:http://host/path`: an HTTP POST, retried until a 2xx;
//! - `redis:redis://host:6379#stream`: an entry added to a Redis stream;
//! - `nats:nats://host:4222#subject`: a message published on a NATS subject.

mod nats;
mod redis_stream;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::storage::outbox::OutboxMessage;

/// A sink as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// POST to this URL.
    Webhook {
        /// The endpoint.
        url: String,
    },
    /// XADD to this stream of the Redis server at `url`.
    RedisStream {
        /// The Redis server.
        url: String,
        /// The stream's key.
        stream: String,
    },
    /// Publish on this subject of the NATS server at `url`.
    Nats {
        /// The NATS server.
        url: String,
        /// The subject.
        subject: String,
    },
}

impl std::str::FromStr for SinkConfig {
    type Err = String;

    /// `webhook:URL`, `redis:redis://host:port#stream` or `nats:nats://host:port#subject`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, target) = s.split_once(':').ok_or_else(|| format!("a sink is KIND:TARGET (webhook, redis or nats), not {s:?}"))?;
        let fragment = |what: &str| {
            target
                .split_once('#')
                .filter(|(url, name)| !url.is_empty() && !name.is_empty())
                .map(|(url, name)| (url.to_string(), name.to_string()))
                .ok_or_else(|| format!("a {kind} sink names its {what} after `#`: {kind}:URL#{what}"))
        };
        match kind {
            "webhook" if target.starts_with("http://") || target.starts_with("https://") => Ok(SinkConfig::Webhook { url: target.to_string() }),
            "webhook" => Err(format!("a webhook sink needs an http(s) URL, not {target:?}")),
            "redis" => fragment("stream").map(|(url, stream)| SinkConfig::RedisStream { url, stream }),
            "nats" => fragment("subject").map(|(url, subject)| SinkConfig::Nats { url, subject }),
            other => Err(format!("unknown sink kind {other:?}: webhook, redis or nats")),
        }
    }
}

/// Somewhere outbox messages go.
#[async_trait]
pub(crate) trait Sink: Send + Sync {
    /// Sends one CloudEvent (`event` is its JSON); Ok once the far side has it.
    async fn send(&self, id: &str, event: &[u8]) -> Result<(), String>;
}

/// The host's sinks by name; connections are opened on first use.
#[derive(Default)]
pub(crate) struct Sinks {
    by_name: HashMap<String, Arc<dyn Sink>>,
}

impl Sinks {
    pub(crate) fn new(configs: &HashMap<String, SinkConfig>) -> Self {
        let by_name = configs
            .iter()
            .map(|(name, config)| {
                let sink: Arc<dyn Sink> = match config {
                    SinkConfig::Webhook { url } => Arc::new(webhook::Webhook::new(url.clone())),
                    SinkConfig::RedisStream { url, stream } => Arc::new(redis_stream::RedisStream::new(url.clone(), stream.clone())),
                    SinkConfig::Nats { url, subject } => Arc::new(nats::Nats::new(url.clone(), subject.clone())),
                };
                (name.clone(), sink)
            })
            .collect();
        Sinks { by_name }
    }

    /// Sends `message` to the sink `name` as a CloudEvent.
    pub(crate) async fn send(&self, name: &str, message: &OutboxMessage) -> Result<(), String> {
        let sink = self.by_name.get(name).ok_or_else(|| format!("no sink named {name:?} is configured on this host"))?;
        let event = cloud_event(message);
        sink.send(&message.id, &event).await
    }
}

/// `message` as a CloudEvents 1.0 event in structured JSON mode: `data`
/// holds a JSON payload, `data_base64` any other bytes.
pub fn cloud_event(message: &OutboxMessage) -> Vec<u8> {
    let time = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(message.created_at_ms.max(0) as u64));
    let mut event = json!({
        "specversion": "1.0",
        "id": message.id,
        "source": format!("quark://actors/{}", message.sender),
        "type": message.event_type.as_deref().unwrap_or("quark.message"),
        "time": time.to_string(),
        "datacontenttype": "application/json",
    });
    match serde_json::from_slice::<Value>(&message.payload) {
        Ok(data) => event["data"] = data,
        Err(_) => {
            use base64::Engine;
            event["datacontenttype"] = json!("application/octet-stream");
            event["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&message.payload));
        }
    }
    serde_json::to_vec(&event).unwrap_or_default()
}
