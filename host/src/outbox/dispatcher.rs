//! The dispatcher: one task per host that claims due outbox messages in
//! batches and delivers each (an actor's turn under the message id), then
//! deletes the delivered ones with its next claim. It wakes when a commit
//! carried messages, when a delivery ends, at the next due time, and at
//! least every [`POLL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::id::ActorId;
use crate::runtime::{Control, Host, InboxTurn, Request, WeakHost, new_chain_id};
use crate::storage::outbox::{Destination, MessageClaim};

/// Longest sleep between looks at the store.
pub const POLL: Duration = Duration::from_secs(1);

/// Most messages one claim takes.
pub const CLAIM_BATCH: usize = 256;

/// Most deliveries in flight per host.
pub const CONCURRENCY: usize = 512;

/// How long a claimed message is this host's before another may deliver it.
pub const LEASE: Duration = Duration::from_secs(30);

/// Longest delivered messages wait to be deleted with the next claim.
const DELETE_DELAY: Duration = Duration::from_millis(5);

/// The dispatcher's shared state.
#[derive(Default)]
pub(crate) struct Dispatcher {
    wake: tokio::sync::Notify,
    in_flight: AtomicUsize,
    /// The last claim came back short: wait for a commit or a due time.
    short: AtomicBool,
    /// Delivered message ids waiting to be deleted, and since when.
    delivered: Mutex<(Vec<String>, Option<Instant>)>,
}

impl Dispatcher {
    /// Wakes the dispatcher: messages were committed.
    pub(crate) fn wake(&self) {
        self.short.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    fn delivered(&self, id: String) {
        let mut delivered = self.delivered.lock();
        delivered.0.push(id);
        delivered.1.get_or_insert_with(Instant::now);
    }

    fn take_delivered(&self) -> Vec<String> {
        let mut delivered = self.delivered.lock();
        delivered.1 = None;
        std::mem::take(&mut delivered.0)
    }

    fn restore_delivered(&self, mut back: Vec<String>) {
        let mut delivered = self.delivered.lock();
        back.append(&mut delivered.0);
        delivered.0 = back;
        delivered.1.get_or_insert_with(Instant::now);
    }

    fn delete_due_in(&self) -> Option<Duration> {
        self.delivered.lock().1.map(|since| DELETE_DELAY.saturating_sub(since.elapsed()))
    }
}

/// The dispatcher loop; ends when the host is dropped.
pub(crate) async fn run(host: WeakHost) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = host.upgrade() else { return };
        let Some(store) = strong.store().outbox_store() else { return };
        let dispatcher = strong.dispatcher().clone();
        let in_flight = dispatcher.in_flight.load(Ordering::Acquire);
        let free = CONCURRENCY.saturating_sub(in_flight);
        let short = dispatcher.short.load(Ordering::Acquire);
        let can_claim = !short && free > 0 && (in_flight == 0 || free >= CONCURRENCY / 4);
        let delete_due = dispatcher.delete_due_in().is_some_and(|d| d.is_zero() || in_flight == 0);
        if failures == 0 && (can_claim || delete_due) {
            let max = if can_claim { free.min(CLAIM_BATCH) } else { 0 };
            let delivered = dispatcher.take_delivered();
            let lease_ms = LEASE.as_millis() as i64;
            match store.claim_messages(crate::storage::now_ms(), max, lease_ms, &delivered).await {
                Ok(claims) => {
                    if max > 0 {
                        dispatcher.short.store(claims.len() < max, Ordering::Release);
                    }
                    for claim in claims {
                        dispatcher.in_flight.fetch_add(1, Ordering::AcqRel);
                        tokio::spawn(deliver(strong.clone(), claim));
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    dispatcher.restore_delivered(delivered);
                    tracing::warn!(error = %e, "claiming outbox messages failed; retrying");
                }
            }
        }
        let mut wait = if failures > 0 {
            Duration::from_millis(50 << failures.min(5))
        } else if !short || in_flight > 0 {
            POLL
        } else {
            match store.next_message_due().await {
                Ok(Some(due)) => Duration::from_millis((due - crate::storage::now_ms()).clamp(1, POLL.as_millis() as i64) as u64),
                _ => POLL,
            }
        };
        if let Some(due_in) = dispatcher.delete_due_in() {
            wait = wait.min(due_in.max(Duration::from_micros(100)));
        }
        drop(strong);
        if tokio::time::timeout(wait, dispatcher.wake.notified()).await.is_err() {
            failures = 0;
            dispatcher.short.store(false, Ordering::Release);
        }
    }
}

/// Delivers one claimed message, then marks it delivered or failed.
async fn deliver(host: Host, claim: MessageClaim) {
    let message = &claim.record.message;
    let outcome = match &message.destination {
        Destination::Actor { actor, method } => match (ActorId::parse(actor), ActorId::parse(&message.sender)) {
            (Ok(target), Ok(sender)) => {
                let request = Request {
                    target,
                    method: method.clone(),
                    payload: message.payload.clone(),
                    chain: new_chain_id(),
                    caller: Some(sender),
                    deadline: Instant::now() + host.config().call_timeout,
                    control: Some(Box::new(Control::Inbox(InboxTurn { message_id: message.id.clone(), check: claim.record.attempts > 1 }))),
                };
                host.ask_request(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
            (Err(e), _) | (_, Err(e)) => Err(format!("bad actor id: {e}")),
        },
        Destination::Sink { name } => Err(format!("no sink named {name:?} is configured on this host")),
    };
    let dispatcher = host.dispatcher().clone();
    match outcome {
        Ok(()) => {
            host.metrics().record_message(true);
            dispatcher.delivered(message.id.clone());
        }
        Err(error) => {
            host.metrics().record_message(false);
            let attempts = claim.record.attempts;
            let config = host.config();
            let retry_at = (attempts < config.message_max_attempts).then(|| {
                let delay = crate::jobs::backoff_ms(config.message_backoff.as_millis() as u64, 60_000, attempts);
                crate::storage::now_ms() + delay as i64
            });
            if let Some(store) = host.store().outbox_store()
                && let Err(e) = store.fail_message(&message.id, &claim.lease, &error, retry_at).await
            {
                tracing::warn!(message = %message.id, error = %e, "recording a failed delivery failed; its lease will expire");
            }
            if retry_at.is_none() {
                tracing::warn!(message = %message.id, attempts, error, "message dead-lettered after its last attempt");
            }
        }
    }
    dispatcher.in_flight.fetch_sub(1, Ordering::AcqRel);
    dispatcher.wake.notify_one();
}

impl Host {
    /// Wakes the outbox dispatcher (messages were committed).
    pub(crate) fn wake_outbox(&self) {
        self.dispatcher().wake();
    }

    pub(crate) fn dispatcher(&self) -> &Arc<Dispatcher> {
        self.dispatcher_shared()
    }
}
