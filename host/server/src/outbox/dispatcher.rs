//! The dispatcher: one task per host that delivers outbox lanes (one
//! sender's messages to one destination), each lane's messages in order (an
//! actor's turn under the message id), many lanes at once. A lane a commit
//! on this host creates is leased to it in that commit and handed over at
//! once; other lanes (with older messages, retries, or other hosts' dead
//! leases) are claimed in batches. Delivered messages are deleted, and
//! lanes released, with its next claim. It wakes when a commit carried
//! messages (on this host, or on another, announced by PostgreSQL NOTIFY or
//! Redis PUBLISH), when a lane is done, at the next due time, and at least
//! every `message_poll`.

use std::sync::{Arc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::id::ActorId;
use quark_runtime::{Control, Host, InboxTurn, LaneTurn, Request};

use super::OutboxInner;
use crate::storage::outbox::{Destination, LaneClaim, LaneRelease, OutboxRecord};

/// Longest sleep between looks at the store, by default.
pub const POLL: Duration = Duration::from_secs(1);

/// Most lanes one claim takes.
pub const CLAIM_BATCH: usize = 256;

/// Most messages of one lane one claim takes.
pub const PER_LANE: usize = 32;

/// Most lanes in flight per host unless configured
/// ([`super::OutboxConfig::concurrency`]).
pub const DEFAULT_CONCURRENCY: usize = 512;

/// How long a claimed lane is this host's before another may deliver it.
pub const LEASE: Duration = Duration::from_millis(crate::storage::outbox::LANE_LEASE_MS as u64);

/// Longest delivered messages wait to be deleted with the next claim.
const WRITE_DELAY: Duration = Duration::from_millis(5);

/// What the next claim writes first: delivered messages and released lanes.
#[derive(Default)]
struct Done {
    delivered: Vec<String>,
    released: Vec<LaneRelease>,
    since: Option<Instant>,
}

/// A message delivered by this host.
#[derive(Debug, Clone)]
pub struct MessageDelivered {
    /// The message.
    pub id: String,
    /// From its send (in the sending turn) to its delivery, in ms.
    pub delay_ms: i64,
}

/// The dispatcher's shared state.
pub(crate) struct Dispatcher {
    wake: tokio::sync::Notify,
    in_flight: AtomicUsize,
    /// The last claim came back short: wait for a commit or a due time.
    short: AtomicBool,
    /// The store hands over the lanes this host's commits open.
    new_lanes_here: AtomicBool,
    done: Mutex<Done>,
    /// Lanes being delivered here that hold every pending message of their
    /// lane, by lane id: messages later commits on this host add to them
    /// follow without a claim.
    extendable: Mutex<std::collections::HashMap<String, Extendable>>,
    delivered_tx: tokio::sync::broadcast::Sender<MessageDelivered>,
    /// Set by [`crate::outbox::Outbox::stop`]: claim nothing more, finish
    /// the lanes in flight, record them, end.
    pub(crate) stopping: AtomicBool,
    /// Set once the loop has ended after a stop.
    pub(crate) stopped: AtomicBool,
}

/// A lane being delivered here that later messages may follow.
struct Extendable {
    /// The lease it is delivered under (added messages must quote it).
    lease: String,
    /// Messages commits added since, in order.
    added: Vec<OutboxRecord>,
    /// No more are taken after this, well inside the lease.
    until: Instant,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher {
            wake: Default::default(),
            in_flight: Default::default(),
            short: Default::default(),
            new_lanes_here: Default::default(),
            done: Default::default(),
            extendable: Default::default(),
            delivered_tx: tokio::sync::broadcast::channel(4096).0,
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }
}

impl Dispatcher {
    /// Wakes the dispatcher to claim: messages are due (committed on
    /// another host, or a dead one retried).
    pub(crate) fn wake(&self) {
        self.short.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    /// Wakes the dispatcher after a commit on this host sent messages: the
    /// lanes it opened are handed over without a claim, and the store says
    /// whether a claim is due too.
    pub(crate) fn wake_after_commit(&self) {
        if !self.new_lanes_here.load(Ordering::Acquire) {
            self.short.store(false, Ordering::Release);
        }
        self.wake.notify_one();
    }

    /// Every message delivered from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MessageDelivered> {
        self.delivered_tx.subscribe()
    }

    /// Lanes being delivered now.
    pub(crate) fn lanes_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// `lane` holds every pending message of its lane: messages commits
    /// on this host add to it later may follow it.
    fn extendable(&self, lane: &LaneClaim) {
        let entry = Extendable { lease: lane.lease.clone(), added: Vec::new(), until: Instant::now() + LEASE / 2 };
        self.extendable.lock().insert(lane.lane.clone(), entry);
    }

    /// Hands messages commits added to existing lanes to those lanes'
    /// deliveries here; false if some lane is not being delivered here
    /// (under the lease they saw), so that a claim is due for them.
    fn add_to_lanes(&self, added: Vec<LaneClaim>) -> bool {
        let mut all = true;
        let now = Instant::now();
        let mut lanes = self.extendable.lock();
        for lane in added {
            match lanes.get_mut(&lane.lane) {
                Some(running) if running.lease == lane.lease && now < running.until => running.added.extend(lane.messages),
                _ => all = false,
            }
        }
        all
    }

    /// The messages added to a lane since its delivery took the last ones;
    /// when there are none it takes no more (later ones wait for a claim).
    fn take_added(&self, lane: &str) -> Option<Vec<OutboxRecord>> {
        let mut lanes = self.extendable.lock();
        let running = lanes.get_mut(lane)?;
        if running.added.is_empty() {
            lanes.remove(lane);
            return None;
        }
        Some(std::mem::take(&mut running.added))
    }

    /// A lane's delivery stopped at a failure: messages added to it wait
    /// in the store, behind the failed one, for the lane's retry.
    fn stop_adding(&self, lane: &str) {
        self.extendable.lock().remove(lane);
    }

    fn lane_done(&self, delivered: Vec<String>, release: LaneRelease) {
        let mut done = self.done.lock();
        done.delivered.extend(delivered);
        done.released.push(release);
        done.since.get_or_insert_with(Instant::now);
    }

    fn take_done(&self) -> Done {
        std::mem::take(&mut *self.done.lock())
    }

    fn restore_done(&self, back: Done) {
        let mut done = self.done.lock();
        done.delivered.extend(back.delivered);
        done.released.extend(back.released);
        done.since.get_or_insert_with(Instant::now);
    }

    fn write_due_in(&self) -> Option<Duration> {
        self.done.lock().since.map(|since| WRITE_DELAY.saturating_sub(since.elapsed()))
    }
}

/// The dispatcher loop; ends when the outbox service is dropped.
pub(crate) async fn run(outbox: Weak<OutboxInner>) {
    let mut failures = 0u32;
    if let Some(outbox) = outbox.upgrade()
        && let Some(store) = outbox.host.store().outbox_store()
    {
        let here = store.deliver_new_lanes_here();
        outbox.dispatcher.new_lanes_here.store(here, Ordering::Release);
    }
    // Lanes commits opened, waiting for a free delivery slot (they are
    // leased to this host already).
    let mut queued: std::collections::VecDeque<LaneClaim> = Default::default();
    loop {
        let Some(strong) = outbox.upgrade() else { return };
        let Some(store) = strong.host.store().outbox_store() else { return };
        let dispatcher = strong.dispatcher.clone();
        if dispatcher.stopping.load(Ordering::Acquire) {
            if dispatcher.in_flight.load(Ordering::Acquire) == 0 {
                // What was delivered is recorded and the lanes released,
                // so no other host delivers them again.
                let done = dispatcher.take_done();
                if let Err(e) = store.claim_lanes(crate::storage::now_ms(), 0, PER_LANE, LEASE.as_millis() as i64, &done.delivered, &done.released).await {
                    tracing::warn!(error = %e, "recording the last deliveries failed; their lanes are delivered again after their lease");
                }
                dispatcher.stopped.store(true, Ordering::Release);
                return;
            }
            drop(strong);
            let _ = tokio::time::timeout(Duration::from_millis(20), dispatcher.wake.notified()).await;
            continue;
        }
        let concurrency = strong.config.concurrency.max(1);
        let here = dispatcher.new_lanes_here.load(Ordering::Acquire);
        // Lanes commits opened are already ours: no claim needed, unless a
        // commit also added to a lane that existed. They start as the
        // in-flight limit allows, before any claimed lane.
        let (lanes, added) = store.take_new_lanes();
        for lane in &lanes {
            dispatcher.extendable(lane);
        }
        let claim_due = !dispatcher.add_to_lanes(added);
        queued.extend(lanes);
        while !queued.is_empty() && dispatcher.in_flight.load(Ordering::Acquire) < concurrency {
            let lane = queued.pop_front().expect("not empty");
            dispatcher.in_flight.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(deliver_lane(strong.clone(), lane));
        }
        if claim_due {
            dispatcher.short.store(false, Ordering::Release);
        }
        let in_flight = dispatcher.in_flight.load(Ordering::Acquire);
        let free = concurrency.saturating_sub(in_flight + queued.len());
        let short = dispatcher.short.load(Ordering::Acquire);
        let can_claim = !short && free > 0 && (in_flight == 0 || free >= (concurrency / 4).max(1));
        let write_due = dispatcher.write_due_in().is_some_and(|d| d.is_zero() || in_flight == 0);
        if failures == 0 && (can_claim || write_due) {
            let max = if can_claim { free.min(CLAIM_BATCH) } else { 0 };
            let done = dispatcher.take_done();
            let lease_ms = LEASE.as_millis() as i64;
            match store.claim_lanes(crate::storage::now_ms(), max, PER_LANE, lease_ms, &done.delivered, &done.released).await {
                Ok(lanes) => {
                    if max > 0 {
                        dispatcher.short.store(lanes.len() < max, Ordering::Release);
                    }
                    strong.host.metrics().record_lanes_claimed(lanes.len());
                    for lane in lanes {
                        if here && lane.messages.len() < PER_LANE {
                            // The claim took every pending message, and commits
                            // here hand over what they add to it.
                            dispatcher.extendable(&lane);
                        }
                        dispatcher.in_flight.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(deliver_lane(strong.clone(), lane));
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    dispatcher.restore_done(done);
                    tracing::warn!(error = %e, "claiming outbox lanes failed; retrying");
                }
            }
        }
        let poll = strong.config.poll;
        let mut wait = if failures > 0 {
            Duration::from_millis(50 << failures.min(5))
        } else if !short || in_flight > 0 {
            poll
        } else {
            match store.next_message_due().await {
                Ok(Some(due)) => Duration::from_millis((due - crate::storage::now_ms()).clamp(1, poll.as_millis() as i64) as u64),
                _ => poll,
            }
        };
        if let Some(due_in) = dispatcher.write_due_in() {
            wait = wait.min(due_in.max(Duration::from_micros(100)));
        }
        drop(strong);
        if tokio::time::timeout(wait, dispatcher.wake.notified()).await.is_err() {
            failures = 0;
            dispatcher.short.store(false, Ordering::Release);
        }
    }
}

/// Delivers a lane's messages in order, then any that commits on this host
/// added to it meanwhile (when it holds every pending message of its
/// lane); stops at the first failure (which holds the lane until that
/// message's retry, or moves on if it is dead).
async fn deliver_lane(outbox: Arc<OutboxInner>, lane: LaneClaim) {
    let LaneClaim { lane: id, lease, taken_over, messages } = lane;
    let dispatcher = &outbox.dispatcher;
    let mut delivered = Vec::with_capacity(messages.len());
    let mut batch = messages;
    let mut taken_over = taken_over;
    let next_at_ms = loop {
        if let Some(next_at_ms) = deliver_in_order(&outbox, &batch, taken_over, &mut delivered).await {
            dispatcher.stop_adding(&id);
            break next_at_ms;
        }
        // Messages added since are new: never delivered anywhere.
        taken_over = false;
        match dispatcher.take_added(&id) {
            Some(more) => batch = more,
            None => break None,
        }
    };
    dispatcher.lane_done(delivered, LaneRelease { lane: id, lease, next_at_ms });
    dispatcher.in_flight.fetch_sub(1, Ordering::AcqRel);
    dispatcher.wake.notify_one();
}

/// Delivers `messages` (of one lane) in order, adding each delivered key to
/// `delivered`; at the first failure records it and returns
/// `Some(when the lane is due again)` (`None` inside: now, it is dead).
async fn deliver_in_order(outbox: &OutboxInner, messages: &[OutboxRecord], taken_over: bool, delivered: &mut Vec<String>) -> Option<Option<i64>> {
    let host = &outbox.host;
    // A first attempt on a lane no other host held cannot have run yet.
    let check = |record: &OutboxRecord| record.attempts > 0 || taken_over;
    // Several messages to an actor are queued on it at once: its turns run
    // back to back, each while the one before is being committed, instead
    // of one per commit. They share a flag, so that once one fails the
    // ones behind it do not run (they stay pending, in order); a commit
    // that fails fails the later turns that saw its effects.
    let mut queued = Vec::new();
    if messages.len() > 1 && matches!(messages[0].message.destination, Destination::Actor { .. }) {
        let failed = Arc::new(AtomicBool::new(false));
        let requests = messages
            .iter()
            .enumerate()
            .map_while(|(i, record)| {
                let lane = LaneTurn { failed: failed.clone(), first: i == 0 };
                actor_request(host, record, check(record), Some(lane)).ok()
            })
            .collect();
        queued = host.queue_asks(requests).await.into_iter().map(Some).collect();
    }
    for (i, record) in messages.iter().enumerate() {
        let outcome = match queued.get_mut(i).and_then(Option::take) {
            Some(reply) => reply.await.map(|_| ()).map_err(|e| e.to_string()),
            None => deliver(outbox, record, check(record)).await,
        };
        match outcome {
            Ok(()) => {
                host.metrics().record_message(true);
                let delay_ms = (crate::storage::now_ms() - record.message.created_at_ms).max(0);
                host.metrics().record_message_delay(Duration::from_millis(delay_ms as u64));
                let dispatcher = &outbox.dispatcher;
                if dispatcher.delivered_tx.receiver_count() > 0 {
                    let _ = dispatcher.delivered_tx.send(MessageDelivered { id: record.message.id.clone(), delay_ms });
                }
                delivered.push(record.message.key());
            }
            Err(error) => {
                host.metrics().record_message(false);
                let attempts = record.attempts + 1;
                let config = &outbox.config;
                let retry_at = (attempts < config.max_attempts).then(|| {
                    let delay = quark_core::jobs::backoff_ms(config.backoff.as_millis() as u64, 60_000, attempts);
                    crate::storage::now_ms() + delay as i64
                });
                if let Some(store) = host.store().outbox_store()
                    && let Err(e) = store.fail_message(&record.message.key(), &error, retry_at).await
                {
                    tracing::warn!(message = %record.message.id, error = %e, "recording a failed delivery failed; the lane's lease will expire");
                }
                if retry_at.is_none() {
                    tracing::warn!(message = %record.message.id, attempts, error, "message dead-lettered after its last attempt");
                }
                return Some(retry_at);
            }
        }
    }
    None
}

/// Delivers one message: a turn of the receiving actor under its id, or a
/// CloudEvent to a sink.
async fn deliver(outbox: &OutboxInner, record: &OutboxRecord, check: bool) -> Result<(), String> {
    let (host, message) = (&outbox.host, &record.message);
    match &message.destination {
        Destination::Actor { .. } => {
            let request = actor_request(host, record, check, None)?;
            host.ask_request(request).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Destination::Sink { name } => outbox.sinks.send(name, message).await,
    }
}

/// The request that delivers a message to its actor: a turn under the
/// message's id, from its sender.
fn actor_request(host: &Host, record: &OutboxRecord, check: bool, lane: Option<LaneTurn>) -> Result<Request, String> {
    let message = &record.message;
    let Destination::Actor { actor, method } = &message.destination else {
        return Err(format!("message {} goes to a sink, not an actor", message.id));
    };
    Ok(Request {
        target: ActorId::parse(actor).map_err(|e| format!("bad actor id: {e}"))?,
        method: method.clone(),
        payload: message.payload.clone(),
        chain: quark_core::ChainId::fresh(),
        caller: Some(ActorId::parse(&message.sender).map_err(|e| format!("bad sender id: {e}"))?),
        deadline: Instant::now() + host.config().call_timeout,
        control: Some(Box::new(Control::Inbox(InboxTurn { sender: message.sender.clone(), message_id: message.id.clone(), check, lane }))),
    })
}
