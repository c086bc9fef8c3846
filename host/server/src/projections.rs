//! Projections (CQRS read models): every event of an actor type goes, in
//! order, to a method of one projection actor. The projection's checkpoint
//! moves in the same commit as that actor's turn, so each event is handled
//! exactly once even across crashes.
//!
//! A runner task per projection reads the journal after the checkpoint in
//! batches, wakes when a commit appended events (a [`CommitListener`]), or
//! every [`PROJECTION_POLL`] for commits made by other hosts, and backs off
//! while its target fails.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use quark_runtime::{CommitListener, CommittedTurn, Control, Host, Request};

use crate::error::{ActorError, ErrorKind};
use crate::id::{ActorId, validate_type_name};
use crate::storage::{CheckpointAdvance, EventRecord, PositionedEvent, ProjectionDef};

/// How long a projection waits for new events before looking anyway (a
/// commit on another host sends no wake-up here).
pub const PROJECTION_POLL: Duration = Duration::from_millis(500);

/// The method a projection calls unless told otherwise.
pub const DEFAULT_METHOD: &str = "project";

/// Events per projection turn: one commit moves the checkpoint past all of
/// them, so a busy source is followed in few turns.
pub const PROJECTION_BATCH: usize = 256;

/// Longest wait between retries of a failing projection turn.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often the lag is recounted from the store while catching up.
const LAG_REFRESH: Duration = Duration::from_millis(500);

/// What a runner knows about its projection.
pub(crate) struct ProjectionRunner {
    pub(crate) def: ProjectionDef,
    checkpoint: AtomicU64,
    lag: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A projection as `quark projections` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProjectionInfo {
    /// What it is.
    #[serde(flatten)]
    pub def: ProjectionDef,
    /// Global journal position of the last event it handled.
    pub checkpoint: u64,
    /// Events of its source type it has yet to handle.
    pub lag: u64,
    /// Why its last turn failed, if it did.
    pub last_error: Option<String>,
}

/// One event as a projection method receives it (inside
/// `{"projection": name, "events": [...]}`).
#[derive(Debug, Serialize)]
pub struct ProjectedEvent<'a> {
    /// Global journal position.
    pub position: u64,
    /// The actor whose stream it is in.
    pub actor: &'a str,
    /// The event.
    #[serde(flatten)]
    pub event: &'a EventRecord,
}

/// The payload of one projection turn.
pub fn projection_payload(name: &str, events: &[PositionedEvent]) -> Vec<u8> {
    let events: Vec<ProjectedEvent<'_>> =
        events.iter().map(|e| ProjectedEvent { position: e.position, actor: &e.actor, event: &e.event }).collect();
    serde_json::to_vec(&serde_json::json!({ "projection": name, "events": events })).unwrap_or_default()
}

/// The projections of one host: their runners, and the wake-up that
/// commits appending events send them. Cheap to clone.
#[derive(Clone)]
pub struct Projections(Arc<ProjectionsInner>);

pub(crate) struct ProjectionsInner {
    host: Host,
    runners: Mutex<HashMap<String, Arc<ProjectionRunner>>>,
    /// Counts journal events committed here; runners wait on it.
    commits: tokio::sync::watch::Sender<u64>,
}

impl CommitListener for ProjectionsInner {
    fn committed(&self, turn: &CommittedTurn<'_>) {
        if turn.events > 0 {
            self.commits.send_modify(|n| *n += turn.events);
        }
    }
}

impl Projections {
    /// Starts the runners of every stored projection beside `host`.
    pub(crate) async fn start(host: Host) -> Result<Projections, ActorError> {
        let inner = Arc::new(ProjectionsInner { host, runners: Mutex::default(), commits: tokio::sync::watch::Sender::new(0) });
        let listener: Arc<dyn CommitListener> = inner.clone();
        inner.host.add_commit_listener(&listener);
        let projections = Projections(inner);
        for status in projections.0.host.store().projections().await? {
            projections.start_projection(status.def, status.checkpoint);
        }
        Ok(projections)
    }

