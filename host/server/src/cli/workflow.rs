//! `quark workflow …`: start, status, signal, cancel, list, history and
//! the replay check of a new version, over `/v1/workflows`.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, time_of};

#[derive(Debug, Subcommand)]
pub(super) enum WorkflowCommand {
    /// Start a workflow (or get the one with that id: starting is idempotent).
    Start {
        /// The workflow type, e.g. `order-saga`.
        workflow_type: String,
        /// The instance's id, e.g. `o-42`.
        #[arg(long)]
        id: String,
        /// The input, as JSON.
        input: Option<String>,
    },
    /// Show an instance: status, output or error, its custom status.
    Status {
        /// The id (or `type/id`).
        id: String,
    },
    /// Send a signal (a JSON payload) to a running instance.
    Signal {
        /// The id (or `type/id`).
        id: String,
        /// The signal's name, e.g. `approved`.
        name: String,
        /// Its payload, as JSON.
        payload: Option<String>,
    },
    /// Cancel an instance: its waits fail with `cancelled`, it compensates.
    Cancel {
        /// The id (or `type/id`).
        id: String,
    },
    /// List instances, newest first.
    List {
        /// Only running, completed, failed or cancelled ones.
        #[arg(long)]
        status: Option<String>,
        /// Only this workflow type.
        #[arg(long = "type")]
        workflow_type: Option<String>,
    },
    /// Each step of an instance's current run: kind, input, result, time.
    History {
        /// The id (or `type/id`).
        id: String,
    },
    /// Replay the running instances' histories against VERSION (before
    /// making it active): the first divergence of each. Fails if any diverges.
    Check {
        /// The workflow type.
        workflow_type: String,
        /// The version to check.
        #[arg(long)]
        version: u64,
    },
}

fn json_arg(text: Option<&str>, what: &str) -> anyhow::Result<Value> {
    match text {
        Some(t) => serde_json::from_str(t).with_context(|| format!("{what} {t:?} is not valid JSON")),
        None => Ok(Value::Null),
    }
}

/// One path segment for an id (`type/id` included).
fn segment(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

pub(super) async fn run(client: &Client, command: WorkflowCommand) -> anyhow::Result<()> {
    let base = format!("{}/v1/workflows", client.base);
    match command {
        WorkflowCommand::Start { workflow_type, id, input } => {
            let body = json!({ "type": workflow_type, "id": id, "input": json_arg(input.as_deref(), "the input")? });
            print_status(&client.send(client.http.post(&base).json(&body)).await?);
        }
        WorkflowCommand::Status { id } => print_status(&client.send(client.http.get(format!("{base}/{}", segment(&id)))).await?),
        WorkflowCommand::Signal { id, name, payload } => {
            let payload = json_arg(payload.as_deref(), "the payload")?;
            let url = format!("{base}/{}/signals/{}", segment(&id), segment(&name));
            print_status(&client.send(client.http.post(url).json(&payload)).await?);
        }
        WorkflowCommand::Cancel { id } => print_status(&client.send(client.http.post(format!("{base}/{}/cancel", segment(&id)))).await?),
        WorkflowCommand::List { status, workflow_type } => {
            let mut query = Vec::new();
            query.extend(status.map(|s| ("status", s)));
            query.extend(workflow_type.map(|t| ("type", t)));
            let list = client.send(client.http.get(&base).query(&query)).await?;
            let rows = list["workflows"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no workflows");
            }
            for w in rows {
                println!(
                    "{:<24} {:<16} {:<10} v{:<4} {}",
                    w["id"].as_str().unwrap_or(""),
                    w["type"].as_str().unwrap_or(""),
                    w["status"].as_str().unwrap_or(""),
                    w["version"],
                    w["updated_ms"].as_i64().map(time_of).unwrap_or_default()
                );
            }
        }
        WorkflowCommand::History { id } => {
            let history = client.send(client.http.get(format!("{base}/{}/history", segment(&id)))).await?;
            println!("{} ({}), run {}: {}", history["id"].as_str().unwrap_or(""), history["type"].as_str().unwrap_or(""), history["run"], history["status"].as_str().unwrap_or(""));
            for step in history["steps"].as_array().cloned().unwrap_or_default() {
                let result = if step["result"].is_null() { "(waiting)".to_string() } else { step["result"].to_string() };
                let input = if step["input"].is_null() { String::new() } else { format!(" {}", step["input"]) };
                println!(
                    "{:>4}  {}  {:<9} {}{input} -> {result}",
                    step["step"],
                    step["at_ms"].as_i64().map(time_of).unwrap_or_default(),
                    step["kind"].as_str().unwrap_or(""),
                    step["detail"].as_str().unwrap_or(""),
                );
            }
        }
        WorkflowCommand::Check { workflow_type, version } => {
            let body = json!({ "type": workflow_type, "version": version });
            let check = client.send(client.http.post(format!("{base}/check")).json(&body)).await?;
            let divergences = check["divergences"].as_array().cloned().unwrap_or_default();
            println!("{workflow_type} v{version}: replayed {} running histories, {} diverge", check["checked"], divergences.len());
            for d in &divergences {
                println!("  {}: {}", d["id"].as_str().unwrap_or(""), d["message"].as_str().unwrap_or(""));
            }
            if !divergences.is_empty() {
                bail!("{} running instances of {workflow_type} would stop with a nondeterminism error on v{version}", divergences.len());
            }
        }
    }
    Ok(())
}

fn print_status(status: &Value) {
    println!("{}", serde_json::to_string_pretty(status).unwrap_or_default());
}
