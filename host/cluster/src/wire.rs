//! What travels between hosts: one frame per request or reply, each a
//! length-delimited ([`tokio_util::codec::LengthDelimitedCodec`]) postcard
//! encoding of [`Frame`]. Many requests share one connection; a reply
//! names the request it answers by id, so replies may come in any order.
//!
//! A request carries what its turn needs on the owner: target, method,
//! payload, call chain (re-entrancy compares it), caller, the *remaining*
//! deadline (hosts' clocks differ), and the host work riding on it (a
//! job's lease, a message id, a projection checkpoint).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use quark_core::id::{ActorId, ChainId};
use quark_core::jobs::JobCompletion;
use quark_core::journal::CheckpointAdvance;
use quark_core::{ActorError, ErrorKind};
use quark_runtime::{Control, InboxTurn, JobTurn, Request};
use serde::{Deserialize, Serialize};

/// Largest frame either side accepts: a payload at its largest (a reply
/// of a turn may be 32 MiB) with room for the envelope.
pub(crate) const MAX_FRAME: usize = 40 << 20;

/// One frame on a host-to-host connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A request for an actor the receiving host owns (or should claim).
    Call {
        /// Chosen by the sender, unique on the connection.
        id: u64,
        /// How the sender waits for it.
        mode: Mode,
        /// The request.
        request: WireRequest,
    },
    /// The answer to [`Frame::Call`] `id` (asks and queued asks; tells get none).
    Reply {
        /// The call's id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// The sender deployed or rolled back: serve the store's active
    /// versions now, then answer [`Frame::Reply`] `id` (the deploy waits
    /// for it).
    VersionsChanged {
        /// Chosen by the sender, unique on the connection.
        id: u64,
    },
    /// A locality question ([`crate::locality::Question`], postcard):
    /// an exchange offer, or a request for this host's sampled figures;
    /// answered by [`Frame::Reply`] `id` with the answer's bytes.
    Locality {
        /// Chosen by the sender, unique on the connection.
        id: u64,
        /// The encoded question.
        #[serde(with = "payload_bytes")]
        question: Vec<u8>,
    },
}

/// How a call is delivered on the receiving host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// Run it (inline when the actor is idle) and reply.
    Ask,
    /// Queue it behind the calls queued before it on this connection, and reply.
    Queue,
    /// Queue it; no reply.
    Tell,
}

/// A [`Request`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireRequest {
    pub(crate) target: String,
    pub(crate) method: String,
    #[serde(with = "payload_bytes")]
    pub(crate) payload: Vec<u8>,
    pub(crate) chain: u128,
    pub(crate) caller: Option<String>,
    /// Microseconds the caller still waits.
    pub(crate) remaining_us: u64,
    pub(crate) control: Option<WireControl>,
}

/// [`Control`] on the wire. Flags that a turn sets for its sender
/// (a job's `effect_free`) come back in the reply; a lane's shared
/// `failed` flag is kept by the receiving connection, per `group`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireControl {
    Snapshot,
    Checkpoint { projection: String, from: u64, to: u64 },
    Job { id: String, lease: String, next_run_at_ms: Option<i64>, attempt: u32 },
    Inbox { sender: String, message_id: String, check: bool, lane: Option<WireLane> },
}

/// One message of a lane queued with others on one actor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WireLane {
    /// The same for the messages queued together (the sender's flag's address).
    pub(crate) group: u64,
    /// The first of them.
    pub(crate) first: bool,
}

/// How a call ended on the receiving host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The turn's reply (after its commit).
    Ok {
        #[serde(with = "payload_bytes")]
        reply: Vec<u8>,
        /// A job's turn had no effect (see [`JobTurn::effect_free`]).
        effect_free: bool,
    },
    /// The turn (or the host) failed.
    Err { kind: ErrorKind, message: String },
    /// The receiving host does not serve the actor: nothing ran. `owner`
    /// is the host that does, when it knows one; `leaving`: the receiving
    /// host is leaving the cluster (place nothing on it).
    Moved { owner: Option<String>, leaving: bool },
}

