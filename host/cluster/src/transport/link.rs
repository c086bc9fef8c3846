//! One multiplexed connection to a peer host: many requests in flight on
//! one TCP stream, each answered by id. A writer task owns the stream's
//! write half and sends whatever is queued in one flush (so a burst of
//! requests costs one syscall, not one each); a reader task hands each
//! reply to its waiting caller.
//!
//! A link that fails is closed for good; the cluster makes a new one on
//! the next request. Whether a request may be sent again depends on how
//! far it got: one never written ([`LinkError::NotSent`]) cannot have run,
//! one written before the connection broke ([`LinkError::Lost`]) may have.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

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

/// A frame waiting for the writer, with the id of the call it carries.
struct Outgoing {
    id: Option<u64>,
    bytes: Bytes,
}

/// A connection to one peer.
pub(crate) struct Link {
    /// The peer's address.
    pub(crate) addr: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    waiting: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Link {
    /// A link to `addr`; it connects in the background, holding what is
    /// sent meanwhile.
    pub(crate) fn open(addr: String) -> Arc<Link> {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            addr: addr.clone(),
            tx,
            waiting: Arc::default(),
            next_id: AtomicU64::new(1),
            closed: Arc::new(AtomicBool::new(false)),
        });
        tokio::spawn(run(addr, rx, link.waiting.clone(), link.closed.clone()));
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

    /// Sends `frame`, whose reply is [`Frame::Reply`] `id`, and returns the
    /// outcome that reply carries, to await.
    fn exchange(&self, id: u64, frame: Frame, deadline: Instant) -> impl Future<Output = Result<Outcome, LinkError>> + Send + 'static + use<> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent = if self.is_closed() {
            Err(LinkError::NotSent(format!("the connection to {} is closed", self.addr)))
        } else {
            self.waiting.lock().insert(id, reply_tx);
            let bytes = wire::encode(&frame);
            self.tx.send(Outgoing { id: Some(id), bytes }).map_err(|_| {
                self.waiting.lock().remove(&id);
                LinkError::NotSent(format!("the connection to {} is closed", self.addr))
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
        self.tx
            .send(Outgoing { id: None, bytes: wire::encode(frame) })
            .map_err(|_| LinkError::NotSent(format!("the connection to {} is closed", self.addr)))
    }
}

/// Connects, then writes what is queued and reads replies until the
/// connection breaks; then fails every call still waiting.
async fn run(addr: String, mut rx: mpsc::UnboundedReceiver<Outgoing>, waiting: Arc<Mutex<HashMap<u64, Waiter>>>, closed: Arc<AtomicBool>) {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return fail_unsent(&addr, &format!("connecting to {addr}: {e}"), &mut rx, &waiting, &closed),
        Err(_) => return fail_unsent(&addr, &format!("connecting to {addr}: no answer in {CONNECT_TIMEOUT:?}"), &mut rx, &waiting, &closed),
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
    let writes = super::write_frames(write, &mut rx, |out: Outgoing| out.bytes);
    tokio::select! {
        () = replies => {}
        _ = writes => {}
    }
    closed.store(true, Ordering::Release);
    // Written or not, a call in flight may have reached the peer.
    let lost: Vec<Waiter> = waiting.lock().drain().map(|(_, w)| w).collect();
    for waiter in lost {
        let _ = waiter.send(Err(LinkError::Lost(format!("the connection to {addr} broke"))));
    }
    fail_unsent(&addr, "the connection broke before it was sent", &mut rx, &waiting, &closed);
}

/// Fails every call not yet written: none of them reached the peer.
fn fail_unsent(addr: &str, why: &str, rx: &mut mpsc::UnboundedReceiver<Outgoing>, waiting: &Mutex<HashMap<u64, Waiter>>, closed: &AtomicBool) {
    closed.store(true, Ordering::Release);
    rx.close();
    while let Ok(unsent) = rx.try_recv() {
        if let Some(waiter) = unsent.id.and_then(|id| waiting.lock().remove(&id)) {
            let _ = waiter.send(Err(LinkError::NotSent(format!("{addr}: {why}"))));
        }
    }
}
