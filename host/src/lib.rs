//! Quark: a host for durable WebAssembly actors.
//!
//! Actors are wasm components that fit the `quark:actor` world (see `wit/`).
//! The host activates an actor on its first message, runs one turn at a time
//! per actor, and commits everything durable a turn did in one transaction
//! before the reply goes out.
//!
//! - [`runtime`]: the engine, component registry, activations and turns;
//! - [`capabilities`]: the host side of each WIT interface;
//! - [`storage`]: the `Store` traits and their SQLite and PostgreSQL backends;
//! - [`journal`]: audit trail, replay, snapshots and projections;
//! - [`jobs`]: durable jobs and their runner;
//! - [`api`]: the HTTP API; [`cli`]: the `quark` command.

pub mod api;
pub mod capabilities;
pub mod cli;
pub mod inbox;
pub mod jobs;
pub mod journal;
pub mod metrics;
pub mod outbox;
pub mod runtime;

pub use quark_core::{ActorError, ActorId, ErrorKind, Manifest, error, id};
/// The store traits and backends (the `quark-store` crate).
pub use quark_store as storage;
pub use runtime::{Host, HostConfig};
