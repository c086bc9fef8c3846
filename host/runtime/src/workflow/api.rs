//! What the HTTP API and the CLI do with workflows: start, status,
//! signal, cancel, history, list, and the replay check of a new version.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::driver::{execute, load_steps};
use super::run::Stop;
use super::{SignalRequest, StartRequest, WorkflowStatus, method};
use crate::activation::ActivationShared;
use crate::{ActorError, ActorId, Host};

/// A workflow in a list.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowSummary {
    /// Its id.
    pub id: String,
    /// Its workflow type.
    #[serde(rename = "type")]
    pub workflow_type: String,
    /// Where it is.
    pub status: WorkflowStatus,
    /// The version it runs on.
    pub version: u64,
    /// When its status last changed, ms since the epoch.
    pub updated_ms: i64,
}

/// What `quark workflow check` found.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowCheck {
    /// The workflow type.
    #[serde(rename = "type")]
    pub workflow_type: String,
    /// The version the histories were replayed against.
    pub version: u64,
    /// Histories replayed (the running instances').
    pub checked: usize,
    /// Those that diverged, with the first divergence of each.
    pub divergences: Vec<WorkflowDivergence>,
}

/// The first step where a recorded history and the new code disagree.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowDivergence {
    /// The instance.
    pub id: String,
    /// Which step, what was recorded and what the new code asked for.
    pub message: String,
}

/// Most status events one list reads per workflow type.
const LIST_EVENTS: usize = 100_000;

impl Host {
    /// The deployed types that are workflows, sorted.
    pub fn workflow_types(&self) -> Vec<String> {
        self.registry().type_names().into_iter().filter(|t| self.registry().active(t).is_ok_and(|v| v.pre.is_workflow())).collect()
    }

    fn workflow_type(&self, workflow_type: &str) -> Result<(), ActorError> {
        if self.registry().active(workflow_type)?.pre.is_workflow() {
            return Ok(());
        }
        Err(ActorError::bad_request(format!(
            "`{workflow_type}` is an actor type, not a workflow: a workflow exports `{}`",
            crate::capabilities::WORKFLOW_EXPORT
        )))
    }

    /// Starts workflow `id` of `workflow_type` with `input`, or returns the
    /// instance that has that id already (idempotent): its status.
    pub async fn start_workflow(&self, workflow_type: &str, id: &str, input: Vec<u8>) -> Result<Vec<u8>, ActorError> {
        self.workflow_type(workflow_type)?;
        let actor = ActorId::new(workflow_type, id)?;
        let body = serde_json::to_vec(&StartRequest { input, parent: None }).unwrap_or_default();
        self.ask(actor, method::START, body).await
    }

    /// The instance `id` names: `type/id`, or an id looked up among the
    /// workflow types (the first that has it). An instance's start commits
    /// its first status event, so the head of its journal (one row, read
    /// without activating it) says whether it exists.
    async fn workflow_ask(&self, id: &str, workflow_method: &str, body: Vec<u8>) -> Result<Vec<u8>, ActorError> {
        if id.contains('/') {
            let actor = ActorId::parse(id)?;
            self.workflow_type(actor.actor_type())?;
            return self.ask(actor, workflow_method, body).await;
        }
        for workflow_type in self.workflow_types() {
            let actor = ActorId::new(&workflow_type, id)?;
            if self.store().journal_head(&actor).await? > 0 {
                return self.ask(actor, workflow_method, body).await;
            }
        }
        Err(ActorError::not_found(format!("no workflow `{id}` was started (workflow types: {})", self.workflow_types().join(", "))))
    }

    /// The status of workflow `id` (`type/id`, or an id).
    pub async fn workflow_status(&self, id: &str) -> Result<Vec<u8>, ActorError> {
        self.workflow_ask(id, method::STATUS, Vec::new()).await
    }

    /// The current run's history of workflow `id`.
    pub async fn workflow_history(&self, id: &str) -> Result<Vec<u8>, ActorError> {
        self.workflow_ask(id, method::HISTORY, Vec::new()).await
    }

