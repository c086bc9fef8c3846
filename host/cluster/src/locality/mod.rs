//! Locality-aware repartitioning (issue 18): actors that call each other
//! a lot move to the same host.
//!
//! - **Sampling** ([`edges`]): the router counts every actor-to-actor
//!   call (ask, tell, outbox delivery) on the calling side into a bounded
//!   edge table, and whether it crossed hosts. Each window (the
//!   repartition interval; 10 s when repartitioning is off) the counts
//!   halve, and the window's totals give the remote-call fraction
//!   (`/metrics`: `quark_remote_call_fraction`).
//! - **Pairing** (`quark serve --repartition`, off by default as in
//!   Orleans; `--repartition-interval`, 60 s): each period a host picks
//!   the peer its sampled calls cross to most and offers it an exchange:
//!   its actors on those edges, its edges, its activations and its memory
//!   room. The peer merges the offer with its own edges and plans the
//!   swaps ([`partition`]: greedy, heap-based, within a balance tolerance
//!   and both hosts' room below their high watermarks), answers the plan,
//!   and each host migrates its own side of it ([`crate::migration`]).
//! - **Not oscillating**: a host that took part in an exchange sits out
//!   the next period; an actor moved by one is anchored (not moved again)
//!   for [`ANCHOR_PERIODS`] periods; a round moves at most
//!   [`MAX_MOVES`]; and a move must gain a share of the actor's own
//!   traffic, so uniform traffic moves nothing.
//!
//! [`crate::Cluster::graph`] (`GET /v1/cluster/graph`) reads it out.

pub mod edges;
pub mod partition;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quark_core::ActorError;
use quark_core::id::ActorId;
use quark_runtime::memory::HIGH_WATERMARK;
use serde::{Deserialize, Serialize};

use self::edges::Edges;
use self::partition::{Pair, Vertex};
use crate::migration::MIGRATION_DRAIN;
use crate::owners::Owner;
use crate::{Cluster, Inner};

/// The repartition period by default (Orleans: 1–2 minutes).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The sampling window while repartitioning is off.
const WINDOW_WHEN_OFF: Duration = Duration::from_secs(10);
/// Most activations one exchange moves (both ways).
pub const MAX_MOVES: usize = 256;
/// Periods an actor moved by an exchange stays where it went.
pub const ANCHOR_PERIODS: u32 = 3;
/// Edges a host offers a peer at most.
const OFFERED_EDGES: usize = 4096;
/// Exchanges kept for the graph view.
const RECENT_EXCHANGES: usize = 16;
/// Edges each host shows in the graph view.
const SHOWN_EDGES: usize = 50;

/// What a host keeps for locality.
pub(crate) struct Locality {
    pub(crate) edges: Edges,
    /// The period; `None`: this host samples but takes part in no exchange.
    repartition: Option<Duration>,
    /// Actors moved by an exchange, and when.
    anchored: Mutex<HashMap<ActorId, Instant>>,
    /// When this host last took part in an exchange.
    last_exchange: Mutex<Option<Instant>>,
    /// Set while an exchange of this host's is in progress.
    busy: AtomicBool,
    /// Cleared to hold exchanges at run time ([`Cluster::set_repartitioning`]).
    enabled: AtomicBool,
    recent: Mutex<VecDeque<Exchange>>,
}

impl Locality {
    pub(crate) fn new(repartition: Option<Duration>) -> Self {
        Locality {
            edges: Edges::new(edges::DEFAULT_CAPACITY),
            repartition,
            anchored: Mutex::default(),
            last_exchange: Mutex::default(),
            busy: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            recent: Mutex::default(),
        }
    }

    fn window(&self) -> Duration {
        self.repartition.unwrap_or(WINDOW_WHEN_OFF)
    }

