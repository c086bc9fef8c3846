//! Journaling and event sourcing, the host side beyond the turn: the audit
//! trail, replays in a sandbox and on-demand snapshots (projections run
//! in the `quark` server).
//!
//! Appends themselves are part of the turn (`capabilities/journal.rs`) and
//! commit with it; event-sourced actors are rebuilt on activation
//! (`runtime/aggregate.rs`). See `docs/journal.md` for the whole picture.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::ActorError;
use crate::id::ActorId;
use crate::aggregate::{self, RebuildError, SnapshotUse};
use crate::{Control, Host, Request, activation, instance};
use crate::storage::EventRecord;

/// Most events one journal listing returns.
pub const MAX_LISTING: usize = 10_000;

/// One page of an actor's journal, as `quark journal` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalPage {
    /// The actor.
    pub actor: String,
    /// Its current version (last committed event).
    pub version: u64,
    /// The events asked for, oldest first.
    pub events: Vec<EventRecord>,
}

/// Which point of an actor's history a replay stops at.
#[derive(Debug, Clone, Copy)]
pub enum ReplayTarget {
    /// After the event with this version.
    Version(u64),
    /// After the last event recorded at or before this time (ms since the epoch).
    At(i64),
}

/// An actor's state at a point of its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayOutcome {
    /// The actor.
    pub actor: String,
    /// The version replayed to.
    pub version: u64,
    /// The component version that folded the events.
    pub component_version: u64,
    /// The version of the snapshot the replay started from (0: from the first event).
    pub from_snapshot: u64,
    /// What the actor's `snapshot` export returned (JSON, or `{"base64": …}`).
    #[serde(with = "quark_core::journal::json_or_base64")]
    pub state: Vec<u8>,
}

impl Host {
    /// Events `from..=to` of `actor` (at most `limit`), and its version.
    pub async fn journal(&self, actor: &ActorId, from: u64, to: Option<u64>, limit: usize) -> Result<JournalPage, ActorError> {
        let version = self.store().journal_head(actor).await?;
        let to = to.unwrap_or(u64::MAX);
        let limit = limit.clamp(1, MAX_LISTING);
        let mut events = if from > to { Vec::new() } else { self.store().read_events(actor, from.max(1), limit).await? };
        events.retain(|e| e.version <= to);
        Ok(JournalPage { actor: actor.to_string(), version, events })
    }

    /// Computes the state of an event-sourced actor at `target`, in a
    /// sandbox instance of `component_version` (default: the active one)
    /// that cannot touch live state, send messages or append events.
    pub async fn replay(&self, actor: &ActorId, target: ReplayTarget, component_version: Option<u64>) -> Result<ReplayOutcome, ActorError> {
        let loaded = match component_version {
            None => self.registry().active(actor.actor_type())?,
            Some(v) => self.load_component_version(actor.actor_type(), v).await?,
        };
        if !loaded.pre.is_event_sourced() {
            return Err(ActorError::rejected(format!(
                "{} v{} is not event-sourced (it does not export `{}`): there is nothing to replay",
                actor.actor_type(),
                loaded.info.version,
                crate::capabilities::AGGREGATE_EXPORT
            )));
        }
        let head = self.store().journal_head(actor).await?;
        let version = match target {
            ReplayTarget::Version(v) if v > head => {
                return Err(ActorError::bad_request(format!("{actor} is at version {head}; it cannot be replayed to version {v}")));
            }
            ReplayTarget::Version(v) => v,
            ReplayTarget::At(ms) => self.store().version_at(actor, ms).await?,
        };
        let manifest = &loaded.info.manifest;
        let shared = Arc::new(activation::ActivationShared::new(actor.clone()));
        let (store, bindings) = instance::instantiate_pre(self, &shared, &loaded.pre, manifest, 0, crate::turn::Execution::Sandbox).await?;
        let mut live = activation::Live { store, bindings, version: loaded.info.version };
        let snapshots = SnapshotUse::FromComponent(loaded.info.version);
        let rebuilt = match aggregate::rebuild(self, &mut live, actor, snapshots, version, manifest.turn_timeout).await {
            Err(RebuildError::SnapshotBroke(_)) => {
                let (store, bindings) = instance::instantiate_pre(self, &shared, &loaded.pre, manifest, 0, crate::turn::Execution::Sandbox).await?;
                live = activation::Live { store, bindings, version: loaded.info.version };
                aggregate::rebuild(self, &mut live, actor, SnapshotUse::None, version, manifest.turn_timeout).await
            }
            other => other,
        }
        .map_err(RebuildError::into_actor_error)?;
        let deadline = Instant::now() + manifest.turn_timeout;
        let state = aggregate::call_snapshot(&mut live, deadline, actor).await.map_err(|f| match f {
            instance::HandlerFailure::Returned(e) | instance::HandlerFailure::Broken(e) => e,
        })?;
        Ok(ReplayOutcome {
            actor: actor.to_string(),
            version: rebuilt.version,
            component_version: loaded.info.version,
            from_snapshot: rebuilt.snapshot_version,
            state,
        })
    }

    /// Snapshots an event-sourced actor now, in its turn order; returns
    /// the version the snapshot covers.
    pub async fn snapshot(&self, actor: &ActorId) -> Result<u64, ActorError> {
        let request = Request {
            target: actor.clone(),
            method: "(snapshot)".into(),
            payload: Vec::new(),
            chain: quark_core::ChainId::fresh(),
            caller: None,
            deadline: Instant::now() + self.config().call_timeout,
            control: Some(Box::new(Control::Snapshot)),
        };
        let reply = self.ask_request(request).await?;
        let value: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        Ok(value["version"].as_u64().unwrap_or(0))
    }
}
