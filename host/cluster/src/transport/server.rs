//! The peer listener: other hosts' requests for actors this host owns.
//!
//! Per connection, asks run concurrently (one that does not finish in its
//! first poll goes on in its own task, so a slow turn holds up nothing
//! else), while queued asks and tells are taken in
//! the order they arrived, one after another, so a lane's messages (and
//! one actor's tells to another) keep their order across hosts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::writer::Writer;
use crate::Inner;
use crate::wire::{self, Frame, Mode, Outcome, WireLane, WireRequest};

/// Accepts peers' connections for as long as the cluster lives.
pub(crate) async fn serve(listener: TcpListener, cluster: Weak<Inner>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if cluster.strong_count() == 0 {
            return;
        }
        tokio::spawn(connection(stream, cluster.clone()));
    }
}

/// One peer's connection, until it closes.
async fn connection(stream: TcpStream, cluster: Weak<Inner>) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let tx = Replies { writer: Arc::new(Writer::new()), in_flight: Arc::new(AtomicUsize::new(0)) };
    let flusher = tx.writer.clone();
    tokio::spawn(async move { flusher.flush(write).await });
    let (ordered_tx, ordered_rx) = mpsc::unbounded_channel();
    tokio::spawn(in_order(ordered_rx, cluster.clone(), tx.clone()));
    let mut reader = FramedRead::new(read, wire::codec());
    while let Some(Ok(bytes)) = reader.next().await {
        if let Some(cluster) = cluster.upgrade() {
            cluster.last_frame_ms.store(quark_core::time::now_ms(), Ordering::Release);
        }
        let frame = wire::decode(&bytes);
        if matches!(frame, Ok(Frame::Call { mode: Mode::Ask | Mode::Queue, .. } | Frame::VersionsChanged { .. } | Frame::Locality { .. })) {
            tx.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        match frame {
            Ok(Frame::Call { id, mode: Mode::Ask, request }) => {
                // Most asks finish in their first poll (an idle actor's
                // turn that writes nothing runs inline and commits
                // nothing): that one runs here, with no spawn and no hop
                // to another task. One that must wait goes on in its own.
                let mut ask = Box::pin(ask(cluster.clone(), id, request, tx.clone()));
                if futures::poll!(ask.as_mut()).is_pending() {
                    tokio::spawn(ask);
                }
            }
            Ok(Frame::Call { id, mode, request }) => {
                let _ = ordered_tx.send((id, mode, request));
            }
            Ok(Frame::VersionsChanged { id }) => {
                let (cluster, tx) = (cluster.clone(), tx.clone());
                tokio::spawn(async move {
                    let Some(host) = cluster.upgrade().and_then(|c| c.host()) else { return };
                    let outcome = Outcome::of(crate::serve_active_versions(&host).await.map(|()| Vec::new()), false);
                    reply(&tx, id, outcome);
                });
            }
            Ok(Frame::Locality { id, question }) => {
                let (cluster, tx) = (cluster.clone(), tx.clone());
                tokio::spawn(async move {
                    let outcome = match cluster.upgrade() {
                        Some(cluster) => Outcome::of(cluster.answer_locality(&question).await, false),
                        None => Outcome::of(Err(quark_core::ActorError::unavailable("this host is stopping")), false),
                    };
                    reply(&tx, id, outcome);
                });
            }
            Ok(Frame::Reply { .. }) => tracing::debug!("a peer sent a reply to a call this host did not make"),
            Err(e) => {
                tracing::warn!(error = %e, "a peer sent a frame that does not decode; closing its connection");
                break;
            }
        }
    }
    tx.writer.close("the peer's connection closed");
}

/// Where a connection's replies go, and how many it owes.
#[derive(Clone)]
struct Replies {
    writer: Arc<Writer>,
    /// Calls that want a reply and have none yet.
    in_flight: Arc<AtomicUsize>,
}

/// Answers call `id`: straight to the socket when it is the only call in
/// flight on the connection (latency), through the flusher when others
/// are (one write for the lot).
fn reply(tx: &Replies, id: u64, outcome: Outcome) {
    let alone = tx.in_flight.fetch_sub(1, Ordering::AcqRel) <= 1;
    let _ = tx.writer.send(None, wire::encode(&Frame::Reply { id, outcome }), alone);
}

/// One ask: admitted (this host serves the actor), run, answered.
async fn ask(cluster: Weak<Inner>, id: u64, request: WireRequest, tx: Replies) {
    let Some(cluster) = cluster.upgrade() else {
        return reply(&tx, id, Outcome::Moved { owner: None, leaving: true });
    };
    let outcome = match cluster.admit(&request.target).await {
        Err(outcome) => outcome,
        Ok(_admitted) => match (cluster.host(), request.into_request(|_| Arc::new(AtomicBool::new(false)))) {
            (Some(host), Ok((request, effect_free))) => {
                let result = host.ask_here(request).await;
                Outcome::of(result, effect_free.is_some_and(|f| f.load(Ordering::Acquire)))
            }
            (None, _) => Outcome::Moved { owner: None, leaving: true },
            (_, Err(e)) => Outcome::of(Err(e), false),
        },
    };
    reply(&tx, id, outcome);
}

/// Queued asks and tells, in arrival order. A lane's queued messages share
/// one flag here, as they share one on the sending host.
async fn in_order(mut rx: mpsc::UnboundedReceiver<(u64, Mode, WireRequest)>, cluster: Weak<Inner>, tx: Replies) {
    let mut lanes: HashMap<u64, Weak<AtomicBool>> = HashMap::new();
    while let Some((id, mode, request)) = rx.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            if mode == Mode::Queue {
                reply(&tx, id, Outcome::Moved { owner: None, leaving: true });
            }
            continue;
        };
        let admitted = match cluster.admit(&request.target).await {
            Ok(admitted) => admitted,
            Err(outcome) => {
                if mode == Mode::Queue {
                    reply(&tx, id, outcome);
                }
                continue;
            }
        };
        if lanes.len() > 4096 {
            lanes.retain(|_, flag| flag.strong_count() > 0);
        }
        let lane_flag = |lane: WireLane| {
            let known = lanes.get(&lane.group).and_then(Weak::upgrade);
            match known {
                Some(flag) if !lane.first => flag,
                _ => {
                    let flag = Arc::new(AtomicBool::new(false));
                    lanes.insert(lane.group, Arc::downgrade(&flag));
                    flag
                }
            }
        };
        let (request, effect_free) = match request.into_request(lane_flag) {
            Ok(parts) => parts,
            Err(e) => {
                if mode == Mode::Queue {
                    reply(&tx, id, Outcome::of(Err(e), false));
                }
                continue;
            }
        };
        let Some(host) = cluster.host() else { continue };
        if mode == Mode::Tell {
            let target = request.target.clone();
            if let Err(e) = host.tell_here(request) {
                tracing::warn!(target = %target, error = %e, "a told message from a peer could not be queued");
            }
            continue;
        }
        match host.queue_here(request) {
            Ok(pending) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = pending.await;
                    drop(admitted);
                    reply(&tx, id, Outcome::of(result, effect_free.is_some_and(|f| f.load(Ordering::Acquire))));
                });
            }
            Err(e) => reply(&tx, id, Outcome::of(Err(e), false)),
        }
    }
}
