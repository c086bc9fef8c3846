//! The `quark` command: `serve` runs a host; every other command is a thin
//! client of a running host's HTTP API.

mod client;
mod scaffold;
mod workflow;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{Host, Manifest, Node, NodeConfig};

/// Quark: durable WebAssembly actors.
#[derive(Debug, Parser)]
#[command(name = "quark", version, about)]
pub struct Cli {
    /// Bearer token for the host's API (required when it listens beyond loopback).
    #[arg(long, global = true, env = "QUARK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where a client command sends its requests (not an option of `serve`).
#[derive(Debug, clap::Args)]
struct Remote {
    /// The host that client commands talk to.
    #[arg(long, global = true, env = "QUARK_SERVER", hide_env_values = true, default_value = DEFAULT_SERVER)]
    server: String,
}

/// The host client commands talk to unless told otherwise.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// What `quark cluster` shows besides its hosts.
#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The sampled actor-to-actor call graph: the share of calls that
    /// cross hosts (per host and in all), the hottest edges, and the
    /// repartitioner's recent exchanges.
    Graph,
}

// Parsed once per process: a large `serve` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: the HTTP API on --listen, state in --data-dir (SQLite) or --store.
    Serve(ServeArgs),
    /// Create a new Rust actor crate (from a template), build it for
    /// wasm32-wasip2 and deploy it to the host.
    New {
        #[command(flatten)]
        remote: Remote,
        /// Actor type name, e.g. `hello`: lowercase letters, digits, `-`, `_`.
        name: String,
        /// Where to create the crate (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Only create the crate; do not build or deploy it.
        #[arg(long)]
        no_build: bool,
    },
    /// Deploy a component as the new version of an actor type.
    Deploy {
        #[command(flatten)]
        remote: Remote,
        /// Actor type name, e.g. `counter`.
        actor_type: String,
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: PathBuf,
        /// Most linear memory one activation may use, e.g. `16MiB`.
        #[arg(long)]
        memory_limit: Option<String>,
        /// Longest one turn may run, e.g. `5s`.
        #[arg(long)]
        turn_timeout: Option<String>,
        /// Event-sourced actors: snapshot after this many events (default 1000).
        #[arg(long)]
        snapshot_every: Option<String>,
        /// What happens to events a snapshot covers: keep, archive or delete.
        #[arg(long)]
        retention: Option<String>,
        /// Make the type a stateless worker: up to N activations per actor
        /// id on each host, run on the host the call arrives at, keeping no
        /// state (for pure compute and fan-out; see docs/cluster.md).
        #[arg(long, value_name = "N")]
        stateless_workers: Option<String>,
    },
    /// Call a method of an actor and print its JSON reply.
    Call {
        #[command(flatten)]
        remote: Remote,
        /// `type/key`, e.g. `counter/alice`.
        actor: String,
        /// Method name, e.g. `increment`.
        method: String,
        /// JSON request body (default: none).
        json: Option<String>,
    },
    /// List the actors active on the host, with their memory use.
    Actors {
        #[command(flatten)]
        remote: Remote,
    },
    /// List the hosts of the cluster (any host answers for all of them).
    Cluster {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        view: Option<ClusterCommand>,
    },
    /// Move an actor to another host of the cluster: its queued turns
    /// finish where it is, then the target serves it (any host takes the
    /// command).
    Migrate {
        #[command(flatten)]
        remote: Remote,
        /// `type/key`, e.g. `counter/a`.
        actor: String,
        /// The id of the host to move it to (see `quark cluster`).
        #[arg(long)]
        to: String,
    },
    /// List the versions of an actor type.
    Versions {
        #[command(flatten)]
        remote: Remote,
        /// Actor type name.
        actor_type: String,
    },
    /// Make the previous version of an actor type active again.
    Rollback {
        #[command(flatten)]
        remote: Remote,
        /// Actor type name.
        actor_type: String,
    },
    /// Show an actor's journal: the audit trail of its events.
    Journal {
        #[command(flatten)]
        remote: Remote,
        /// `type/key`, e.g. `bank/alice`.
        actor: String,
        /// First version to show.
        #[arg(long)]
        from: Option<u64>,
        /// Last version to show.
        #[arg(long)]
        to: Option<u64>,
        /// Most events to show.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print an event-sourced actor's state at a past version or time,
    /// computed in a sandbox that cannot touch the live actor.
    Replay {
        #[command(flatten)]
        remote: Remote,
        /// `type/key`, e.g. `bank/alice`.
        actor: String,
        /// Replay up to this event version.
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        to_version: Option<u64>,
        /// Replay up to this time (RFC 3339, e.g. 2026-11-01T12:00:00Z).
        #[arg(long)]
        at: Option<String>,
        /// Fold the events with this component version (default: the active one).
        #[arg(long)]
        component_version: Option<u64>,
    },
    /// Snapshot an event-sourced actor now.
    Snapshot {
        #[command(flatten)]
        remote: Remote,
        /// `type/key`, e.g. `bank/alice`.
        actor: String,
    },
    /// List durable jobs, or add, show, cancel, retry or purge them.
    Jobs {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: Option<JobCommand>,
        /// Only jobs with this status: scheduled, running, failed, succeeded, dead, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs for this actor (`type/key`).
        #[arg(long)]
        target: Option<String>,
    },
    /// List outbox messages (pending, in flight, dead), or retry or purge them.
    Outbox {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: Option<OutboxCommand>,
        /// Only messages with this status: pending (includes in flight) or dead.
        #[arg(long)]
        status: Option<String>,
    },
    /// List projections with their checkpoint and lag, or add or remove one.
    Projections {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: Option<ProjectionCommand>,
    },
    /// Durable workflows: start, status, signal, cancel, list, history, check.
    Workflow {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: workflow::WorkflowCommand,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Make a dead message due now, with fresh attempts.
    Retry {
        /// The message id.
        id: String,
        /// The sending actor (`type/key`): ids are unique per sender;
        /// without it, every dead message with the id is retried.
        #[arg(long)]
        sender: Option<String>,
    },
    /// Delete every dead message.
    Purge,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Schedule a job: a turn of TARGET's METHOD, now, later or on a cron schedule.
    Add {
        /// The actor that runs it, e.g. `counter/alice`.
        target: String,
        /// The method its turn calls.
        method: String,
        /// The JSON payload.
        json: Option<String>,
        /// Run at this time (RFC 3339).
        #[arg(long, conflicts_with_all = ["in", "cron"])]
        at: Option<String>,
        /// Run after this long, e.g. `10m`.
        #[arg(long = "in", conflicts_with = "cron")]
        r#in: Option<humantime::Duration>,
        /// Run on every tick of a cron expression, e.g. `*/5 * * * *`.
        #[arg(long)]
        cron: Option<String>,
        /// The cron expression's time zone (IANA name; UTC by default).
        #[arg(long)]
        tz: Option<String>,
        /// Attempts before the dead-letter list (default 5).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Idempotency key: adding the same key twice yields one job.
        #[arg(long)]
        key: Option<String>,
        /// Higher runs first.
        #[arg(long)]
        priority: Option<i32>,
        /// Queue for concurrency limits.
        #[arg(long)]
        queue: Option<String>,
        /// Missed ticks of a cron job: once (default), all, skip.
        #[arg(long)]
        catch_up: Option<String>,
        /// Longest one attempt may run, e.g. `30s`.
        #[arg(long)]
        timeout: Option<humantime::Duration>,
    },
    /// Show one job: attempts, errors, progress.
    Show {
        /// The job id.
        id: String,
    },
    /// Cancel a job (a running attempt finishes; no further one starts).
    Cancel {
        /// The job id.
        id: String,
    },
    /// Run a dead or failed job again now.
    Retry {
        /// The job id.
        id: String,
    },
    /// Delete finished jobs: the dead-letter list (the default), or the
    /// succeeded or cancelled ones.
    Purge {
        /// Delete the dead-letter list (the default when nothing is named).
        #[arg(long)]
        dead: bool,
        /// Delete succeeded jobs.
        #[arg(long)]
        succeeded: bool,
        /// Delete cancelled jobs.
        #[arg(long)]
        cancelled: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionCommand {
    /// Send every event of an actor type, in order and exactly once, to one actor.
    Add {
        /// Projection name, e.g. `accounts-summary`.
        name: String,
        /// The actor type whose events it reads, e.g. `bank`.
        #[arg(long)]
        source: String,
        /// The actor that receives them, e.g. `accounts-summary/all`.
        #[arg(long)]
        target: String,
        /// The method that receives them.
        #[arg(long, default_value = crate::projections::DEFAULT_METHOD)]
        method: String,
    },
    /// Stop and remove a projection (its actor's state stays).
    Remove {
        /// Projection name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory for the SQLite database and the compiled-component cache.
    #[arg(long, env = "QUARK_DATA_DIR", hide_env_values = true, default_value = "./quark-data")]
    data_dir: PathBuf,
    /// Address for the HTTP API.
    #[arg(long, env = "QUARK_LISTEN", hide_env_values = true, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Shared store: `postgres://user@host/db[?options][#schema]` or
    /// `redis://host:6379[#prefix]`; SQLite in --data-dir when absent.
    /// Hosts on one shared store form a cluster (`quark cluster`).
    #[arg(long, env = "QUARK_STORE", hide_env_values = true)]
    store: Option<String>,
    /// This host's id in the cluster (unique; default: a fresh one per start).
    #[arg(long, env = "QUARK_HOST_ID", hide_env_values = true)]
    host_id: Option<String>,
    /// Where other hosts of the cluster reach this one (`host:port`; port
    /// 0 picks a free one); advertised through the membership rows.
    #[arg(long, env = "QUARK_PEER_LISTEN", hide_env_values = true, default_value = "127.0.0.1:0")]
    peer_listen: String,
    /// The address the other hosts dial instead of --peer-listen's, when
    /// they cannot reach that one (a NAT, a container's published port).
    #[arg(long, env = "QUARK_PEER_ADVERTISE", hide_env_values = true)]
    peer_advertise: Option<String>,
    /// Where a new activation goes in a cluster, among the hosts whose
    /// free memory budget fits it (all hosts when none does): `hash`
    /// (spread by actor id), `local` (the host that first sees a message
    /// for it) or `memory` (the host with the most free memory).
    #[arg(long, default_value = "hash")]
    placement: String,
    /// Even out the memory the hosts' activations reserve, in proportion
    /// to their budgets, by moving activations (at most 16 per host per
    /// period, only from a host more than 10% above its share). Off by
    /// default, as in Orleans.
    #[arg(long)]
    rebalance: bool,
    /// How often each host looks whether to rebalance (with `--rebalance`).
    #[arg(long, default_value = "30s")]
    rebalance_interval: humantime::Duration,
    /// Move actors that call each other a lot to the same host: each
    /// period a host pairs with the peer its calls cross to most, and the
    /// two swap actors to cut the calls between them (within a 10%
    /// balance tolerance and both memory budgets). Off by default, as in
    /// Orleans; calls are sampled either way (`quark cluster graph`).
    #[arg(long)]
    repartition: bool,
    /// How often each host pairs with a peer (with `--repartition`).
    #[arg(long, default_value = "60s")]
    repartition_interval: humantime::Duration,
    /// How long a cluster member holds its actors without a heartbeat
    /// (heartbeats go every tenth of it); a member silent for twice this
    /// long is declared dead.
    #[arg(long, default_value = "10s")]
    lease: humantime::Duration,
    /// Deactivate an actor after this long without messages.
    #[arg(long, default_value = "5m")]
    idle_timeout: humantime::Duration,
    /// Longest a call waits for its reply.
    #[arg(long, default_value = "30s")]
    call_timeout: humantime::Duration,
    /// Largest request payload.
    #[arg(long, default_value = "1MiB")]
    max_payload: bytesize::ByteSize,
    /// Most activations in memory at once (default: what vm.max_map_count allows).
    #[arg(long)]
    max_activations: Option<usize>,
    /// Memory the activations may reserve in all: bytes (`2GiB`) or a
    /// share of this machine's RAM (`50%`). Every new instance reserves
    /// memory (see --memory-overcommit); one that does not fit sheds idle
    /// actors (oldest first) or is refused with `limit-exceeded`; above 80%
    /// of the budget (reserved, used, or the process RSS at it) idle actors
    /// are shed, oldest first, down to 75%.
    #[arg(long, default_value = "80%")]
    memory_budget: String,
    /// What a new instance reserves: its type's observed high-water use
    /// times this factor (1 to 100; never more than the type's
    /// --memory-limit, which is reserved until one instance has run), or
    /// `none`: always the declared limit (strict: no instance can take the
    /// host past its budget, but far fewer fit).
    #[arg(long, default_value = "2")]
    memory_overcommit: String,
    /// Deploy `TYPE=FILE.wasm` at start; repeatable. Never replaces what
    /// you deployed or rolled back to: a missing type is deployed with
    /// default settings; bytes stored already (as any version) change
    /// nothing; new bytes become a new version with the active version's
    /// settings, unless the type was rolled back (then it is left alone).
    #[arg(long = "deploy", value_name = "TYPE=FILE")]
    deploys: Vec<String>,
    /// Declare projection `NAME=SOURCE_TYPE:TARGET_ACTOR` at start (method
    /// `project`), e.g. `accounts-summary=bank:accounts-summary/all`; repeatable.
    #[arg(long = "projection", value_name = "NAME=SOURCE:TARGET")]
    projections: Vec<String>,
    /// Most jobs running at once on this host.
    #[arg(long, default_value_t = crate::jobs::DEFAULT_CONCURRENCY)]
    job_concurrency: usize,
    /// How long a claimed job is this host's before another may take it over.
    #[arg(long, default_value = "60s")]
    job_lease: humantime::Duration,
    /// An external sink for outbox messages: `NAME=webhook:http://…`,
    /// `NAME=redis:redis://host:6379#stream` or `NAME=nats:nats://host:4222#subject`; repeatable.
    #[arg(long = "sink", value_name = "NAME=KIND:TARGET")]
    sinks: Vec<String>,
    /// How long an actor remembers a handled message id or `Idempotency-Key`.
    #[arg(long, default_value = "24h")]
    inbox_retention: humantime::Duration,
    /// How long succeeded and cancelled jobs are kept (dead ones stay
    /// until retried or purged).
    #[arg(long, default_value = "24h")]
    job_retention: humantime::Duration,
    /// Most outbox lanes (one sender's messages to one destination)
    /// delivered at once on this host.
    #[arg(long, default_value_t = crate::outbox::dispatcher::DEFAULT_CONCURRENCY)]
    message_concurrency: usize,
    /// Most jobs running at once in queue NAME: `NAME=N`; repeatable.
    #[arg(long = "queue-limit", value_name = "NAME=N")]
    queue_limits: Vec<String>,
    /// Most jobs running at once per actor type: `TYPE=N`; repeatable.
    #[arg(long = "type-limit", value_name = "TYPE=N")]
    type_limits: Vec<String>,
    /// A host name that requests may carry in `Host`, besides loopback
    /// names and the listen address (a DNS-rebinding guard); repeat it.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// A web origin (`https://console.example.com`) whose pages may call
    /// this host, besides its own; cross-site requests are refused. Repeat it.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
}

/// Runs the command line; the binary's `main`.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = cli.command.remote().map_or(DEFAULT_SERVER, |r| r.server.as_str()).to_string();
    let client = client::Client::new(&server, cli.token.clone());
    match cli.command {
        Command::Serve(args) => serve(args, cli.token).await,
        Command::Deploy { actor_type, file, memory_limit, turn_timeout, snapshot_every, retention, stateless_workers, .. } => {
            let options = [
                ("memory_limit", memory_limit),
                ("turn_timeout", turn_timeout),
                ("snapshot_every", snapshot_every),
                ("retention", retention),
                ("stateless_workers", stateless_workers),
            ];
            let query: Vec<(&str, String)> = options.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            client.deploy(&actor_type, &file, &query).await
        }
        Command::Call { actor, method, json, .. } => client.call(&actor, &method, json.as_deref()).await,
        Command::New { name, path, no_build, .. } => {
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            let component = scaffold::create(&name, &dir)?;
            println!("created {} (edit src/lib.rs)", dir.display());
            if no_build {
                println!("build:   (cd {} && cargo build --release --target wasm32-wasip2)", dir.display());
                println!("deploy:  quark deploy {name} {}", component.display());
                return Ok(());
            }
            let dir2 = dir.clone();
            tokio::task::spawn_blocking(move || scaffold::build(&dir2)).await??;
            println!("built {}", component.display());
            match client.deploy(&name, &component, &[]).await {
                Ok(()) => println!("try:     quark call {name}/first add '{{\"by\": 2}}'"),
                Err(e) => println!("not deployed ({e:#}); start a host (`make run`), then: quark deploy {name} {}", component.display()),
            }
            Ok(())
        }
        Command::Actors { .. } => client.actors().await,
        Command::Cluster { view: None, .. } => client.cluster().await,
        Command::Cluster { view: Some(ClusterCommand::Graph), .. } => client.cluster_graph().await,
        Command::Migrate { actor, to, .. } => client.migrate(&actor, &to).await,
        Command::Versions { actor_type, .. } => client.versions(&actor_type).await,
        Command::Rollback { actor_type, .. } => client.rollback(&actor_type).await,
        Command::Journal { actor, from, to, limit, json, .. } => client.journal(&actor, from, to, limit, json).await,
        Command::Replay { actor, to_version, at, component_version, .. } => {
            client.replay(&actor, to_version, at.as_deref(), component_version).await
        }
        Command::Snapshot { actor, .. } => client.snapshot(&actor).await,
        Command::Jobs { action: None, status, target, .. } => client.jobs(status.as_deref(), target.as_deref()).await,
        Command::Jobs { action: Some(action), .. } => jobs_command(&client, action).await,
        Command::Outbox { action: None, status, .. } => client.outbox(status.as_deref()).await,
        Command::Outbox { action: Some(OutboxCommand::Retry { id, sender }), .. } => client.retry_message(&id, sender.as_deref()).await,
        Command::Outbox { action: Some(OutboxCommand::Purge), .. } => client.purge_messages().await,
        Command::Projections { action: None, .. } => client.projections().await,
        Command::Projections { action: Some(ProjectionCommand::Add { name, source, target, method }), .. } => {
            client.add_projection(&name, &source, &target, &method).await
        }
        Command::Projections { action: Some(ProjectionCommand::Remove { name }), .. } => client.remove_projection(&name).await,
        Command::Workflow { action, .. } => workflow::run(&client, action).await,
    }
}

async fn serve(args: ServeArgs, token: Option<String>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUARK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: not in a log file, not
        // when NO_COLOR is set (https://no-color.org).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        .init();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if !crate::api::is_loopback(&addr) && token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("refusing to listen on {addr} without --token (or QUARK_TOKEN): the admin API would be open to the network");
    }
    // Held until the process ends: the embedded store is single-host.
    let _data_dir_lock = match args.store {
        None => Some(lock_sqlite_data_dir(&args.data_dir)?),
        Some(_) => None,
    };
    let store = crate::storage::open(args.store.as_deref(), &args.data_dir)
        .await
        .context("opening the store")?;
    let config = node_config(&args, addr, store.cluster_store().is_some())?;
    let store_name = store.backend_name();
    let node = Node::start(config, store).await.context("starting the host")?;
    deploy_and_declare(&node, &args).await?;
    let where_ = match store_name {
        "sqlite" => format!("sqlite at {}", args.data_dir.join("quark.db").display()),
        other => other.to_string(),
    };
    println!("quark serving on http://{addr} (store: {where_})");
    if node.host().actor_types().iter().any(|t| t == "counter") {
        let quark = std::env::args().next().unwrap_or_else(|| "quark".into());
        println!("try:  {quark} call counter/alice increment '{{\"by\": 2}}'");
        println!("      curl -X POST http://{addr}/v1/actors/counter/alice/get");
    }
    if let Some(cluster) = node.cluster() {
        cluster.set_active().await.context("joining the cluster")?;
        println!("cluster member {} (store: {where_}, peers at {}); `quark cluster` lists the hosts", cluster.id(), cluster.peer_addr());
    }
    let access = crate::api::ApiConfig { token, allowed_hosts: args.allow_hosts.clone(), allowed_origins: args.allow_origins.clone(), listen: None };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("watching for SIGTERM")?;
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        println!("\nquark: shutting down (state is already committed)");
    };
    let outcome = tokio::select! {
        served = crate::api::serve_with(node.clone(), listener, access) => served,
        () = shutdown => Ok(()),
    };
    // The API is closed; what this host runs on its own stops next, then
    // its actors are handed off (the turns in flight finish first).
    if let Some(cluster) = node.cluster() {
        node.stop_services().await;
        if let Err(e) = cluster.leave(crate::cluster::DEFAULT_DRAIN).await {
            tracing::warn!(error = %e, "leaving the cluster failed: the other hosts declare this one dead when its lease lapses");
        }
    }
    outcome
}

impl Command {
    /// The host a client command talks to; none for `serve`.
    fn remote(&self) -> Option<&Remote> {
        match self {
            Command::Serve(_) => None,
            Command::New { remote, .. }
            | Command::Deploy { remote, .. }
            | Command::Call { remote, .. }
            | Command::Actors { remote }
            | Command::Cluster { remote, .. }
            | Command::Migrate { remote, .. }
            | Command::Versions { remote, .. }
            | Command::Rollback { remote, .. }
            | Command::Journal { remote, .. }
            | Command::Replay { remote, .. }
            | Command::Snapshot { remote, .. }
            | Command::Jobs { remote, .. }
            | Command::Outbox { remote, .. }
            | Command::Projections { remote, .. }
            | Command::Workflow { remote, .. } => Some(remote),
        }
    }
}

/// What `serve --deploy` did with one file.
enum StartDeploy {
    /// A new version (the type was missing, or the file is new).
    Deployed(u64),
    /// These bytes are stored already, as this version: nothing changed.
    Known(u64),
    /// The file is new, but the type was rolled back: left as it is.
    RolledBack { active: u64, newest: u64 },
}

/// `serve --deploy TYPE=FILE`: never replaces what a person deployed or
/// rolled back to. A missing type is deployed with default settings; bytes
/// already stored (as any version) change nothing; new bytes become a new
/// version with the active version's settings (`--memory-limit`,
/// `--snapshot-every`… carry over), unless the type was rolled back.
async fn deploy_at_start(host: &Host, actor_type: &str, bytes: Vec<u8>) -> anyhow::Result<StartDeploy> {
    let Ok((versions, active)) = host.versions(actor_type).await else {
        let outcome = host.deploy(actor_type, bytes, Manifest::parse(None, None)?).await?;
        return Ok(StartDeploy::Deployed(outcome.version.version));
    };
    let hash = crate::runtime::registry::content_hash(&bytes);
    if let Some(known) = versions.iter().rev().find(|v| v.hash == hash) {
        return Ok(StartDeploy::Known(known.version));
    }
    let newest = versions.iter().map(|v| v.version).max().unwrap_or(active);
    if active < newest {
        return Ok(StartDeploy::RolledBack { active, newest });
    }
    let manifest = versions.iter().find(|v| v.version == active).map(|v| v.manifest.clone()).unwrap_or(Manifest::parse(None, None)?);
    let outcome = host.deploy(actor_type, bytes, manifest).await?;
    Ok(StartDeploy::Deployed(outcome.version.version))
}

/// Parses `NAME=SOURCE:TARGET` (see `quark serve --projection`).
fn parse_projection_spec(spec: &str) -> anyhow::Result<crate::storage::ProjectionDef> {
    let (name, rest) = spec.split_once('=').with_context(|| format!("--projection {spec:?}: expected NAME=SOURCE:TARGET"))?;
    let (source, target) = rest.split_once(':').with_context(|| format!("--projection {spec:?}: expected NAME=SOURCE:TARGET"))?;
    Ok(crate::storage::ProjectionDef {
        name: name.to_string(),
        source_type: source.to_string(),
        target: target.to_string(),
        method: crate::projections::DEFAULT_METHOD.to_string(),
    })
}

async fn jobs_command(client: &client::Client, action: JobCommand) -> anyhow::Result<()> {
    match action {
        JobCommand::Add { target, method, json, at, r#in, cron, tz, max_attempts, key, priority, queue, catch_up, timeout } => {
            let payload: serde_json::Value = match json {
                Some(j) => serde_json::from_str(&j).with_context(|| format!("the payload {j:?} is not valid JSON"))?,
                None => serde_json::Value::Null,
            };
            let mut body = serde_json::json!({ "target": target, "method": method, "payload": payload });
            let fields = [
                ("run_at", at.map(serde_json::Value::from)),
                ("delay_ms", r#in.map(|d| serde_json::Value::from(Duration::from(d).as_millis() as u64))),
                ("cron", cron.map(serde_json::Value::from)),
                ("time_zone", tz.map(serde_json::Value::from)),
                ("max_attempts", max_attempts.map(serde_json::Value::from)),
                ("idempotency_key", key.map(serde_json::Value::from)),
                ("priority", priority.map(serde_json::Value::from)),
                ("queue", queue.map(serde_json::Value::from)),
                ("catch_up", catch_up.map(serde_json::Value::from)),
                ("timeout_ms", timeout.map(|d| serde_json::Value::from(Duration::from(d).as_millis() as u64))),
            ];
            for (name, value) in fields {
                if let Some(v) = value {
                    body[name] = v;
                }
            }
            client.add_job(&body).await
        }
        JobCommand::Show { id } => client.show_job(&id).await,
        JobCommand::Cancel { id } => client.job_action(&id, "cancel").await,
        JobCommand::Retry { id } => client.job_action(&id, "retry").await,
        JobCommand::Purge { dead, succeeded, cancelled } => {
            let statuses: Vec<&str> = [(dead, "dead"), (succeeded, "succeeded"), (cancelled, "cancelled")]
                .into_iter()
                .filter_map(|(on, s)| on.then_some(s))
                .collect();
            // Like `quark outbox purge`: the dead-letter list unless told otherwise.
            let statuses = if statuses.is_empty() { vec!["dead"] } else { statuses };
            for status in statuses {
                client.purge_jobs(status).await?;
            }
            Ok(())
        }
    }
}

/// Parses repeated `NAME=N` limits.
fn parse_limits(flag: &str, specs: &[String]) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    specs
        .iter()
        .map(|spec| {
            let (name, n) = spec.split_once('=').with_context(|| format!("{flag} {spec:?}: expected NAME=N"))?;
            let n: usize = n.parse().with_context(|| format!("{flag} {spec:?}: {n:?} is not a number"))?;
            Ok((name.to_string(), n.max(1)))
        })
        .collect()
}

/// `--memory-budget`: bytes (`2GiB`) or a share of RAM (`50%`).
fn parse_budget(text: &str) -> anyhow::Result<u64> {
    let ram = crate::runtime::memory::total_ram_bytes();
    let bytes = match text.trim().strip_suffix('%') {
        Some(share) => {
            let share: f64 = share.trim().parse().map_err(|_| anyhow::anyhow!("--memory-budget {text:?}: a share like `50%` or a size like `2GiB`"))?;
            anyhow::ensure!(share > 0.0 && share <= 100.0, "--memory-budget {text:?}: a share from 0 to 100%");
            (ram as f64 * share / 100.0) as u64
        }
        None => text.parse::<bytesize::ByteSize>().map_err(|e| anyhow::anyhow!("--memory-budget {text:?}: {e} (a size like `2GiB` or a share like `50%`)"))?.as_u64(),
    };
    anyhow::ensure!(bytes >= 1 << 20, "--memory-budget {text:?} is under 1 MiB");
    Ok(bytes)
}

/// The node's settings from `serve`'s flags; `shared_store`: the store
/// can hold a cluster (the host joins it, its API on `addr`).
fn node_config(args: &ServeArgs, addr: std::net::SocketAddr, shared_store: bool) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::new(&args.data_dir);
    config.host.idle_timeout = Duration::from(args.idle_timeout);
    config.host.call_timeout = Duration::from(args.call_timeout);
    config.host.max_payload = usize::try_from(args.max_payload.as_u64()).unwrap_or(usize::MAX);
    if let Some(max) = args.max_activations {
        config.host.max_activations = max.max(1);
    }
    config.host.memory.budget = parse_budget(&args.memory_budget)?;
    config.host.memory.overcommit = match args.memory_overcommit.trim() {
        "none" => None,
        text => match text.parse::<f64>() {
            Ok(f) if (1.0..=100.0).contains(&f) => Some(f),
            _ => anyhow::bail!("--memory-overcommit {text:?}: a factor from 1 to 100 (the observed high water times it), or `none` (reserve the declared limit)"),
        },
    };
    config.jobs.concurrency = args.job_concurrency.max(1);
    config.jobs.lease = Duration::from(args.job_lease);
    config.jobs.retention = Duration::from(args.job_retention);
    config.jobs.queue_limits = parse_limits("--queue-limit", &args.queue_limits)?;
    config.jobs.type_limits = parse_limits("--type-limit", &args.type_limits)?;
    config.inbox_retention = Duration::from(args.inbox_retention);
    config.outbox.concurrency = args.message_concurrency.max(1);
    for sink in &args.sinks {
        let (name, spec) = sink.split_once('=').with_context(|| format!("--sink {sink:?}: expected NAME=KIND:TARGET"))?;
        let parsed = spec.parse().map_err(|e: String| anyhow::anyhow!("--sink {name}: {e}"))?;
        config.outbox.sinks.insert(name.to_string(), parsed);
    }
    if shared_store {
        let lease = Duration::from(args.lease).max(Duration::from_millis(100));
        let placement = crate::cluster::placement::by_name(&args.placement).map_err(|e| anyhow::anyhow!("--placement: {e}"))?;
        config.cluster = Some(crate::cluster::ClusterConfig {
            host_id: args.host_id.clone(),
            api: addr.to_string(),
            peer_listen: args.peer_listen.clone(),
            peer_advertise: args.peer_advertise.clone(),
            lease,
            heartbeat: lease / 10,
            placement: placement.into(),
            rebalance: args.rebalance.then(|| Duration::from(args.rebalance_interval).max(Duration::from_millis(100))),
            repartition: args.repartition.then(|| Duration::from(args.repartition_interval).max(Duration::from_millis(100))),
        });
    } else if args.host_id.is_some() {
        anyhow::bail!("--host-id names a host in a cluster, and the SQLite store is single-host: pass --store postgres://… or redis://… too");
    }
    Ok(config)
}

