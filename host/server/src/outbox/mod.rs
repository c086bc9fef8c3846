//! The outbox: messages a turn sends, committed with it and delivered after
//! it commits. To an actor, a message runs as a turn of the receiver under
//! the message id, so the receiver's inbox makes a redelivery a no-op:
//! exactly one effect. Delivered messages are deleted; failed ones are
//! retried with backoff and end in the dead-letter list.
//!
//! [`Outbox`] is the service: it owns the [`dispatcher`], the [`sinks`] and
//! their settings, reaches actors through the runtime's router, and wakes
//! when a commit on this host sent messages (a [`CommitListener`]).

pub mod dispatcher;
pub mod sinks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quark_runtime::{CommitListener, CommittedTurn, Host};

use self::dispatcher::Dispatcher;
use self::sinks::{SinkConfig, Sinks};
use crate::error::ActorError;
use crate::storage::outbox::{OutboxRecord, OutboxStore};

/// Outbox settings.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// External sinks outbox messages may name (`--sink NAME=KIND:TARGET`).
    pub sinks: HashMap<String, SinkConfig>,
    /// Delivery attempts of a message before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay of a failed delivery, doubled per attempt (with
    /// jitter, at most a minute).
    pub backoff: Duration,
    /// Longest the dispatcher sleeps between looks at the store, for
    /// messages sent on other hosts when the store cannot announce them.
    pub poll: Duration,
    /// Most lanes (one sender's messages to one destination) this host
    /// delivers at once.
    pub concurrency: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            sinks: HashMap::new(),
            max_attempts: 10,
            backoff: Duration::from_millis(200),
            poll: dispatcher::POLL,
            concurrency: dispatcher::DEFAULT_CONCURRENCY,
        }
    }
}

/// The outbox service of one host. Cheap to clone.
#[derive(Clone)]
pub struct Outbox(Arc<OutboxInner>);

pub(crate) struct OutboxInner {
    pub(crate) host: Host,
    pub(crate) config: OutboxConfig,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) sinks: Sinks,
}

impl CommitListener for OutboxInner {
    fn committed(&self, turn: &CommittedTurn<'_>) {
        if turn.sent_messages {
            self.dispatcher.wake_after_commit();
        }
    }
}

impl Outbox {
    /// Starts the dispatcher beside `host` (when its store has an outbox).
    pub(crate) async fn start(host: Host, config: OutboxConfig) -> Outbox {
        let sinks = Sinks::new(&config.sinks);
        let inner = Arc::new(OutboxInner { host, config, dispatcher: Arc::default(), sinks });
        let listener: Arc<dyn CommitListener> = inner.clone();
        inner.host.add_commit_listener(&listener);
        if let Some(store) = inner.host.store().outbox_store() {
            tokio::spawn(dispatcher::run(Arc::downgrade(&inner)));
            if let Some(announcements) = store.message_announcements().await {
                crate::node::spawn_wakeups(announcements, Arc::downgrade(&inner), |outbox| outbox.dispatcher.wake());
            }
        }
        Outbox(inner)
    }

    fn store_or_err(&self) -> Result<&dyn OutboxStore, ActorError> {
        let store = self.0.host.store();
        store
            .outbox_store()
            .ok_or_else(|| ActorError::unavailable(format!("the outbox is not available on the {} store yet", store.backend_name())))
    }

    /// Messages waiting (or in flight) and dead ones, oldest first.
    pub async fn messages(&self, status: Option<&str>, limit: usize) -> Result<Vec<OutboxRecord>, ActorError> {
        if let Some(s) = status
            && s != "pending"
            && s != "dead"
        {
            return Err(ActorError::bad_request(format!("unknown message status {s:?}: pending or dead")));
        }
        Ok(self.store_or_err()?.messages(status, limit.clamp(1, 10_000)).await?)
    }

    /// Makes dead messages due now with fresh attempts: `sender`'s message
    /// `id`, or (without a sender) every dead message with that id, as ids
    /// are unique per sender. Returns how many.
    pub async fn retry_message(&self, id: &str, sender: Option<&str>) -> Result<u64, ActorError> {
        let retried = self.store_or_err()?.retry_message(id, sender, crate::storage::now_ms()).await?;
        if retried == 0 {
            let from = sender.map(|s| format!(" from {s}")).unwrap_or_default();
            return Err(ActorError::not_found(format!("no message {id}{from} is in the dead-letter list")));
        }
        self.0.dispatcher.wake();
        Ok(retried)
    }

    /// Deletes dead messages; returns how many.
    pub async fn purge_dead_messages(&self) -> Result<u64, ActorError> {
        Ok(self.store_or_err()?.purge_dead_messages().await?)
    }

    /// Every message this host delivers, as it is delivered (for
    /// monitoring and benchmarks; a receiver that falls behind skips ahead).
    pub fn deliveries(&self) -> tokio::sync::broadcast::Receiver<dispatcher::MessageDelivered> {
        self.0.dispatcher.subscribe()
    }

    /// Stops delivering (before the host leaves a cluster): no more lanes
    /// are claimed here; the lanes in flight finish, and what they
    /// delivered is recorded. Waits for that, for at most `within`.
    pub async fn stop(&self, within: Duration) {
        let dispatcher = &self.0.dispatcher;
        dispatcher.stopping.store(true, std::sync::atomic::Ordering::Release);
        dispatcher.wake();
        let started = std::time::Instant::now();
        while !dispatcher.stopped.load(std::sync::atomic::Ordering::Acquire) && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Outbox lanes this host is delivering now (at most
    /// [`OutboxConfig::concurrency`]).
    pub fn lanes_in_flight(&self) -> usize {
        self.0.dispatcher.lanes_in_flight()
    }
}
