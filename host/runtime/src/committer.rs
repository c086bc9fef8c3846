//! Group commit: one task owns the write side of the store and commits the
//! turns of many actors in one transaction, so they share the fsync.
//!
//! There is no artificial wait: while one transaction is in flight, the next
//! turns queue up, and the committer takes all of them (up to
//! [`MAX_BATCH`]) as the next batch. Under light load a commit is one turn;
//! under heavy load batches grow by themselves.
//!
//! Commits are processed in the order they were enqueued. An actor may run
//! its next turn while the last one is still being committed (its reply
//! waits, the actor does not); such commits share a [`DependencyFlag`]: once
//! one fails, the committer fails every later one carrying the same flag,
//! because they saw its effects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{StateStore, StoreError, TurnCommit};
use crate::metrics::Metrics;

/// Most turns in one transaction: bounds the transaction's size and the
/// latency the last turn in a batch waits for.
pub const MAX_BATCH: usize = 1024;

/// Turns waiting for the committer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 8192;

/// Set when a commit carrying it failed; later commits carrying it fail too.
pub type DependencyFlag = Arc<AtomicBool>;

/// The outcome of an enqueued commit, once it is known.
pub type CommitOutcome = oneshot::Receiver<Result<(), Arc<StoreError>>>;

type Request = (TurnCommit, Option<DependencyFlag>, oneshot::Sender<Result<(), Arc<StoreError>>>);

/// A handle for sending turn commits to the group committer task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

fn stopped() -> Arc<StoreError> {
    Arc::new(StoreError::Unavailable("the committer has stopped".into()))
}

fn dependent_failed() -> Arc<StoreError> {
    Arc::new(StoreError::Conflict(
        "an earlier turn of this actor could not be committed, and this turn saw its effects, so it did not happen either".into(),
    ))
}

impl Committer {
    /// Starts the committer task on the current tokio runtime.
    pub fn spawn(store: Arc<dyn StateStore>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(store, metrics, rx));
        Committer { tx }
    }

    /// Commits `commit` durably; returns once it is on disk (or failed).
    pub async fn commit(&self, commit: TurnCommit) -> Result<(), Arc<StoreError>> {
        self.enqueue(commit, None).await?.await.map_err(|_| stopped())?
    }

    /// Puts `commit` in the queue and returns at once; the receiver gets
    /// its outcome. An empty commit is a barrier: it succeeds once every
    /// commit enqueued before it was processed (unless `flag` is set).
    pub async fn enqueue(&self, commit: TurnCommit, flag: Option<DependencyFlag>) -> Result<CommitOutcome, Arc<StoreError>> {
        let (done, outcome) = oneshot::channel();
        self.tx.send((commit, flag, done)).await.map_err(|_| stopped())?;
        Ok(outcome)
    }
}

fn failed(flag: &Option<DependencyFlag>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
}

fn mark_failed(flag: &Option<DependencyFlag>) {
    if let Some(f) = flag {
        f.store(true, Ordering::Release);
    }
}

/// Commits `batch`; a panic inside the backend fails this batch (or this
/// one turn, on the one-by-one path), never the committer.
async fn commit_catching_panics(store: &dyn StateStore, batch: &[TurnCommit]) -> Result<(), Arc<StoreError>> {
    match std::panic::AssertUnwindSafe(store.commit(batch)).catch_unwind().await {
        Ok(outcome) => outcome.map_err(Arc::new),
        Err(_) => Err(Arc::new(StoreError::Unavailable("the store backend panicked during a commit".into()))),
    }
}

async fn run(store: Arc<dyn StateStore>, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Request>) {
    let mut commits = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    let mut buffer = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut buffer, MAX_BATCH).await > 0 {
        for (commit, flag, done) in buffer.drain(..) {
            if failed(&flag) {
                let _ = done.send(Err(dependent_failed()));
            } else {
                commits.push(commit);
                waiters.push((flag, done));
            }
        }
        // Only barriers (or nothing left): no transaction needed.
        if commits.iter().all(TurnCommit::is_empty) {
            commits.clear();
            for (_, done) in waiters.drain(..) {
                let _ = done.send(Ok(()));
            }
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = commit_catching_panics(&*store, &commits).await;
        metrics.record_commit(commits.len(), started.elapsed(), outcome.is_ok());
        match outcome {
            // The backend refused some turn's data (or a version moved):
            // commit the turns one by one so only the offending turn fails,
            // and a conflict names its stream. A conflict is retried the
            // same way.
            Err(e) if matches!(*e, StoreError::Rejected(_) | StoreError::Conflict(_) | StoreError::Fenced(_)) && commits.len() > 1 => {
                tracing::warn!(turns = commits.len(), error = %e, "group commit refused; retrying its turns one by one");
                for (commit, (flag, done)) in commits.drain(..).zip(waiters.drain(..)) {
                    let single = if failed(&flag) {
                        Err(dependent_failed())
                    } else {
                        commit_catching_panics(&*store, std::slice::from_ref(&commit)).await
                    };
                    if single.is_err() {
                        mark_failed(&flag);
                    }
                    let _ = done.send(single);
                }
            }
            outcome => {
                if let Err(e) = &outcome {
                    tracing::warn!(turns = commits.len(), error = %e, "group commit failed; its turns did not happen");
                    for (flag, _) in &waiters {
                        mark_failed(flag);
                    }
                }
                for (_, done) in waiters.drain(..) {
                    let _ = done.send(outcome.clone());
                }
            }
        }
        commits.clear();
    }
}
