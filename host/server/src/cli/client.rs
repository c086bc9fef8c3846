//! The HTTP client behind every `quark` command but `serve`.

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

    pub(super) async fn deploy(&self, actor_type: &str, file: &Path, query: &[(&str, String)]) -> anyhow::Result<()> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
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
        println!("  {:>7} {:<14} {:>10} {:>12} {:>8} {:>9} {:<9}", "VERSION", "SHA256", "SIZE", "MEMORY", "TIMEOUT", "SNAPSHOT", "RETENTION");
        for v in reply["versions"].as_array().into_iter().flatten() {
            let version = v["version"].as_u64().unwrap_or(0);
            println!(
                "{} {:>7} {:<14} {:>10} {:>12} {:>7}s {:>9} {:<9}",
                if version == active { "*" } else { " " },
                version,
                v["hash"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
                bytesize::ByteSize::b(v["size"].as_u64().unwrap_or(0)).display().iec().to_string(),
                bytesize::ByteSize::b(v["manifest"]["memory_limit"].as_u64().unwrap_or(0)).display().iec().to_string(),
                v["manifest"]["turn_timeout"].as_u64().unwrap_or(0) as f64 / 1000.0,
                v["manifest"]["snapshot_every"].as_u64().map(|n| n.to_string()).unwrap_or_default(),
                v["manifest"]["retention"].as_str().unwrap_or(""),
            );
        }
        Ok(())
    }

    pub(super) async fn rollback(&self, actor_type: &str) -> anyhow::Result<()> {
        let reply = self.send(self.http.post(format!("{}/v1/components/{actor_type}/rollback", self.base))).await?;
        println!("{actor_type} is now at v{}", reply["active_version"]);
        Ok(())
    }

    fn actor_url(&self, actor: &str, what: &str) -> anyhow::Result<String> {
        let (actor_type, key) = actor.split_once('/').with_context(|| format!("bad actor {actor:?}: expected TYPE/KEY, e.g. bank/alice"))?;
        Ok(format!("{}/v1/actors/{actor_type}/{key}/{what}", self.base))
    }

    pub(super) async fn journal(&self, actor: &str, from: Option<u64>, to: Option<u64>, limit: Option<usize>, json: bool) -> anyhow::Result<()> {
        let mut query = Vec::new();
        query.extend(from.map(|v| ("from", v.to_string())));
        query.extend(to.map(|v| ("to", v.to_string())));
        query.extend(limit.map(|v| ("limit", v.to_string())));
        let reply = self.send(self.http.get(self.actor_url(actor, "journal")?).query(&query)).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            return Ok(());
        }
        let events = reply["events"].as_array().cloned().unwrap_or_default();
        println!(
            "{:>7}  {:<24} {:<16} {:>6}  {:<16} {:<22} {:<20} {:<12} DATA",
            "VERSION", "TIME (UTC)", "TYPE", "SCHEMA", "CORRELATION", "CAUSATION", "CALLER", "METHOD"
        );
        for e in &events {
            let time = time_of(&e["recorded_at_ms"]);
            println!(
                "{:>7}  {:<24} {:<16} {:>6}  {:<16} {:<22} {:<20} {:<12} {}",
                e["version"].as_u64().unwrap_or(0),
                time,
                e["event_type"].as_str().unwrap_or(""),
                e["schema_version"].as_u64().unwrap_or(0),
                e["correlation_id"].as_str().unwrap_or(""),
                e["causation_id"].as_str().unwrap_or(""),
                e["caller"].as_str().unwrap_or("(external)"),
                e["method"].as_str().unwrap_or(""),
                e["data"],
            );
        }
        println!("{}: version {}, {} event(s) shown", reply["actor"].as_str().unwrap_or(actor), reply["version"], events.len());
        Ok(())
    }

    pub(super) async fn replay(&self, actor: &str, to_version: Option<u64>, at: Option<&str>, component_version: Option<u64>) -> anyhow::Result<()> {
        let mut query = Vec::new();
        query.extend(to_version.map(|v| ("to_version", v.to_string())));
        query.extend(at.map(|v| ("at", v.to_string())));
        query.extend(component_version.map(|v| ("component_version", v.to_string())));
        let reply = self.send(self.http.get(self.actor_url(actor, "replay")?).query(&query)).await?;
        eprintln!(
            "{} at version {} (component v{}, from snapshot {}):",
            reply["actor"].as_str().unwrap_or(actor),
            reply["version"],
            reply["component_version"],
            reply["from_snapshot"]
        );
        println!("{}", serde_json::to_string_pretty(&reply["state"])?);
        Ok(())
    }

    pub(super) async fn snapshot(&self, actor: &str) -> anyhow::Result<()> {
        let (actor_type, key) = actor.split_once('/').with_context(|| format!("bad actor {actor:?}: expected TYPE/KEY"))?;
        let reply = self.send(self.http.post(format!("{}/v1/snapshots/{actor_type}/{key}", self.base))).await?;
        println!("snapshot of {actor} at version {}", reply["version"]);
        Ok(())
    }

    pub(super) async fn projections(&self) -> anyhow::Result<()> {
        let reply = self.send(self.http.get(format!("{}/v1/projections", self.base))).await?;
        println!("{:<24} {:<12} {:<28} {:<12} {:>10} {:>8}  LAST ERROR", "NAME", "SOURCE", "TARGET", "METHOD", "CHECKPOINT", "LAG");
        for p in reply["projections"].as_array().into_iter().flatten() {
            println!(
                "{:<24} {:<12} {:<28} {:<12} {:>10} {:>8}  {}",
                p["name"].as_str().unwrap_or(""),
                p["source_type"].as_str().unwrap_or(""),
                p["target"].as_str().unwrap_or(""),
                p["method"].as_str().unwrap_or(""),
                p["checkpoint"].as_u64().unwrap_or(0),
                p["lag"].as_u64().unwrap_or(0),
                p["last_error"].as_str().unwrap_or("-"),
            );
        }
        Ok(())
    }

    pub(super) async fn add_projection(&self, name: &str, source: &str, target: &str, method: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "name": name, "source": source, "target": target, "method": method });
        let reply = self.send(self.http.post(format!("{}/v1/projections", self.base)).json(&body)).await?;
        println!("projection {name}: {source} -> {target} `{method}` (lag {})", reply["lag"]);
        Ok(())
    }

    pub(super) async fn remove_projection(&self, name: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(format!("{}/v1/projections/{name}", self.base))).await?;
        println!("projection {name} removed");
        Ok(())
    }

    pub(super) async fn jobs(&self, status: Option<&str>, target: Option<&str>) -> anyhow::Result<()> {
        let mut query = Vec::new();
        query.extend(status.map(|s| ("status", s)));
        query.extend(target.map(|t| ("target", t)));
        let reply = self.send(self.http.get(format!("{}/v1/jobs", self.base)).query(&query)).await?;
        println!("{:<40} {:<10} {:<24} {:<14} {:>8} {:<24} {:<16}", "ID", "STATUS", "TARGET", "METHOD", "ATTEMPTS", "RUN AT (UTC)", "CRON");
        let jobs = reply["jobs"].as_array().cloned().unwrap_or_default();
        for j in &jobs {
            println!(
                "{:<40} {:<10} {:<24} {:<14} {:>8} {:<24} {:<16}",
                j["id"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or(""),
                j["target"].as_str().unwrap_or(""),
                j["method"].as_str().unwrap_or(""),
                format!("{}/{}", j["attempts"], j["max_attempts"]),
                time_of(&j["run_at_ms"]),
                j["cron"].as_str().unwrap_or("-"),
            );
        }
        println!("{} job(s)", jobs.len());
        Ok(())
    }

    pub(super) async fn add_job(&self, body: &Value) -> anyhow::Result<()> {
        let job = self.send(self.http.post(format!("{}/v1/jobs", self.base)).json(body)).await?;
        let what = if job["created"] == Value::Bool(false) { "exists already (same --key): not added again;" } else { "added:" };
        println!(
            "job {} {what} {} for {} `{}`, runs at {}",
            job["id"].as_str().unwrap_or(""),
            job["status"].as_str().unwrap_or(""),
            job["target"].as_str().unwrap_or(""),
            job["method"].as_str().unwrap_or(""),
            time_of(&job["run_at_ms"])
        );
        Ok(())
    }

    pub(super) async fn show_job(&self, id: &str) -> anyhow::Result<()> {
        let job = self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base))).await?;
        println!("{}", serde_json::to_string_pretty(&with_readable_times(job))?);
        Ok(())
    }

    pub(super) async fn job_action(&self, id: &str, action: &str) -> anyhow::Result<()> {
        let job = self.send(self.http.post(format!("{}/v1/jobs/{id}/{action}", self.base))).await?;
        println!("job {id}: {} (attempts {}/{})", job["status"].as_str().unwrap_or(""), job["attempts"], job["max_attempts"]);
        Ok(())
    }

    pub(super) async fn purge_jobs(&self, status: &str) -> anyhow::Result<()> {
        let reply = self.send(self.http.delete(format!("{}/v1/jobs", self.base)).query(&[("status", status)])).await?;
        println!("purged {} {status} job(s)", reply["purged"]);
        Ok(())
    }
}

