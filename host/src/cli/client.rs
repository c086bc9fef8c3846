//! The HTTP client behind `quark deploy`, `call`, `actors`, `versions`, `rollback`.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

pub(super) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub(super) fn new(server: &str, token: Option<String>) -> Self {
        Client { base: server.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the Quark host at {} (is `quark serve` running? set --server or QUARK_SERVER)", self.base))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the host's reply")?;
        let json: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())) };
        if !status.is_success() {
            let kind = json.pointer("/error/kind").and_then(Value::as_str).unwrap_or("error");
            let message = json.pointer("/error/message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| json.to_string());
            bail!("{kind} (HTTP {}): {message}", status.as_u16());
        }
        Ok(json)
    }

    pub(super) async fn deploy(&self, actor_type: &str, file: &Path, memory_limit: Option<&str>, turn_timeout: Option<&str>) -> anyhow::Result<()> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let mut query = Vec::new();
        if let Some(m) = memory_limit {
            query.push(("memory_limit", m));
        }
        if let Some(t) = turn_timeout {
            query.push(("turn_timeout", t));
        }
        let url = format!("{}/v1/components/{actor_type}", self.base);
        let reply = self.send(self.http.put(url).query(&query).body(bytes)).await?;
        let version = reply["version"].as_u64().unwrap_or(0);
        let hash = reply["hash"].as_str().unwrap_or("");
        let note = if reply["created"] == Value::Bool(false) { " (already active; nothing changed)" } else { "" };
        println!("deployed {actor_type} v{version} (sha256 {}){note}", &hash[..hash.len().min(12)]);
        Ok(())
    }

    pub(super) async fn call(&self, actor: &str, method: &str, json: Option<&str>) -> anyhow::Result<()> {
        let (actor_type, key) = actor.split_once('/').with_context(|| format!("bad actor {actor:?}: expected TYPE/KEY, e.g. counter/alice"))?;
        let body = match json {
            Some(j) => {
                serde_json::from_str::<Value>(j).with_context(|| format!("the request {j:?} is not valid JSON"))?;
                j.to_string()
            }
            None => String::new(),
        };
        let url = format!("{}/v1/actors/{actor_type}/{key}/{method}", self.base);
        let reply = self.send(self.http.post(url).header("content-type", "application/json").body(body)).await?;
        println!("{reply}");
        Ok(())
    }

    pub(super) async fn actors(&self) -> anyhow::Result<()> {
        let reply = self.send(self.http.get(format!("{}/v1/actors", self.base))).await?;
        let actors = reply["actors"].as_array().cloned().unwrap_or_default();
        println!("{:<40} {:>7} {:>12} {:>8} {:>10}", "ACTOR", "VERSION", "MEMORY", "TURNS", "IDLE");
        for a in &actors {
            println!(
                "{:<40} {:>7} {:>12} {:>8} {:>9}s",
                a["id"].as_str().unwrap_or(""),
                a["version"].as_u64().unwrap_or(0),
                bytesize::ByteSize::b(a["memory_bytes"].as_u64().unwrap_or(0)).display().iec().to_string(),
                a["turns"].as_u64().unwrap_or(0),
                a["idle_ms"].as_i64().unwrap_or(0) / 1000,
            );
        }
        println!("{} active", actors.len());
        Ok(())
    }

    pub(super) async fn versions(&self, actor_type: &str) -> anyhow::Result<()> {
        let reply = self.send(self.http.get(format!("{}/v1/components/{actor_type}/versions", self.base))).await?;
        let active = reply["active_version"].as_u64().unwrap_or(0);
        println!("  {:>7} {:<14} {:>10} {:>12} {:>8}", "VERSION", "SHA256", "SIZE", "MEMORY", "TIMEOUT");
        for v in reply["versions"].as_array().into_iter().flatten() {
            let version = v["version"].as_u64().unwrap_or(0);
            println!(
                "{} {:>7} {:<14} {:>10} {:>12} {:>7}s",
                if version == active { "*" } else { " " },
                version,
                v["hash"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
                bytesize::ByteSize::b(v["size"].as_u64().unwrap_or(0)).display().iec().to_string(),
                bytesize::ByteSize::b(v["manifest"]["memory_limit"].as_u64().unwrap_or(0)).display().iec().to_string(),
                v["manifest"]["turn_timeout"].as_u64().unwrap_or(0) as f64 / 1000.0,
            );
        }
        Ok(())
    }

    pub(super) async fn rollback(&self, actor_type: &str) -> anyhow::Result<()> {
        let reply = self.send(self.http.post(format!("{}/v1/components/{actor_type}/rollback", self.base))).await?;
        println!("{actor_type} is now at v{}", reply["active_version"]);
        Ok(())
    }
}
