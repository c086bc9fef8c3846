//! The mailbox task of an activation, and turns run inline by an idle
//! actor's caller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::{ActivationShared, Core};
use crate::commit::TurnOutput;
use crate::error::ActorError;
use crate::id::{ActorId, ChainId};
use crate::table::Handle;
use crate::{Host, Request, WeakHost};

/// The reply to one message.
pub(crate) type Reply = oneshot::Sender<Result<Vec<u8>, ActorError>>;

/// One message in a mailbox.
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: Option<Reply>,
}

/// The mailbox task of one activation.
pub(crate) struct Activation;

impl Activation {
    pub(crate) fn spawn(host: &Host, id: ActorId) -> Handle {
        let shared = Arc::new(ActivationShared::new(id));
        let (tx, rx) = mpsc::unbounded_channel();
        host.metrics().activation_started();
        tokio::spawn(Self::run(host.downgrade(), shared.clone(), rx));
        Handle { tx, shared }
    }

    /// Weak: the host's table owns the activation (its `Handle`); a dropped
    /// host closes the mailbox, and this task ends.
    async fn run(weak: WeakHost, shared: Arc<ActivationShared>, mut rx: mpsc::UnboundedReceiver<Envelope>) {
        // Turns whose commits are in flight, each resolved by a task of its
        // own: a reply goes out as soon as its commit is durable, even while
        // the next turn runs (a long turn must not hold back a committed
        // write's reply until it times out).
        let mut committing = tokio::task::JoinSet::new();
        loop {
            let Envelope { request, reply } = tokio::select! {
                biased;
                Some(_) = committing.join_next(), if !committing.is_empty() => continue,
                envelope = rx.recv() => match envelope {
                    Some(envelope) => envelope,
                    None => break,
                },
            };
            let Some(host) = weak.upgrade() else { break };
            let mut core = take_core(&shared).await;
            let output = core.run_turn(&host, &shared, request).await;
            // Back before `pending` drops, so a caller that sees the actor
            // idle finds its core in place.
            *shared.core.lock() = Some(core);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            match output {
                Ok(TurnOutput::Pending(pending)) => {
                    let host = host.clone();
                    committing.spawn(async move {
                        let result = pending.resolve(&host).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    });
                }
                Ok(TurnOutput::Done(bytes)) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(bytes));
                    }
                }
                Err(e) => match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e));
                    }
                    None => {
                        // A told message has no one to hear its failure.
                        host.metrics().record_tell_dropped();
                        tracing::warn!(actor = %shared.id, error = %e, "a told message failed or expired; it is dropped");
                    }
                },
            }
        }
        while committing.join_next().await.is_some() {}
        // Removed from the table: drop the instance now (it refers back to
        // `shared`, so it would otherwise keep both alive).
        drop(shared.core.lock().take());
        if let Some(host) = weak.upgrade() {
            host.metrics().activation_stopped();
        }
    }
}

/// Waits until no inline turn holds the core, then takes it.
async fn take_core(shared: &ActivationShared) -> Core {
    loop {
        let returned = shared.core_returned.notified();
        if let Some(core) = shared.core.lock().take() {
            return core;
        }
        returned.await;
    }
}

/// A turn run by its caller's own task (the actor was idle, so no queue to
/// keep in order): no mailbox hop, no task switch. If the caller goes away
/// mid-turn, the instance is discarded (its effects were only buffered);
/// the core always goes back, before the caller waits for the commit.
pub(crate) struct InlineTurn {
    pub(super) host: Host,
    pub(super) shared: Arc<ActivationShared>,
    pub(super) core: Option<Core>,
    pub(super) finished: bool,
}

impl InlineTurn {
    /// A turn of `shared`'s actor that will run on `core`, taken by the caller.
    pub(crate) fn new(host: Host, shared: Arc<ActivationShared>, core: Core) -> Self {
        InlineTurn { host, shared, core: Some(core), finished: false }
    }

    pub(crate) async fn run(mut self, request: Request) -> Result<Vec<u8>, ActorError> {
        let (host, shared) = (self.host.clone(), self.shared.clone());
        let core = self.core.as_mut().expect("an inline turn holds the core");
        let output = core.run_turn(&host, &shared, request).await;
        self.finished = true;
        // Returns the core: the actor's next turn need not wait for this commit.
        drop(self);
        match output? {
            TurnOutput::Done(bytes) => Ok(bytes),
            // The commit's completion (reply, tells, bookkeeping, undo on
            // failure) must not depend on this caller: one that goes away
            // while the commit is in flight hands it to a task.
            TurnOutput::Pending(pending) => pending.resolve_detached(&host).await,
        }
    }
}

impl Drop for InlineTurn {
    fn drop(&mut self) {
        let mut core = self.core.take().unwrap_or_default();
        if !self.finished {
            // Its effects were only buffered in layers: the cache is intact.
            core.live = None;
            self.shared.busy_chain.set(ChainId::NONE);
        }
        *self.shared.core.lock() = Some(core);
        self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        self.shared.core_returned.notify_one();
    }
}
