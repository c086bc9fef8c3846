//! The write side of a host-to-host connection, shared by every task that
//! sends on it.
//!
//! A frame sent while the connection is quiet goes straight to the socket
//! from the sending task: one non-blocking write, no hop to another task
//! (on a 2-core machine that hop, a wake of a writer task, was a fifth of
//! a remote ask's latency). A frame sent while others are in flight, or
//! while the socket is full, joins a queue that the connection's flusher
//! writes in one go, so a burst of calls under load still costs one
//! syscall, not one each. Either way frames reach the socket in the order
//! they were sent: while the queue is not empty, every frame joins it.
//!
//! Frames arrive encoded by [`crate::wire::encode`], length prefix included.

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// A connection's write side.
pub(crate) struct Writer {
    /// Set once connected; until then every frame queues.
    socket: OnceLock<OwnedWriteHalf>,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Frames the flusher owes the socket, oldest first, each with the id
    /// of the call it carries (the first may be written in part already).
    queue: VecDeque<(Option<u64>, Bytes)>,
    /// The flusher owns the socket's next bytes: frames sent now queue.
    flushing: bool,
    /// Why the connection takes no more frames, once it does not.
    broken: Option<String>,
}

/// Why a connection stopped taking frames, and the calls whose frames did
/// not reach the socket whole (so the peer cannot have run them).
pub(crate) struct Broken {
    pub(crate) why: String,
    pub(crate) unsent: Vec<u64>,
}

impl Writer {
    /// A writer for a connection still being made: frames queue until
    /// [`Writer::flush`] gets the socket.
    pub(crate) fn new() -> Self {
        Writer { socket: OnceLock::new(), state: Mutex::new(State { flushing: true, ..State::default() }), wake: Notify::new() }
    }

    /// Sends `bytes`, a frame of the call `id` (if it wants a reply):
    /// straight to the socket when `direct` and nothing is queued, else
    /// through the flusher. `Err` (why): the connection is broken, and the
    /// frame was not sent.
    pub(crate) fn send(&self, id: Option<u64>, mut bytes: Bytes, direct: bool) -> Result<(), String> {
        let mut state = self.state.lock();
        if let Some(why) = &state.broken {
            return Err(why.clone());
        }
        if !state.flushing && direct {
            let socket = self.socket.get().expect("a writer that is not flushing is connected");
            match socket.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    let _ = bytes.split_to(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    let why = format!("writing to the connection: {e}");
                    state.broken = Some(why.clone());
                    drop(state);
                    self.wake.notify_one();
                    return Err(why);
                }
            }
        }
        state.queue.push_back((id, bytes));
        if !state.flushing {
            state.flushing = true;
            drop(state);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Stops the connection taking frames (its other half failed).
    pub(crate) fn close(&self, why: &str) {
        self.state.lock().broken.get_or_insert_with(|| why.to_string());
        self.wake.notify_one();
    }

    /// Stops the connection taking frames before it was ever made: every
    /// queued frame's call is returned, none of them sent.
    pub(crate) fn never_connected(&self, why: &str) -> Broken {
        let mut state = self.state.lock();
        state.broken.get_or_insert_with(|| why.to_string());
        Broken { why: why.to_string(), unsent: state.queue.drain(..).filter_map(|(id, _)| id).collect() }
    }

    /// The flusher: takes the connected `socket`, then writes whatever
    /// queues, until the connection breaks or is closed.
    pub(crate) async fn flush(&self, socket: OwnedWriteHalf) -> Broken {
        if self.socket.set(socket).is_err() {
            return Broken { why: "a connection's writer was given a second socket".into(), unsent: Vec::new() };
        }
        let socket = self.socket.get().expect("just set");
        loop {
            let batch: Vec<(Option<u64>, Bytes)> = {
                let mut state = self.state.lock();
                if let Some(why) = &state.broken {
                    let why = why.clone();
                    return Broken { why, unsent: state.queue.drain(..).filter_map(|(id, _)| id).collect() };
                }
                // Nothing left: frames sent from now on may go straight to the socket.
                state.flushing = !state.queue.is_empty();
                state.queue.drain(..).collect()
            };
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            if let Err((why, mut unsent)) = write_all(socket, &batch).await {
                let mut state = self.state.lock();
                state.broken.get_or_insert_with(|| why.clone());
                unsent.extend(state.queue.drain(..).filter_map(|(id, _)| id));
                return Broken { why, unsent };
            }
        }
    }
}

/// Writes `batch` in order; on failure, why, and the calls of the frames
/// not written whole.
async fn write_all(socket: &OwnedWriteHalf, batch: &[(Option<u64>, Bytes)]) -> Result<(), (String, Vec<u64>)> {
    let mut buffer = BytesMut::with_capacity(batch.iter().map(|(_, b)| b.len()).sum());
    for (_, bytes) in batch {
        buffer.put_slice(bytes);
    }
    let mut written = 0;
    while written < buffer.len() {
        let outcome = match socket.try_write(&buffer[written..]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match socket.writable().await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            other => other,
        };
        match outcome {
            Ok(0) => return Err(unsent_after(batch, written, "the connection closed".into())),
            Ok(n) => written += n,
            Err(e) => return Err(unsent_after(batch, written, format!("writing to the connection: {e}"))),
        }
    }
    Ok(())
}

/// The calls in `batch` whose frames end after byte `written`.
fn unsent_after(batch: &[(Option<u64>, Bytes)], written: usize, why: String) -> (String, Vec<u64>) {
    let mut end = 0;
    let mut unsent = Vec::new();
    for (id, bytes) in batch {
        end += bytes.len();
        if end > written
            && let Some(id) = id
        {
            unsent.push(*id);
        }
    }
    (why, unsent)
}