    /// Takes the exchange slot, unless one is in progress or this host
    /// took part in one less than a period ago.
    fn take_slot(&self) -> Option<Slot<'_>> {
        let period = self.repartition?;
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        if self.last_exchange.lock().is_some_and(|at| at.elapsed() < period) {
            return None;
        }
        (!self.busy.swap(true, Ordering::AcqRel)).then_some(Slot(self))
    }

    fn movable(&self, actor: &ActorId) -> bool {
        let Some(period) = self.repartition else { return false };
        let mut anchored = self.anchored.lock();
        anchored.retain(|_, at| at.elapsed() < period * ANCHOR_PERIODS);
        !anchored.contains_key(actor)
    }

    /// Anchors and forgets the actors an exchange moved, starts this
    /// host's cooldown, and keeps the exchange for the graph view (the
    /// planning side keeps it, so that it shows once).
    fn record(&self, exchange: Option<Exchange>, moved: &HashSet<ActorId>) {
        let now = Instant::now();
        self.anchored.lock().extend(moved.iter().map(|a| (a.clone(), now)));
        self.edges.forget(moved);
        *self.last_exchange.lock() = Some(now);
        let Some(exchange) = exchange else { return };
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_EXCHANGES {
            recent.pop_front();
        }
        recent.push_back(exchange);
    }
}

/// The exchange slot, released on drop.
struct Slot<'a>(&'a Locality);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// A finished exchange between two hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exchange {
    /// When it was planned, ms since the epoch.
    pub at_ms: i64,
    /// The host that offered it.
    pub initiator: String,
    /// The host that planned it.
    pub responder: String,
    /// Actors moved from the initiator to the responder.
    pub to_responder: usize,
    /// Actors moved the other way.
    pub to_initiator: usize,
}

/// One host's actor on the offered edges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OfferedActor {
    id: String,
    reserved: u64,
    movable: bool,
}

/// What the initiator sends its peer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Offer {
    from: String,
    actors: Vec<OfferedActor>,
    edges: Vec<(String, String, f64)>,
    activations: usize,
    room: u64,
}

/// The plan the peer answers (empty: it declined).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Plan {
    to_responder: Vec<String>,
    to_initiator: Vec<String>,
}

/// A host's figures for the graph view.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HostFigures {
    calls: u64,
    remote: u64,
    window_s: f64,
    edges: Vec<EdgeView>,
    exchanges: Vec<Exchange>,
}

/// What travels in a [`crate::wire::Frame::Locality`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Question {
    /// Plan an exchange with the sender.
    Exchange(Offer),
    /// This host's figures, for the graph view.
    Figures,
}

/// The cluster's call graph as sampled (`GET /v1/cluster/graph`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphView {
    /// The share of the last window's actor-to-actor calls, over every
    /// host that answered, that crossed hosts.
    pub remote_fraction: f64,
    /// Each host's share.
    pub hosts: Vec<HostFraction>,
    /// The hottest edges (each host's heaviest).
    pub edges: Vec<EdgeView>,
    /// Recent exchanges, as each host recorded them.
    pub exchanges: Vec<Exchange>,
}

/// One host's remote-call fraction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostFraction {
    /// Its id.
    pub id: String,
    /// The share of its last window's actor-to-actor calls that crossed hosts.
    pub remote_fraction: f64,
    /// Those calls.
    pub calls: u64,
}

/// An edge of the call graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeView {
    /// The calling actor.
    pub from: String,
    /// The called actor.
    pub to: String,
    /// Calls per second over the last window.
    pub calls_per_s: f64,
    /// Whether its last call crossed hosts.
    pub remote: bool,
}

fn fraction(calls: u64, remote: u64) -> f64 {
    if calls == 0 { 0.0 } else { remote as f64 / calls as f64 }
}

/// The sampling and exchange loop; ends with the cluster.
pub(crate) async fn run(inner: Weak<Inner>) {
    let Some(window) = inner.upgrade().map(|i| i.locality.window()) else { return };
    loop {
        // Up to a fifth of the period either way, so that hosts do not act in step.
        tokio::time::sleep(window.mul_f64(0.8 + 0.4 * (quark_core::time::now_ms() % 1000) as f64 / 1000.0)).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.locality.edges.roll();
        let last = inner.locality.edges.last_window();
        if let Some(host) = inner.host() {
            host.metrics().set_remote_call_fraction(fraction(last.calls, last.remote));
        }
        let cluster = Cluster { inner };
        match cluster.repartition_once().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "repartitioned: moved actors to the hosts they talk to"),
            Err(e) => tracing::warn!(error = %e, "repartitioning failed; trying again next period"),
        }
    }
}

