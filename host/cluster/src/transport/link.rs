//! One multiplexed connection to a peer host: many requests in flight on
//! one TCP stream, each answered by id. A call made while no other is in
//! flight is written by its caller; calls made while others are go
//! through the connection's flusher, which writes whatever is queued in
//! one go ([`super::writer`]); a reader task hands each reply to its
//! waiting caller.
//!
//! A link that fails is closed for good; the cluster makes a new one on
//! the next request. Whether a request may be sent again depends on how
//! far it got: one never written ([`LinkError::NotSent`]) cannot have run,
//! one written before the connection broke ([`LinkError::Lost`]) may have.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

use super::writer::{Broken, Writer};
use crate::wire::{self, Frame, Mode, Outcome, WireRequest};

/// How long a connection attempt may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request got no outcome from the peer.
#[derive(Debug, Clone)]
pub(crate) enum LinkError {
    /// It was never written: it did not run there.
    NotSent(String),
    /// It was written, then the connection broke: it may have run.
    Lost(String),
    /// No reply by the deadline: it may have run.
    TimedOut,
}

type Waiter = oneshot::Sender<Result<Outcome, LinkError>>;

/// A connection to one peer.
pub(crate) struct Link {
    /// The peer's address.
    pub(crate) addr: String,
    writer: Arc<Writer>,
    waiting: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Link {
    /// A link to `addr`; it connects in the background, holding what is
    /// sent meanwhile.
    pub(crate) fn open(addr: String) -> Arc<Link> {
        let link = Arc::new(Link {
            addr: addr.clone(),
            writer: Arc::new(Writer::new()),
            waiting: Arc::default(),
            next_id: AtomicU64::new(1),
            closed: Arc::new(AtomicBool::new(false)),
        });
        tokio::spawn(run(addr, link.writer.clone(), link.waiting.clone(), link.closed.clone()));
        link
    }

    /// Whether the link broke (or never connected).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends a call and returns its outcome, to await (by `deadline`, with
    /// a second's grace for the peer's own deadline error to arrive). The
    /// call is queued on the connection before this returns, so calls sent
    /// one after another arrive in that order.
    pub(crate) fn call(
        &self,
        mode: Mode,
        request: WireRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<Outcome, LinkError>> + Send + 'static {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.exchange(id, Frame::Call { id, mode, request }, deadline)
    }

    /// Sends a frame that asks this host to serve the store's active
    /// versions, and returns the outcome of its reply, to await.
    pub(crate) fn versions_changed(&self, deadline: Instant) -> impl Future<Output = Result<Outcome, LinkError>> + Send + 'static + use<> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.exchange(id, Frame::VersionsChanged { id }, deadline)
    }

    /// Sends a locality question and returns the outcome of its reply, to await.
    pub(crate) fn locality(&self, question: Vec<u8>, deadline: Instant) -> impl Future<Output = Result<Outcome, LinkError>> + Send + 'static + use<> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.exchange(id, Frame::Locality { id, question }, deadline)
    }

    /// Sends `frame`, whose reply is [`Frame::Reply`] `id`, and returns the
    /// outcome that reply carries, to await.
    fn exchange(&self, id: u64, frame: Frame, deadline: Instant) -> impl Future<Output = Result<Outcome, LinkError>> + Send + 'static + use<> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent = if self.is_closed() {
            Err(LinkError::NotSent(format!("the connection to {} is closed", self.addr)))
        } else {
            // Straight to the socket when this is the only call in flight
            // (latency); through the flusher when others are (one write
            // for the lot).
            let alone = {
                let mut waiting = self.waiting.lock();
                waiting.insert(id, reply_tx);
                waiting.len() == 1
            };
            self.writer.send(Some(id), wire::encode(&frame), alone).map_err(|why| {
                self.waiting.lock().remove(&id);
                LinkError::NotSent(format!("the connection to {} is closed ({why})", self.addr))
            })
        };
        let waiting = self.waiting.clone();
        async move {
            sent?;
            let grace = deadline + Duration::from_secs(1);
            match tokio::time::timeout_at(grace.into(), reply_rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(LinkError::Lost("the connection's reader stopped".into())),
                Err(_) => {
                    waiting.lock().remove(&id);
                    Err(LinkError::TimedOut)
                }
            }
        }
    }

    /// Sends a frame that wants no reply (a tell).
    pub(crate) fn send(&self, frame: &Frame) -> Result<(), LinkError> {
        if self.is_closed() {
            return Err(LinkError::NotSent(format!("the connection to {} is closed", self.addr)));
        }
        let alone = self.waiting.lock().is_empty();
        self.writer
            .send(None, wire::encode(frame), alone)
            .map_err(|why| LinkError::NotSent(format!("the connection to {} is closed ({why})", self.addr)))
    }
}

/// Connects, then writes what is sent and reads replies until the
/// connection breaks; then fails every call still waiting: `NotSent` for
/// those whose frames never reached the socket whole, `Lost` for the rest.
async fn run(addr: String, writer: Arc<Writer>, waiting: Arc<Mutex<HashMap<u64, Waiter>>>, closed: Arc<AtomicBool>) {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return fail(&addr, writer.never_connected(&format!("connecting to {addr}: {e}")), &waiting, &closed),
        Err(_) => return fail(&addr, writer.never_connected(&format!("connecting to {addr}: no answer in {CONNECT_TIMEOUT:?}")), &waiting, &closed),
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, wire::codec());
    let replies = {
        let waiting = waiting.clone();
        async move {
            while let Some(frame) = reader.next().await {
                let Ok(frame) = frame else { break };
                match wire::decode(&frame) {
                    Ok(Frame::Reply { id, outcome }) => {
                        if let Some(waiter) = waiting.lock().remove(&id) {
                            let _ = waiter.send(Ok(outcome));
                        }
                    }
                    Ok(other) => tracing::debug!(?other, "a peer sent a frame a link does not take"),
                    Err(e) => {
                        tracing::warn!(error = %e, "a peer sent a frame that does not decode; closing the connection");
                        break;
                    }
                }
            }
        }
    };
    let writes = writer.flush(write);
    tokio::pin!(writes);
    let broken = tokio::select! {
        () = replies => {
            writer.close("the connection's reader stopped");
            writes.await
        }
        broken = &mut writes => broken,
    };
    fail(&addr, broken, &waiting, &closed);
}

/// Closes the link and fails every call still waiting: those in
/// `broken.unsent` did not reach the peer; the others may have.
fn fail(addr: &str, broken: Broken, waiting: &Mutex<HashMap<u64, Waiter>>, closed: &AtomicBool) {
    closed.store(true, Ordering::Release);
    let mut waiting = waiting.lock();
    for id in broken.unsent {
        if let Some(waiter) = waiting.remove(&id) {
            let _ = waiter.send(Err(LinkError::NotSent(format!("{addr}: {}", broken.why))));
        }
    }
    for (_, waiter) in waiting.drain() {
        let _ = waiter.send(Err(LinkError::Lost(format!("the connection to {addr} broke ({})", broken.why))));
    }
}
