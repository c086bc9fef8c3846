//! Quark's core vocabulary: actor ids, errors, manifests, and the records
//! that cross every seam (turn commits, events, jobs, outbox messages),
//! with the pure logic on them (job planning, cron ticks, time parsing).
//!
//! No async runtime, wasm engine or database here: the store, the runtime
//! and the server all depend on this crate, never the other way round.

#![warn(missing_docs)]

pub mod commit;
pub mod error;
pub mod id;
pub mod jobs;
pub mod journal;
pub mod manifest;
pub mod outbox;
pub mod time;

pub use error::{ActorError, ErrorKind};
pub use id::{ActorId, ChainId};
pub use manifest::{ComponentVersion, Manifest, Retention};
pub use time::now_ms;