/// Where an actor is, as this host knows.
fn host_of<'a>(inner: &'a Inner, actor: &ActorId) -> Option<std::borrow::Cow<'a, str>> {
    match inner.owners.get(actor)? {
        Owner::Here { .. } => Some(std::borrow::Cow::Borrowed(inner.info.id.as_str())),
        Owner::There { host } => Some(std::borrow::Cow::Owned(host)),
    }
}

impl Inner {
    /// Counts a call from `caller` to `target`, which runs on `target_host`.
    pub(crate) fn sample_call(&self, caller: &ActorId, target: &ActorId, target_host: &str) {
        // A caller this host does not know runs here (its turn made the call).
        let remote = match host_of(self, caller) {
            Some(host) => host != target_host,
            None => target_host != self.info.id,
        };
        self.locality.edges.record(caller, target, remote);
    }

    /// This host's room below its high watermark, bytes.
    fn room(&self) -> u64 {
        let Some(host) = self.host() else { return 0 };
        let memory = host.load();
        ((memory.memory_budget as f64 * HIGH_WATERMARK) as u64).saturating_sub(memory.memory_reserved)
    }

    /// Answers a peer's locality question.
    pub(crate) async fn answer_locality(self: std::sync::Arc<Self>, question: &[u8]) -> Result<Vec<u8>, ActorError> {
        let question: Question = postcard::from_bytes(question).map_err(|e| ActorError::bad_request(format!("a locality question that does not decode: {e}")))?;
        let answer = match question {
            Question::Figures => postcard::to_allocvec(&self.figures()),
            Question::Exchange(offer) => postcard::to_allocvec(&self.plan_exchange(offer)),
        };
        answer.map_err(|e| ActorError::internal(format!("encoding a locality answer: {e}")))
    }

    fn figures(&self) -> HostFigures {
        let last = self.locality.edges.last_window();
        let window_s = self.locality.window().as_secs_f64();
        HostFigures {
            calls: last.calls,
            remote: last.remote,
            window_s,
            edges: self
                .locality
                .edges
                .heaviest(SHOWN_EDGES)
                .into_iter()
                .map(|e| EdgeView { from: e.from.to_string(), to: e.to.to_string(), calls_per_s: e.last_window as f64 / window_s, remote: e.remote })
                .collect(),
            exchanges: self.locality.recent.lock().iter().cloned().collect(),
        }
    }