impl Client {
    pub(super) async fn outbox(&self, status: Option<&str>) -> anyhow::Result<()> {
        let query: Vec<(&str, &str)> = status.map(|s| ("status", s)).into_iter().collect();
        let reply = self.send(self.http.get(format!("{}/v1/outbox", self.base)).query(&query)).await?;
        println!("{:<34} {:<10} {:<20} {:<28} {:>8} {:<24} LAST ERROR", "ID", "STATUS", "SENDER", "TO", "ATTEMPTS", "DUE (UTC)");
        let messages = reply["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            let to = match m["destination"]["kind"].as_str() {
                Some("actor") => format!("{}.{}", m["destination"]["actor"].as_str().unwrap_or(""), m["destination"]["method"].as_str().unwrap_or("")),
                _ => format!("sink {}", m["destination"]["name"].as_str().unwrap_or("")),
            };
            let status = match (m["status"].as_str().unwrap_or(""), m["lease_until_ms"].is_number()) {
                ("pending", true) => "in-flight",
                (s, _) => s,
            };
            println!(
                "{:<34} {:<10} {:<20} {:<28} {:>8} {:<24} {}",
                m["id"].as_str().unwrap_or(""),
                status,
                m["sender"].as_str().unwrap_or(""),
                to,
                m["attempts"],
                time_of(&m["next_at_ms"]),
                m["last_error"].as_str().unwrap_or("-"),
            );
        }
        println!("{} message(s)", messages.len());
        Ok(())
    }

    pub(super) async fn retry_message(&self, id: &str, sender: Option<&str>) -> anyhow::Result<()> {
        let mut request = self.http.post(format!("{}/v1/outbox/{id}/retry", self.base));
        if let Some(sender) = sender {
            request = request.query(&[("sender", sender)]);
        }
        let reply = self.send(request).await?;
        println!("message {id}: pending again ({} message(s))", reply["retried"]);
        Ok(())
    }

    pub(super) async fn purge_messages(&self) -> anyhow::Result<()> {
        let reply = self.send(self.http.delete(format!("{}/v1/outbox", self.base)).query(&[("status", "dead")])).await?;
        println!("purged {} dead message(s)", reply["purged"]);
        Ok(())
    }
}

/// An RFC 3339 time for a ms-since-epoch JSON number.
/// `x_at_ms: 1764500000000` fields as `x_at: "2025-11-30T10:53:20.000Z"`,
/// at any depth, as `quark jobs` prints times.
fn with_readable_times(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| match key.strip_suffix("_ms") {
                    Some(name) if name.ends_with("_at") || name == "at" => {
                        let readable = if value.is_null() { Value::Null } else { Value::String(time_of(&value)) };
                        (name.to_string(), readable)
                    }
                    _ => (key, with_readable_times(value)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(with_readable_times).collect()),
        other => other,
    }
}

fn time_of(ms: &Value) -> String {
    let ms = ms.as_i64().unwrap_or(0).max(0) as u64;
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}
