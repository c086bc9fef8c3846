//! Group commit: one task owns the write side of the store and commits the
//! turns of many actors in one transaction, so they share the fsync.
//!
//! There is no artificial wait: while one transaction is in flight, the next
//! turns queue up, and the committer takes all of them (up to
//! [`MAX_BATCH`]) as the next batch. Under light load a commit is one turn;
//! under heavy load batches grow by themselves.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, TurnCommit};
use crate::metrics::Metrics;

/// Most turns in one transaction: bounds the transaction's size and the
/// latency the last turn in a batch waits for.
pub const MAX_BATCH: usize = 1024;

/// Turns waiting for the committer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 8192;

type Request = (TurnCommit, oneshot::Sender<Result<(), Arc<StoreError>>>);

/// A handle for sending turn commits to the group committer task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer task on the current tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(store, metrics, rx));
        Committer { tx }
    }

    /// Commits `commit` durably; returns once it is on disk (or failed).
    pub async fn commit(&self, commit: TurnCommit) -> Result<(), Arc<StoreError>> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((commit, done))
            .await
            .map_err(|_| Arc::new(StoreError::Unavailable("the committer has stopped".into())))?;
        wait.await
            .map_err(|_| Arc::new(StoreError::Unavailable("the committer has stopped".into())))?
    }
}

async fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Request>) {
    let mut commits = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    let mut buffer = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut buffer, MAX_BATCH).await > 0 {
        for (commit, done) in buffer.drain(..) {
            commits.push(commit);
            waiters.push(done);
        }
        let started = std::time::Instant::now();
        // A panic inside a backend fails this batch, not the committer.
        let outcome = match std::panic::AssertUnwindSafe(store.commit(&commits)).catch_unwind().await {
            Ok(outcome) => outcome.map_err(Arc::new),
            Err(_) => Err(Arc::new(StoreError::Unavailable("the store backend panicked during a commit".into()))),
        };
        metrics.record_commit(commits.len(), started.elapsed(), outcome.is_ok());
        match outcome {
            // The backend refused some turn's data: commit the turns one by
            // one so only the offending turn fails, not its whole batch.
            // A conflict is retried the same way, so it names its turn.
            Err(e) if matches!(*e, StoreError::Rejected(_) | StoreError::Conflict(_)) && commits.len() > 1 => {
                tracing::warn!(turns = commits.len(), error = %e, "group commit refused; retrying its turns one by one");
                for (commit, done) in commits.drain(..).zip(waiters.drain(..)) {
                    let single = store.commit(std::slice::from_ref(&commit)).await.map_err(Arc::new);
                    let _ = done.send(single);
                }
            }
            outcome => {
                if let Err(e) = &outcome {
                    tracing::warn!(turns = commits.len(), error = %e, "group commit failed; its turns did not happen");
                }
                for done in waiters.drain(..) {
                    let _ = done.send(outcome.clone());
                }
            }
        }
        commits.clear();
    }
}