    /// Sends signal `name` to workflow `id`; `conflict` once it finished.
    pub async fn signal_workflow(&self, id: &str, name: &str, payload: Vec<u8>) -> Result<Vec<u8>, ActorError> {
        if name.is_empty() || name.len() > 255 {
            return Err(ActorError::bad_request("a signal name must be 1 to 255 bytes"));
        }
        let body = serde_json::to_vec(&SignalRequest { name: name.to_string(), payload }).unwrap_or_default();
        self.workflow_ask(id, method::SIGNAL, body).await
    }

    /// Requests the cancellation of workflow `id`: its waits return the
    /// `cancelled` error, so it can compensate and end `cancelled`.
    pub async fn cancel_workflow(&self, id: &str) -> Result<Vec<u8>, ActorError> {
        self.workflow_ask(id, method::CANCEL, Vec::new()).await
    }

    /// Workflows by their last status change, newest first, optionally
    /// of one status and type.
    pub async fn list_workflows(&self, status: Option<WorkflowStatus>, workflow_type: Option<&str>) -> Result<Vec<WorkflowSummary>, ActorError> {
        let mut latest: BTreeMap<String, WorkflowSummary> = BTreeMap::new();
        for t in self.workflow_types().into_iter().filter(|t| workflow_type.is_none_or(|w| w == t)) {
            for positioned in self.store().read_type_events(&t, 0, LIST_EVENTS).await? {
                let Some(s) = positioned.event.event_type.strip_prefix("workflow.").and_then(WorkflowStatus::parse) else { continue };
                let version = serde_json::from_slice::<serde_json::Value>(&positioned.event.data)
                    .ok()
                    .and_then(|d| d["version"].as_u64())
                    .unwrap_or(0);
                let id = positioned.actor.split_once('/').map_or(positioned.actor.as_str(), |(_, k)| k).to_string();
                let summary = WorkflowSummary { id, workflow_type: t.clone(), status: s, version, updated_ms: positioned.event.recorded_at_ms };
                latest.insert(positioned.actor, summary);
            }
        }
        let mut list: Vec<WorkflowSummary> = latest.into_values().filter(|w| status.is_none_or(|s| w.status == s)).collect();
        list.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Replays the history of every running instance of `workflow_type`
    /// against `version` (which need not be active) without running
    /// anything, and reports the first divergence of each.
    pub async fn check_workflow(&self, workflow_type: &str, version: u64) -> Result<WorkflowCheck, ActorError> {
        self.workflow_type(workflow_type)?;
        let loaded = self.load_component_version(workflow_type, version).await?;
        if !loaded.pre.is_workflow() {
            return Err(ActorError::bad_request(format!("{workflow_type} v{version} is not a workflow")));
        }
        let running = self.list_workflows(Some(WorkflowStatus::Running), Some(workflow_type)).await?;
        let mut check = WorkflowCheck { workflow_type: workflow_type.to_string(), version, checked: 0, divergences: Vec::new() };
        for w in running {
            let actor = ActorId::new(workflow_type, &w.id)?;
            // A sandbox activation: the committed history, nothing written.
            let shared = Arc::new(ActivationShared::new(actor.clone()));
            let committed = self.store().load_state(&actor).await?.into_iter().collect();
            {
                let mut state = shared.state.lock();
                state.committed = committed;
                state.loaded = true;
            }
            let Some(mut record) = super::driver::read_record(&shared)? else { continue };
            let steps = load_steps(&shared, &record)?;
            record.version = version;
            check.checked += 1;
            let (_, ended) = execute(self, &shared, record, steps, true).await?;
            let message = match ended {
                super::driver::Ended::Stopped(Stop::Diverged(m)) => m,
                super::driver::Ended::Broken(e) => format!("the code failed on replay: {}", e.message),
                _ => continue,
            };
            check.divergences.push(WorkflowDivergence { id: w.id, message });
        }
        Ok(check)
    }
}