impl WireRequest {
    /// The wire form of `request`.
    pub(crate) fn from_request(request: &Request) -> WireRequest {
        let control = request.control.as_deref().map(|control| match control {
            Control::Snapshot => WireControl::Snapshot,
            Control::Checkpoint(c) => WireControl::Checkpoint { projection: c.projection.clone(), from: c.from, to: c.to },
            Control::Job(job) => WireControl::Job {
                id: job.completion.id.clone(),
                lease: job.completion.lease.clone(),
                next_run_at_ms: job.completion.next_run_at_ms,
                attempt: job.attempt,
            },
            Control::Inbox(inbox) => WireControl::Inbox {
                sender: inbox.sender.clone(),
                message_id: inbox.message_id.clone(),
                check: inbox.check,
                lane: inbox.lane.as_ref().map(|lane| WireLane { group: Arc::as_ptr(&lane.failed) as u64, first: lane.first }),
            },
        });
        WireRequest {
            target: request.target.to_string(),
            method: request.method.clone(),
            payload: request.payload.clone(),
            chain: request.chain.as_u128(),
            caller: request.caller.as_ref().map(ToString::to_string),
            remaining_us: request.remaining().as_micros().min(u128::from(u64::MAX)) as u64,
            control,
        }
    }

    /// The request again, on the receiving host: its deadline from the
    /// remaining time, a lane's shared flag from `lane_flag`. Also returns
    /// a job turn's `effect_free` flag, to read once the turn is done.
    pub(crate) fn into_request(
        self,
        lane_flag: impl FnOnce(WireLane) -> Arc<AtomicBool>,
    ) -> Result<(Request, Option<Arc<AtomicBool>>), ActorError> {
        let mut effect_free = None;
        let control = self.control.map(|control| match control {
            WireControl::Snapshot => Control::Snapshot,
            WireControl::Checkpoint { projection, from, to } => Control::Checkpoint(CheckpointAdvance { projection, from, to }),
            WireControl::Job { id, lease, next_run_at_ms, attempt } => {
                let flag = Arc::new(AtomicBool::new(false));
                effect_free = Some(flag.clone());
                Control::Job(JobTurn { completion: JobCompletion { id, lease, next_run_at_ms }, attempt, effect_free: flag })
            }
            WireControl::Inbox { sender, message_id, check, lane } => Control::Inbox(InboxTurn {
                sender,
                message_id,
                check,
                lane: lane.map(|lane| quark_runtime::LaneTurn { failed: lane_flag(lane), first: lane.first }),
            }),
        });
        let request = Request {
            target: ActorId::parse(&self.target)?,
            method: self.method,
            payload: self.payload,
            chain: ChainId::from_u128(self.chain),
            caller: self.caller.as_deref().map(ActorId::parse).transpose()?,
            deadline: Instant::now() + Duration::from_micros(self.remaining_us),
            control: control.map(Box::new),
        };
        Ok((request, effect_free))
    }
}

impl Outcome {
    /// The outcome of a finished call.
    pub(crate) fn of(result: Result<Vec<u8>, ActorError>, effect_free: bool) -> Outcome {
        match result {
            Ok(reply) => Outcome::Ok { reply, effect_free },
            Err(e) => Outcome::Err { kind: e.kind, message: e.message },
        }
    }
}

/// Encodes a frame as it goes on the wire: the 4-byte big-endian length
/// [`codec`] reads, then the frame (one allocation for both).
pub(crate) fn encode(frame: &Frame) -> ::bytes::Bytes {
    let mut bytes = postcard::to_extend(frame, vec![0u8; 4]).expect("every frame encodes");
    let length = u32::try_from(bytes.len() - 4).expect("a frame is under 4 GiB");
    bytes[..4].copy_from_slice(&length.to_be_bytes());
    bytes.into()
}

/// Decodes a frame.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The codec both ends frame with.
pub(crate) fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

/// Payloads as one length-prefixed run of bytes (serde's default writes a
/// `Vec<u8>` element by element).
mod payload_bytes {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}
