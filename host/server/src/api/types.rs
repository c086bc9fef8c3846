//! The API's request and response bodies. The handlers serialize them and
//! the `quark` CLI deserializes them, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

pub use crate::projections::ProjectionInfo;
pub use crate::runtime::DeployOutcome;
pub use crate::runtime::journal::{JournalPage, ReplayOutcome};
pub use crate::runtime::table::ActivationInfo;
use crate::storage::ComponentVersion;
use crate::storage::jobs::JobRecord;
use crate::storage::outbox::OutboxRecord;

/// `GET /v1/components`: every deployed type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentList {
    /// One entry per actor type.
    pub components: Vec<ComponentSummary>,
}

/// One deployed type in a [`ComponentList`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// The actor type.
    #[serde(rename = "type")]
    pub actor_type: String,
    /// Its active version.
    pub active_version: u64,
    /// SHA-256 of the active version's bytes.
    pub hash: String,
}

/// `GET /v1/components/{type}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionList {
    /// The actor type.
    #[serde(rename = "type")]
    pub actor_type: String,
    /// The version that runs.
    pub active_version: u64,
    /// Every stored version, oldest first.
    pub versions: Vec<ComponentVersion>,
}

/// `POST /v1/components/{type}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolledBack {
    /// The actor type.
    #[serde(rename = "type")]
    pub actor_type: String,
    /// The version that runs now.
    pub active_version: u64,
    /// That version.
    pub version: ComponentVersion,
}

/// `GET /v1/actors`: this host's activations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActorList {
    /// One entry per activation.
    pub actors: Vec<ActivationInfo>,
}

/// `GET /v1/cluster`: every host, as any host sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// `cluster` on a shared store, `single-host` on SQLite.
    pub mode: String,
    /// The id of the host that answered.
    pub this: String,
    /// Every member, by id.
    pub hosts: Vec<HostView>,
}

/// One host of [`ClusterView`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostView {
    /// Its id.
    pub id: String,
    /// Where its API listens.
    pub api: String,
    /// Where other hosts reach it (empty until hosts call each other).
    pub peer: String,
    /// `joining`, `active`, `suspect`, `dead` or `leaving`.
    pub state: crate::storage::cluster::MemberState,
    /// Which start of this id it is.
    pub incarnation: i64,
    /// When it joined (ms since the epoch, the store's clock).
    pub started_at_ms: i64,
    /// Its last heartbeat (ms since the epoch, the store's clock).
    pub last_heartbeat_ms: i64,
    /// How long ago that was, by the store's clock.
    pub heartbeat_age_ms: i64,
    /// Activations it reported with its last heartbeat.
    pub activations: u64,
    /// Its memory: budget, reserved, used, RSS (bytes), sheds, refusals
    /// and migrations; per type for the answering host. The answering
    /// host's figures are live, the others' as of their last heartbeat.
    pub memory: crate::runtime::memory::MemoryReport,
}

impl From<&crate::storage::cluster::Member> for HostView {
    fn from(m: &crate::storage::cluster::Member) -> Self {
        HostView {
            id: m.host.id.clone(),
            api: m.host.api.clone(),
            peer: m.host.peer.clone(),
            state: m.effective_state(),
            incarnation: m.incarnation,
            started_at_ms: m.started_at_ms,
            last_heartbeat_ms: m.heartbeat_ms,
            heartbeat_age_ms: (m.read_at_ms - m.heartbeat_ms).max(0),
            activations: m.load.activations,
            memory: (&m.load).into(),
        }
    }
}

/// `POST /v1/snapshots/{type}/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotTaken {
    /// The actor.
    pub actor: String,
    /// The journal version the snapshot covers.
    pub version: u64,
}

/// `GET /v1/projections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectionList {
    /// Every projection with its checkpoint and lag.
    pub projections: Vec<ProjectionInfo>,
}

/// The body of `POST /v1/projections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewProjection {
    /// Its name.
    pub name: String,
    /// The actor type whose events it reads.
    pub source: String,
    /// The actor that receives them (`type/key`).
    pub target: String,
    /// The method that receives them (default `project`).
    pub method: Option<String>,
}

/// `POST /v1/jobs` with one job: the job, and whether it is new (`false`
/// when its idempotency key named a stored job).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobAdded {
    /// The job as stored.
    #[serde(flatten)]
    pub job: JobRecord,
    /// False when the job existed already.
    pub created: bool,
}

/// `POST /v1/jobs` with an array of jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobsAdded {
    /// Jobs in the request.
    pub count: usize,
    /// Of them, new (the others' idempotency keys named stored jobs).
    pub added: u64,
    /// Their ids, in the request's order.
    pub ids: Vec<String>,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobRecord>,
}

/// `DELETE /v1/jobs`, `DELETE /v1/outbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Purged {
    /// How many were deleted.
    pub purged: u64,
}

/// `GET /v1/outbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<OutboxRecord>,
}

/// `POST /v1/outbox/{id}/retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRetried {
    /// The message id.
    pub id: String,
    /// Always `pending`: the message is due again.
    pub status: String,
    /// How many messages had that id (one per sender).
    pub retried: u64,
}

/// `POST /v1/cluster/migrations`: move `actor` (`type/key`) to host `to`.
/// The answer is a [`crate::cluster::migration::Migrated`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationRequest {
    /// `type/key`.
    pub actor: String,
    /// The id of the host to move it to.
    pub to: String,
}
