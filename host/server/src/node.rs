//! A Quark node: the actor runtime and the services that run beside it.
//!
//! [`Node::start`] starts the runtime ([`Host`]) on a store, then the
//! services, each owning its state and settings and reaching actors only
//! through the runtime's router: the job runner ([`Jobs`]), the outbox
//! dispatcher and sinks ([`Outbox`]), the projection runners
//! ([`Projections`]) and the inbox expiry. They learn of commits on this
//! host through commit listeners, and of commits on other hosts through
//! the store's announcements or by polling.

use std::sync::Arc;
use std::time::Duration;

use quark_runtime::router::{LocalRouter, Router};
use quark_runtime::{Host, HostConfig};

use crate::cluster::{Cluster, ClusterConfig, ClusterRouter};
use crate::jobs::{Jobs, JobsConfig};
use crate::outbox::{Outbox, OutboxConfig};
use crate::projections::Projections;
use crate::storage::Store;

/// How long an inbox entry is kept unless configured (`--inbox-retention`).
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A node's settings: the runtime's and each service's.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The runtime's settings.
    pub host: HostConfig,
    /// The job runner's settings.
    pub jobs: JobsConfig,
    /// The outbox dispatcher's settings.
    pub outbox: OutboxConfig,
    /// How long an actor's inbox remembers a message id or idempotency key
    /// (a repeat within it gets the first reply without a turn).
    pub inbox_retention: Duration,
    /// Cluster membership, on a shared store; `None`: a host on its own.
    pub cluster: Option<ClusterConfig>,
}

impl NodeConfig {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> Self {
        NodeConfig {
            host: HostConfig::new(data_dir),
            jobs: JobsConfig::default(),
            outbox: OutboxConfig::default(),
            inbox_retention: DEFAULT_INBOX_RETENTION,
            cluster: None,
        }
    }
}

/// A running Quark node. Cheap to clone; the services stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Node {
    host: Host,
    jobs: Jobs,
    outbox: Outbox,
    projections: Projections,
    cluster: Option<Cluster>,
    started_at_ms: i64,
}

impl Node {
    /// Starts the runtime on `store` and the services beside it. With
    /// `config.cluster`, the host joins the cluster on the (shared) store
    /// first and routes every request to its actor's owner
    /// ([`ClusterRouter`]); otherwise every actor runs here ([`LocalRouter`]).
    pub async fn start(config: NodeConfig, store: Arc<dyn Store>) -> anyhow::Result<Node> {
        match config.cluster.clone() {
            Some(cluster) => {
                let router = Arc::new(ClusterRouter::new());
                Node::start_inner(config, store, router.clone(), Some((router, cluster))).await
            }
            None => Node::start_inner(config, store, Arc::new(LocalRouter), None).await,
        }
    }

    /// [`Node::start`] on a single host with the router every request goes
    /// through (`config.cluster` is ignored).
    pub async fn start_with_router(config: NodeConfig, store: Arc<dyn Store>, router: Arc<dyn Router>) -> anyhow::Result<Node> {
        Node::start_inner(config, store, router, None).await
    }

    async fn start_inner(
        mut config: NodeConfig,
        store: Arc<dyn Store>,
        router: Arc<dyn Router>,
        cluster: Option<(Arc<ClusterRouter>, ClusterConfig)>,
    ) -> anyhow::Result<Node> {
        config.host.sink_names = config.outbox.sinks.keys().cloned().collect();
        let host = Host::start_with_router(config.host, store, router).await?;
        // Joined before any service runs a turn: every activation claims
        // its actor and every commit is fenced from the first one on.
        let cluster = match cluster {
            Some((router, cluster)) => Some(Cluster::join(&host, &router, cluster).await?),
            None => None,
        };
        spawn_inbox_expiry(&host, config.inbox_retention);
        let projections = Projections::start(host.clone()).await?;
        if cluster.is_none()
            && let Some(store) = host.store().job_store()
        {
            // The only host of its store: what ran when it stopped died with it.
            match store.expire_leases(crate::storage::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "jobs left running by this host's previous process are due again"),
                Err(e) => tracing::warn!(error = %e, "could not take back the jobs left running; they run once their lease expires"),
            }
        }
        let jobs = Jobs::start(host.clone(), config.jobs).await;
        let outbox = Outbox::start(host.clone(), config.outbox).await;
        Ok(Node { host, jobs, outbox, projections, cluster, started_at_ms: crate::storage::now_ms() })
    }

    /// The actor runtime: deploys, calls, activations, journals.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Durable jobs.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The outbox: pending and dead messages.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Projections (CQRS read models).
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// When this node started (ms since the epoch).
    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// This host's part in a cluster, when it is a member.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Tells the other hosts of a cluster that a deploy or rollback here
    /// changed an active version, and waits until each serves it (see
    /// [`Cluster::versions_changed`]); the hosts that did not confirm.
    pub async fn versions_changed(&self) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.versions_changed().await,
            None => Vec::new(),
        }
    }

    /// Stops the work this host starts on its own, the jobs it claims and
    /// the outbox lanes it delivers, letting what runs finish (for at most
    /// [`crate::cluster::DEFAULT_DRAIN`] each): before it leaves a cluster.
    pub async fn stop_services(&self) {
        tokio::join!(self.jobs.stop(crate::cluster::DEFAULT_DRAIN), self.outbox.stop(crate::cluster::DEFAULT_DRAIN));
    }

    /// Prometheus text for `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        self.host.metrics().set_message_lanes_in_flight(self.outbox.lanes_in_flight());
        self.host.metrics_text()
    }
}

/// Forgets inbox entries past the retention, every tenth of it (at most
/// once a minute), for as long as the host lives.
fn spawn_inbox_expiry(host: &Host, retention: Duration) {
    spawn_sweep(host, retention, Duration::from_secs(60), move |host: Host| async move {
        let before = crate::storage::now_ms() - retention.as_millis() as i64;
        match host.store().expire_inbox(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "forgot inbox entries past their retention"),
            Err(e) => tracing::warn!(error = %e, "expiring inbox entries failed; retrying later"),
        }
    });
}

/// Runs `sweep` every tenth of `retention` (at least every 50 ms, at most
/// every `longest`), first after one period, for as long as the host lives.
pub(crate) fn spawn_sweep<F, Fut>(host: &Host, retention: Duration, longest: Duration, sweep: F)
where
    F: Fn(Host) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = host.downgrade();
    let period = (retention / 10).clamp(Duration::from_millis(50), longest.max(Duration::from_millis(50)));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(host) = weak.upgrade() else { break };
            sweep(host).await;
        }
    });
}

/// Calls `wake` on `target` whenever another host announces work (a
/// LISTEN or SUBSCRIBE stream). Ends, closing the stream's connection,
/// once the target is gone with its service (checked at least every 5 s).
pub(crate) fn spawn_wakeups<T: Send + Sync + 'static>(
    mut announcements: futures::stream::BoxStream<'static, ()>,
    target: std::sync::Weak<T>,
    wake: fn(&T),
) {
    tokio::spawn(async move {
        loop {
            let announced = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut announcements)).await;
            let Some(target) = target.upgrade() else { break };
            match announced {
                Ok(Some(())) => wake(&target),
                Ok(None) => break,
                Err(_idle) => {}
            }
        }
    });
}
