//! Where a guest's stdout and stderr go: into the host's log, line by line,
//! tagged with the actor, and the last few lines kept so that a trap's error
//! can say what the guest printed (a Rust panic message, say).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::id::ActorId;

/// Bytes of recent output kept per instance for error messages.
const TAIL_BYTES: usize = 1024;

/// Longest line forwarded to the log; longer lines are cut.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Buffers {
    tail: VecDeque<u8>,
    line: Vec<u8>,
}

/// A guest output stream (stdout or stderr) of one instance.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    actor: ActorId,
    stream: &'static str,
    buffers: Arc<Mutex<Buffers>>,
}

impl GuestOutput {
    pub(crate) fn new(actor: ActorId, stream: &'static str) -> Self {
        GuestOutput { actor, stream, buffers: Arc::default() }
    }

    /// Forgets what earlier turns printed.
    pub(crate) fn clear_tail(&self) {
        self.buffers.lock().tail.clear();
    }

    /// The last lines printed during this turn, joined with ` | `.
    pub(crate) fn tail(&self) -> Option<String> {
        let buffers = self.buffers.lock();
        let text = String::from_utf8_lossy(&buffers.tail.iter().copied().collect::<Vec<u8>>()).into_owned();
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(3)..].join(" | "))
    }

    fn write(&self, bytes: &[u8]) {
        let mut b = self.buffers.lock();
        b.tail.extend(bytes);
        let excess = b.tail.len().saturating_sub(TAIL_BYTES);
        b.tail.drain(..excess);
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut b.line);
                tracing::info!(target: "quark::guest", actor = %self.actor, stream = self.stream, "{}", String::from_utf8_lossy(&line));
            } else if b.line.len() < MAX_LINE {
                b.line.push(byte);
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
