//! The HTTP client behind every `quark` command but `serve`.

use std::path::Path;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::types::{
    ActorList, ClusterView, DeployOutcome, JobAdded, JobList, JournalPage, MessageList, MessageRetried, NewProjection, ProjectionInfo, ProjectionList,
    Purged, ReplayOutcome, RolledBack, SnapshotTaken, VersionList,
};
use crate::storage::jobs::JobRecord;
use crate::storage::outbox::Destination;

pub(super) struct Client {
    pub(super) base: String,
    token: Option<String>,
    pub(super) http: reqwest::Client,
}

impl Client {
    pub(super) fn new(server: &str, token: Option<String>) -> Self {
        Client { base: server.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() }
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
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

    /// [`Client::send`], read as the API's body type `T`.
    async fn send_as<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let json = self.send(request).await?;
        serde_json::from_value(json).with_context(|| {
            format!("the host's reply is not a {}: is it running the same version of quark?", std::any::type_name::<T>())
        })
    }

    pub(super) async fn deploy(&self, actor_type: &str, file: &Path, query: &[(&str, String)]) -> anyhow::Result<()> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let url = format!("{}/v1/components/{actor_type}", self.base);
        let reply: DeployOutcome = self.send_as(self.http.put(url).query(&query).body(bytes)).await?;
        let hash = &reply.version.hash;
        let note = if reply.created { "" } else { " (already active; nothing changed)" };
        println!("deployed {actor_type} v{} (sha256 {}){note}", reply.version.version, &hash[..hash.len().min(12)]);
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
        let ActorList { actors } = self.send_as(self.http.get(format!("{}/v1/actors", self.base))).await?;
        println!("{:<40} {:>7} {:>12} {:>8} {:>10}", "ACTOR", "VERSION", "MEMORY", "TURNS", "IDLE");
        for a in &actors {
            println!(
                "{:<40} {:>7} {:>12} {:>8} {:>9}s",
                a.id,
                a.version,
                bytesize::ByteSize::b(a.memory_bytes).display().iec().to_string(),
                a.turns,
                a.idle_ms / 1000,
            );
        }
        println!("{} active", actors.len());
        Ok(())
    }

    pub(super) async fn cluster_graph(&self) -> anyhow::Result<()> {
        let graph: crate::cluster::locality::GraphView = self.send_as(self.http.get(format!("{}/v1/cluster/graph", self.base))).await?;
        let percent = |f: f64| format!("{:.1}%", f * 100.0);
        println!("remote calls: {} of the last window's actor-to-actor calls crossed hosts", percent(graph.remote_fraction));
        println!("{:<24} {:>8} {:>10}", "HOST", "REMOTE", "CALLS");
        for h in &graph.hosts {
            println!("{:<24} {:>8} {:>10}", h.id, percent(h.remote_fraction), h.calls);
        }
        println!("{:<40} {:<40} {:>9} {:>6}", "FROM", "TO", "CALLS/S", "REMOTE");
        for e in &graph.edges {
            println!("{:<40} {:<40} {:>9.1} {:>6}", e.from, e.to, e.calls_per_s, if e.remote { "yes" } else { "no" });
        }
        if graph.exchanges.is_empty() {
            println!("no exchanges yet (they need `quark serve --repartition`)");
        }
        for x in &graph.exchanges {
            let age = (crate::storage::now_ms() - x.at_ms) as f64 / 1000.0;
            println!("exchange {age:.0}s ago: {} -> {}: {} actors, {} -> {}: {}", x.initiator, x.responder, x.to_responder, x.responder, x.initiator, x.to_initiator);
        }
        Ok(())
    }

    pub(super) async fn cluster(&self) -> anyhow::Result<()> {
        let view: ClusterView = self.send_as(self.http.get(format!("{}/v1/cluster", self.base))).await?;
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        println!(
            "{:<24} {:<8} {:<22} {:>11} {:>11} {:>25} {:>11} {:>6} {:>8} {:>12}",
            "HOST", "STATE", "API", "INCARNATION", "ACTIVATIONS", "MEMORY RESERVED/BUDGET", "USED", "SHED", "MIGRATED", "HEARTBEAT"
        );
        for h in &view.hosts {
            let this = if h.id == view.this { " (this host)" } else { "" };
            let m = &h.memory;
            println!(
                "{:<24} {:<8} {:<22} {:>11} {:>11} {:>25} {:>11} {:>6} {:>8} {:>10.1}s ago{this}",
                h.id,
                h.state.as_str(),
                h.api,
                h.incarnation,
                h.activations,
                format!("{} / {}", size(m.reserved), size(m.budget)),
                size(m.used),
                m.shed,
                m.migrated,
                h.heartbeat_age_ms as f64 / 1000.0
            );
        }
        println!("{} host(s), {}", view.hosts.len(), view.mode);
        if let Some(m) = view.hosts.iter().find(|h| h.id == view.this).map(|h| &h.memory) {
            println!(
                "this host's memory: budget {}, reserved {}, used {}, RSS {}; shed for memory {}, refused {}, migrated {}",
                size(m.budget),
                size(m.reserved),
                size(m.used),
                size(m.rss),
                m.shed,
                m.refused,
                m.migrated
            );
            for t in &m.types {
                println!(
                    "  {:<24} {:>6} activations, reserved {}, used {}, high water {}",
                    t.actor_type,
                    t.activations,
                    size(t.reserved),
                    size(t.used),
                    size(t.high_water)
                );
            }
        }
        Ok(())
    }

    pub(super) async fn versions(&self, actor_type: &str) -> anyhow::Result<()> {
        let reply: VersionList = self.send_as(self.http.get(format!("{}/v1/components/{actor_type}/versions", self.base))).await?;
        println!(
            "  {:>7} {:<14} {:>10} {:>12} {:>8} {:>9} {:<9} {:>7}",
            "VERSION", "SHA256", "SIZE", "MEMORY", "TIMEOUT", "SNAPSHOT", "RETENTION", "WORKERS"
        );
        for v in &reply.versions {
            println!(
                "{} {:>7} {:<14} {:>10} {:>12} {:>7}s {:>9} {:<9} {:>7}",
                if v.version == reply.active_version { "*" } else { " " },
                v.version,
                v.hash.chars().take(12).collect::<String>(),
                bytesize::ByteSize::b(v.size).display().iec().to_string(),
                bytesize::ByteSize::b(v.manifest.memory_limit).display().iec().to_string(),
                v.manifest.turn_timeout.as_secs_f64(),
                v.manifest.snapshot_every,
                v.manifest.retention.as_str(),
                if v.manifest.is_stateless_worker() { v.manifest.stateless_workers.to_string() } else { "-".into() },
            );
        }
        Ok(())
    }

    pub(super) async fn migrate(&self, actor: &str, to: &str) -> anyhow::Result<()> {
        let body = crate::api::types::MigrationRequest { actor: actor.to_string(), to: to.to_string() };
        let moved: crate::cluster::migration::Migrated = self.send_as(self.http.post(format!("{}/v1/cluster/migrations", self.base)).json(&body)).await?;
        println!(
            "{} moved from {} to {} (epoch {}) in {:.1} ms{}",
            moved.actor,
            moved.from,
            moved.to,
            moved.epoch,
            moved.took_ms,
            if moved.was_active { format!(", {:.1} ms of it finishing its queued turns", moved.drain_ms) } else { String::new() }
        );
        Ok(())
    }

    pub(super) async fn rollback(&self, actor_type: &str) -> anyhow::Result<()> {
        let reply: RolledBack = self.send_as(self.http.post(format!("{}/v1/components/{actor_type}/rollback", self.base))).await?;
        println!("{actor_type} is now at v{}", reply.active_version);
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
        let reply: JournalPage = self.send_as(self.http.get(self.actor_url(actor, "journal")?).query(&query)).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            return Ok(());
        }
        let events = &reply.events;
        println!(
            "{:>7}  {:<24} {:<16} {:>6}  {:<16} {:<22} {:<20} {:<12} DATA",
            "VERSION", "TIME (UTC)", "TYPE", "SCHEMA", "CORRELATION", "CAUSATION", "CALLER", "METHOD"
        );
        for e in events {
            println!(
                "{:>7}  {:<24} {:<16} {:>6}  {:<16} {:<22} {:<20} {:<12} {}",
                e.version,
                time_of(e.recorded_at_ms),
                e.event_type,
                e.schema_version,
                e.correlation_id,
                e.causation_id,
                e.caller.as_deref().unwrap_or("(external)"),
                e.method,
                readable_bytes(&e.data),
            );
        }
        println!("{}: version {}, {} event(s) shown", reply.actor, reply.version, events.len());
        Ok(())
    }

    pub(super) async fn replay(&self, actor: &str, to_version: Option<u64>, at: Option<&str>, component_version: Option<u64>) -> anyhow::Result<()> {
        let mut query = Vec::new();
        query.extend(to_version.map(|v| ("to_version", v.to_string())));
        query.extend(at.map(|v| ("at", v.to_string())));
        query.extend(component_version.map(|v| ("component_version", v.to_string())));
        let reply: ReplayOutcome = self.send_as(self.http.get(self.actor_url(actor, "replay")?).query(&query)).await?;
        eprintln!(
            "{} at version {} (component v{}, from snapshot {}):",
            reply.actor, reply.version, reply.component_version, reply.from_snapshot
        );
        let state: Value = serde_json::from_slice(&reply.state).unwrap_or_else(|_| Value::String(readable_bytes(&reply.state)));
        println!("{}", serde_json::to_string_pretty(&state)?);
        Ok(())
    }

    pub(super) async fn snapshot(&self, actor: &str) -> anyhow::Result<()> {
        let (actor_type, key) = actor.split_once('/').with_context(|| format!("bad actor {actor:?}: expected TYPE/KEY"))?;
        let reply: SnapshotTaken = self.send_as(self.http.post(format!("{}/v1/snapshots/{actor_type}/{key}", self.base))).await?;
        println!("snapshot of {actor} at version {}", reply.version);
        Ok(())
    }

    pub(super) async fn projections(&self) -> anyhow::Result<()> {
        let ProjectionList { projections } = self.send_as(self.http.get(format!("{}/v1/projections", self.base))).await?;
        println!("{:<24} {:<12} {:<28} {:<12} {:>10} {:>8}  LAST ERROR", "NAME", "SOURCE", "TARGET", "METHOD", "CHECKPOINT", "LAG");
        for p in &projections {
            println!(
                "{:<24} {:<12} {:<28} {:<12} {:>10} {:>8}  {}",
                p.def.name,
                p.def.source_type,
                p.def.target,
                p.def.method,
                p.checkpoint,
                p.lag,
                p.last_error.as_deref().unwrap_or("-"),
            );
        }
        Ok(())
    }

    pub(super) async fn add_projection(&self, name: &str, source: &str, target: &str, method: &str) -> anyhow::Result<()> {
        let body = NewProjection { name: name.into(), source: source.into(), target: target.into(), method: Some(method.into()) };
        let reply: ProjectionInfo = self.send_as(self.http.post(format!("{}/v1/projections", self.base)).json(&body)).await?;
        println!("projection {name}: {source} -> {target} `{method}` (lag {})", reply.lag);
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
        let JobList { jobs } = self.send_as(self.http.get(format!("{}/v1/jobs", self.base)).query(&query)).await?;
        println!("{:<40} {:<10} {:<24} {:<14} {:>8} {:<24} {:<16}", "ID", "STATUS", "TARGET", "METHOD", "ATTEMPTS", "RUN AT (UTC)", "CRON");
        for j in &jobs {
            println!(
                "{:<40} {:<10} {:<24} {:<14} {:>8} {:<24} {:<16}",
                j.id,
                j.status.as_str(),
                j.target,
                j.method,
                format!("{}/{}", j.attempts, j.max_attempts),
                time_of(j.run_at_ms),
                j.cron.as_deref().unwrap_or("-"),
            );
        }
        println!("{} job(s)", jobs.len());
        Ok(())
    }

    pub(super) async fn add_job(&self, body: &Value) -> anyhow::Result<()> {
        let JobAdded { job, created } = self.send_as(self.http.post(format!("{}/v1/jobs", self.base)).json(body)).await?;
        let what = if created { "added:" } else { "exists already (same --key): not added again;" };
        println!("job {} {what} {} for {} `{}`, runs at {}", job.id, job.status.as_str(), job.target, job.method, time_of(job.run_at_ms));
        Ok(())
    }

    pub(super) async fn show_job(&self, id: &str) -> anyhow::Result<()> {
        let job: JobRecord = self.send_as(self.http.get(format!("{}/v1/jobs/{id}", self.base))).await?;
        println!("{}", serde_json::to_string_pretty(&with_readable_times(serde_json::to_value(&job)?))?);
        Ok(())
    }

    pub(super) async fn job_action(&self, id: &str, action: &str) -> anyhow::Result<()> {
        let job: JobRecord = self.send_as(self.http.post(format!("{}/v1/jobs/{id}/{action}", self.base))).await?;
        println!("job {id}: {} (attempts {}/{})", job.status.as_str(), job.attempts, job.max_attempts);
        Ok(())
    }

    pub(super) async fn purge_jobs(&self, status: &str) -> anyhow::Result<()> {
        let reply: Purged = self.send_as(self.http.delete(format!("{}/v1/jobs", self.base)).query(&[("status", status)])).await?;
        println!("purged {} {status} job(s)", reply.purged);
        Ok(())
    }
}