    /// Plans an exchange with `offer`'s sender, starts moving this host's
    /// side of it, and answers the sender's side. Declines (an empty
    /// plan) when this host does not repartition, or is busy or cooling.
    fn plan_exchange(self: &std::sync::Arc<Self>, offer: Offer) -> Plan {
        let Some(slot) = self.locality.take_slot() else { return Plan::default() };
        let Some(host) = self.host() else { return Plan::default() };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut vertices: Vec<Vertex> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        let mut add = |id: &str, vertex: Vertex, vertices: &mut Vec<Vertex>| -> usize {
            *index.entry(id.to_string()).or_insert_with(|| {
                vertices.push(vertex);
                ids.push(id.to_string());
                vertices.len() - 1
            })
        };
        for actor in &offer.actors {
            add(&actor.id, Vertex { side: Some(0), reserved: actor.reserved, movable: actor.movable }, &mut vertices);
        }
        let reserved: HashMap<String, u64> = host.actors().into_iter().map(|a| (a.id, a.reserved_bytes)).collect();
        let mine = self.locality.edges.heaviest(OFFERED_EDGES);
        let mut edges = Vec::with_capacity(offer.edges.len() + mine.len());
        let mut vertex_of = |id: &str, vertices: &mut Vec<Vertex>| -> usize {
            let actor = ActorId::parse(id).ok();
            let here = actor.as_ref().and_then(|a| host_of(self, a)).is_some_and(|h| h == self.info.id.as_str());
            let vertex = if here {
                let movable = actor.as_ref().is_some_and(|a| self.locality.movable(a));
                Vertex { side: Some(1), reserved: reserved.get(id).copied().unwrap_or(0), movable }
            } else {
                Vertex { side: None, reserved: 0, movable: false }
            };
            add(id, vertex, vertices)
        };
        for (from, to, w) in &offer.edges {
            let (a, b) = (vertex_of(from, &mut vertices), vertex_of(to, &mut vertices));
            edges.push((a, b, *w));
        }
        for e in &mine {
            let (a, b) = (vertex_of(e.from.as_str(), &mut vertices), vertex_of(e.to.as_str(), &mut vertices));
            edges.push((a, b, e.weight));
        }
        let pair = Pair { activations: [offer.activations, host.actors().len()], room: [offer.room, self.room()] };
        let [to_responder, to_initiator] = partition::plan(&vertices, &edges, &pair, MAX_MOVES);
        let plan = Plan {
            to_responder: to_responder.iter().map(|&i| ids[i].clone()).collect(),
            to_initiator: to_initiator.iter().map(|&i| ids[i].clone()).collect(),
        };
        let exchange = Exchange {
            at_ms: quark_core::time::now_ms(),
            initiator: offer.from.clone(),
            responder: self.info.id.clone(),
            to_responder: plan.to_responder.len(),
            to_initiator: plan.to_initiator.len(),
        };
        // This host's side moves in the background; the slot is held until it is done.
        let (cluster, to, moving) = (Cluster { inner: self.clone() }, offer.from, plan.to_initiator.clone());
        std::mem::forget(slot);
        tokio::spawn(async move {
            let _slot = Slot(&cluster.inner.locality);
            let moved = cluster.move_all(&moving, &to).await;
            cluster.inner.locality.record(Some(exchange), &moved);
        });
        plan
    }
}

impl Cluster {
    /// Holds (`false`) or resumes (`true`) this host's part in exchanges,
    /// offered and answered; sampling goes on. For a host started with a
    /// repartition period: measuring one placement before and after
    /// (the locality benchmark), or pausing moves during an incident.
    pub fn set_repartitioning(&self, on: bool) {
        self.inner.locality.enabled.store(on, Ordering::Release);
    }

    /// Migrates each of `actors` to `to`; the ones that moved.
    async fn move_all(&self, actors: &[String], to: &str) -> HashSet<ActorId> {
        let mut moved = HashSet::new();
        for actor in actors {
            let Ok(id) = ActorId::parse(actor) else { continue };
            match self.migrate(&id, to, MIGRATION_DRAIN).await {
                Ok(_) => {
                    moved.insert(id);
                }
                Err(e) => tracing::debug!(actor = %actor, to, error = %e, "the repartitioner did not move an actor"),
            }
        }
        if let Some(host) = self.inner.host() {
            host.metrics().record_locality_moves(moved.len() as u64);
        }
        moved
    }