/// `serve --deploy` and `--projection`: each file deployed (or left alone,
/// see [`deploy_at_start`]) and each projection declared, saying which.
async fn deploy_and_declare(node: &Node, args: &ServeArgs) -> anyhow::Result<()> {
    let host = node.host();
    for spec in &args.deploys {
        let (actor_type, file) =
            spec.split_once('=').with_context(|| format!("--deploy {spec:?}: expected TYPE=FILE.wasm"))?;
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        match deploy_at_start(host, actor_type, bytes).await.with_context(|| format!("deploying {file} as `{actor_type}`"))? {
            StartDeploy::Deployed(version) => println!("deployed {actor_type} v{version} from {file}"),
            StartDeploy::Known(version) => println!("{actor_type}: {file} is v{version}, already deployed; v{} stays active", host.active_version(actor_type)?.version),
            StartDeploy::RolledBack { active, newest } => println!(
                "{actor_type}: left at v{active}, which you rolled back to (v{newest} is newer); {file} is not deployed (`quark deploy` does)"
            ),
        }
    }
    for spec in &args.projections {
        let def = parse_projection_spec(spec)?;
        let name = def.name.clone();
        node.projections().create(def).await.with_context(|| format!("declaring projection {name}"))?;
        println!("projection {spec}");
    }
    Ok(())
}

/// Locks `data_dir` for this process: SQLite is single-host, so a second
/// `quark serve` on the same directory is refused (it would activate the
/// same actors and overwrite this host's commits). The OS releases the
/// lock when the process ends, even on `kill -9`.
fn lock_sqlite_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join("quark.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `quark serve` is using the SQLite store in {}: the embedded store is single-host. Stop that host, \
             give this one its own --data-dir, or run several hosts on one shared store with --store postgres://… or redis://…",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