impl Client {
    pub(super) async fn outbox(&self, status: Option<&str>) -> anyhow::Result<()> {
        let query: Vec<(&str, &str)> = status.map(|s| ("status", s)).into_iter().collect();
        let MessageList { messages } = self.send_as(self.http.get(format!("{}/v1/outbox", self.base)).query(&query)).await?;
        println!("{:<34} {:<10} {:<20} {:<28} {:>8} {:<24} LAST ERROR", "ID", "STATUS", "SENDER", "TO", "ATTEMPTS", "DUE (UTC)");
        for m in &messages {
            let to = match &m.message.destination {
                Destination::Actor { actor, method } => format!("{actor}.{method}"),
                Destination::Sink { name } => format!("sink {name}"),
            };
            let status = match (m.status.as_str(), m.lease_until_ms.is_some()) {
                ("pending", true) => "in-flight",
                (s, _) => s,
            };
            println!(
                "{:<34} {:<10} {:<20} {:<28} {:>8} {:<24} {}",
                m.message.id,
                status,
                m.message.sender,
                to,
                m.attempts,
                time_of(m.next_at_ms),
                m.last_error.as_deref().unwrap_or("-"),
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
        let reply: MessageRetried = self.send_as(request).await?;
        println!("message {id}: pending again ({} message(s))", reply.retried);
        Ok(())
    }

    pub(super) async fn purge_messages(&self) -> anyhow::Result<()> {
        let reply: Purged = self.send_as(self.http.delete(format!("{}/v1/outbox", self.base)).query(&[("status", "dead")])).await?;
        println!("purged {} dead message(s)", reply.purged);
        Ok(())
    }
}

/// `x_at_ms: 1764500000000` fields as `x_at: "2025-11-30T10:53:20.000Z"`,
/// at any depth, as `quark jobs` prints times.
fn with_readable_times(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| match key.strip_suffix("_ms") {
                    Some(name) if name.ends_with("_at") || name == "at" => {
                        let readable = value.as_i64().map_or(Value::Null, |ms| Value::String(time_of(ms)));
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

/// What a JSON body holds, as compact JSON; other bytes as base64 (as the
/// API writes them).
fn readable_bytes(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value.to_string(),
        Err(_) => format!("{{\"base64\":\"{}\"}}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)),
    }
}

/// An RFC 3339 time for ms since the epoch.
pub(super) fn time_of(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}