    /// One round as the initiator: offers the peer this host's sampled
    /// calls cross to most an exchange, and moves this host's side of the
    /// plan. How many actors this host moved.
    pub async fn repartition_once(&self) -> Result<usize, ActorError> {
        let inner = &self.inner;
        if inner.standing().is_none() || inner.closing.load(Ordering::Acquire) {
            return Ok(0);
        }
        let Some(slot) = inner.locality.take_slot() else { return Ok(0) };
        let Some(host) = inner.host() else { return Ok(0) };
        let edges = inner.locality.edges.heaviest(OFFERED_EDGES);
        let mut traffic: HashMap<String, f64> = HashMap::new();
        for e in &edges {
            let (from, to) = (host_of(inner, &e.from), host_of(inner, &e.to));
            let me = inner.info.id.as_str();
            match (from.as_deref(), to.as_deref()) {
                (Some(a), Some(b)) if a == me && b != me => *traffic.entry(b.to_string()).or_default() += e.weight,
                (Some(a), Some(b)) if b == me && a != me => *traffic.entry(a.to_string()).or_default() += e.weight,
                _ => {}
            }
        }
        let Some((peer_id, _)) = traffic.into_iter().filter(|(id, _)| inner.peers.reachable(id)).max_by(|a, b| a.1.total_cmp(&b.1)) else {
            return Ok(0);
        };
        let Some(peer) = inner.peers.get(&peer_id).filter(|p| p.usable()) else { return Ok(0) };
        let reserved: HashMap<String, u64> = host.actors().into_iter().map(|a| (a.id, a.reserved_bytes)).collect();
        let mut offered: HashMap<String, OfferedActor> = HashMap::new();
        for e in &edges {
            for actor in [&e.from, &e.to] {
                if host_of(inner, actor).is_some_and(|h| h == inner.info.id.as_str()) {
                    let id = actor.to_string();
                    let movable = inner.locality.movable(actor);
                    offered.entry(id.clone()).or_insert_with(|| OfferedActor { reserved: reserved.get(&id).copied().unwrap_or(0), movable, id });
                }
            }
        }
        let offer = Offer {
            from: inner.info.id.clone(),
            actors: offered.into_values().collect(),
            edges: edges.iter().map(|e| (e.from.to_string(), e.to.to_string(), e.weight)).collect(),
            activations: reserved.len(),
            room: inner.room(),
        };
        let question = postcard::to_allocvec(&Question::Exchange(offer)).map_err(|e| ActorError::internal(format!("encoding an offer: {e}")))?;
        let plan: Plan = match peer.link().locality(question, Instant::now() + Duration::from_secs(5)).await {
            Ok(crate::wire::Outcome::Ok { reply, .. }) => {
                postcard::from_bytes(&reply).map_err(|e| ActorError::internal(format!("a plan that does not decode: {e}")))?
            }
            other => return Err(ActorError::unavailable(format!("{peer_id} did not answer the exchange: {other:?}"))),
        };
        if plan.to_responder.is_empty() && plan.to_initiator.is_empty() {
            return Ok(0);
        }
        let moved = self.move_all(&plan.to_responder, &peer_id).await;
        inner.locality.record(None, &moved);
        drop(slot);
        Ok(moved.len())
    }

    /// The call graph as this host and its peers sampled it.
    pub async fn graph(&self) -> GraphView {
        let inner = &self.inner;
        let question = postcard::to_allocvec(&Question::Figures).unwrap_or_default();
        let asked = inner.peers.usable().into_iter().map(|peer| {
            let answer = peer.link().locality(question.clone(), Instant::now() + Duration::from_secs(2));
            async move { (peer.id.clone(), answer.await) }
        });
        let mut figures = vec![(inner.info.id.clone(), inner.figures())];
        for (id, answer) in futures::future::join_all(asked).await {
            if let Ok(crate::wire::Outcome::Ok { reply, .. }) = answer
                && let Ok(f) = postcard::from_bytes::<HostFigures>(&reply)
            {
                figures.push((id, f));
            }
        }
        figures.sort_by(|a, b| a.0.cmp(&b.0));
        let (calls, remote) = figures.iter().fold((0, 0), |(c, r), (_, f)| (c + f.calls, r + f.remote));
        let mut edges: Vec<EdgeView> = figures.iter().flat_map(|(_, f)| f.edges.iter().cloned()).collect();
        edges.sort_by(|a, b| b.calls_per_s.total_cmp(&a.calls_per_s));
        edges.truncate(SHOWN_EDGES);
        let mut exchanges: Vec<Exchange> = figures.iter().flat_map(|(_, f)| f.exchanges.iter().cloned()).collect();
        exchanges.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        GraphView {
            remote_fraction: fraction(calls, remote),
            hosts: figures.iter().map(|(id, f)| HostFraction { id: id.clone(), remote_fraction: fraction(f.calls, f.remote), calls: f.calls }).collect(),
            edges,
            exchanges,
        }
    }
}