    /// Declares a projection and starts it; it catches up from the first
    /// event. Declaring the same one again changes nothing.
    pub async fn create(&self, def: ProjectionDef) -> Result<ProjectionInfo, ActorError> {
        if def.name.is_empty() || def.name.len() > 128 || !def.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ActorError::bad_request(format!(
                "bad projection name {:?}: use 1 to 128 letters, digits, `-`, `_` or `.`",
                def.name
            )));
        }
        validate_type_name(&def.source_type)?;
        let target = ActorId::parse(&def.target)?;
        let host = &self.0.host;
        host.active_version(target.actor_type())?;
        if def.method.is_empty() {
            return Err(ActorError::bad_request("a projection needs the method that receives its events"));
        }
        host.store().create_projection(&def).await?;
        self.start_projection(def.clone(), 0);
        Ok(self.list().await?.into_iter().find(|p| p.def.name == def.name).expect("just created"))
    }

    /// Stops and removes a projection (its target actor's state stays).
    pub async fn delete(&self, name: &str) -> Result<(), ActorError> {
        if !self.0.host.store().delete_projection(name).await? {
            return Err(ActorError::not_found(format!("no projection named `{name}`")));
        }
        self.0.runners.lock().remove(name);
        Ok(())
    }

    /// Every projection with its checkpoint and lag.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ActorError> {
        let host = &self.0.host;
        let mut out = Vec::new();
        for status in host.store().projections().await? {
            let lag = host.store().count_type_events(&status.def.source_type, status.checkpoint).await?;
            host.metrics().set_projection_lag(&status.def.name, lag);
            let last_error = self.0.runners.lock().get(&status.def.name).and_then(|r| r.last_error.lock().clone());
            out.push(ProjectionInfo { def: status.def, checkpoint: status.checkpoint, lag, last_error });
        }
        Ok(out)
    }

    fn start_projection(&self, def: ProjectionDef, checkpoint: u64) {
        let mut runners = self.0.runners.lock();
        if runners.contains_key(&def.name) {
            return;
        }
        let runner = Arc::new(ProjectionRunner {
            def: def.clone(),
            checkpoint: AtomicU64::new(checkpoint),
            lag: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        runners.insert(def.name.clone(), runner.clone());
        tokio::spawn(run(Arc::downgrade(&self.0), runner, self.0.commits.subscribe()));
    }
}

/// The runner loop; ends when the service is dropped or the projection removed.
/// The batch as a payload within `limit` bytes: halved until it fits. A
/// single event over the limit can never be delivered: the error says so,
/// and the projection stops instead of failing the same way for ever.
fn fit_batch(name: &str, mut events: Vec<PositionedEvent>, limit: usize) -> Result<(Vec<PositionedEvent>, Vec<u8>), String> {
    let mut payload = projection_payload(name, &events);
    while payload.len() > limit && events.len() > 1 {
        events.truncate(events.len() / 2);
        payload = projection_payload(name, &events);
    }
    if payload.len() > limit {
        let e = &events[0];
        return Err(format!(
            "the event at position {} ({} of {}) takes {} bytes as a projection payload, over the host's limit of {limit} \
             bytes (--max-payload): the projection stopped there; raise the limit and restart the host",
            e.position,
            e.event.event_type,
            e.actor,
            payload.len()
        ));
    }
    Ok((events, payload))
}

/// Takes the stored checkpoint of `runner`'s projection as where to go on.
async fn reload_checkpoint(host: &Host, runner: &ProjectionRunner) {
    if let Ok(stored) = host.store().projections().await
        && let Some(p) = stored.into_iter().find(|p| p.def.name == runner.def.name)
    {
        runner.checkpoint.store(p.checkpoint, Ordering::Release);
    }
}

async fn run(projections: Weak<ProjectionsInner>, runner: Arc<ProjectionRunner>, mut commits: tokio::sync::watch::Receiver<u64>) {
    let def = &runner.def;
    let mut backoff = Duration::from_millis(20);
    let mut lag_counted = Instant::now() - LAG_REFRESH;
    loop {
        let Some(service) = projections.upgrade() else { return };
        if !service.runners.lock().get(&def.name).is_some_and(|r| Arc::ptr_eq(r, &runner)) {
            return;
        }
        let host = service.host.clone();
        drop(service);
        let checkpoint = runner.checkpoint.load(Ordering::Acquire);
        let events = match host.store().read_type_events(&def.source_type, checkpoint, PROJECTION_BATCH).await {
            Ok(events) => events,
            Err(e) => {
                *runner.last_error.lock() = Some(format!("reading the journal: {e}"));
                drop(host);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.position) else {
            runner.lag.store(0, Ordering::Relaxed);
            host.metrics().set_projection_lag(&def.name, 0);
            drop(host);
            commits.borrow_and_update();
            let _ = tokio::time::timeout(PROJECTION_POLL, commits.changed()).await;
            continue;
        };
        let target = match ActorId::parse(&def.target) {
            Ok(t) => t,
            Err(e) => {
                *runner.last_error.lock() = Some(e.to_string());
                return;
            }
        };
        let (events, payload) = match fit_batch(&def.name, events, host.config().max_payload) {
            Ok(fitted) => fitted,
            Err(message) => {
                tracing::error!(projection = %def.name, "{message}");
                *runner.last_error.lock() = Some(message);
                return;
            }
        };
        let last = events.last().map_or(last, |e| e.position);
        let request = Request {
            target,
            method: def.method.clone(),
            payload,
            chain: quark_core::ChainId::fresh(),
            caller: None,
            deadline: Instant::now() + host.config().call_timeout,
            control: Some(Box::new(Control::Checkpoint(CheckpointAdvance {
                projection: def.name.clone(),
                from: checkpoint,
                to: last,
            }))),
        };
        match host.ask_request(request).await {
            Ok(_) => {
                runner.checkpoint.store(last, Ordering::Release);
                *runner.last_error.lock() = None;
                backoff = Duration::from_millis(20);
                if lag_counted.elapsed() >= LAG_REFRESH {
                    lag_counted = Instant::now();
                    if let Ok(lag) = host.store().count_type_events(&def.source_type, last).await {
                        runner.lag.store(lag, Ordering::Relaxed);
                        host.metrics().set_projection_lag(&def.name, lag);
                    }
                }
            }
            Err(e) => {
                if e.kind != ErrorKind::Conflict {
                    tracing::warn!(projection = %def.name, target = %def.target, error = %e, "projection turn failed; retrying");
                    *runner.last_error.lock() = Some(e.to_string());
                }
                // The outcome may be unknown (a timeout can still commit):
                // the stored checkpoint says where to go on.
                reload_checkpoint(&host, &runner).await;
                drop(host);
                if e.kind != ErrorKind::Conflict {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
