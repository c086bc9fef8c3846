//! Quark: a host for durable WebAssembly actors.
//!
//! Actors are wasm components that fit the `quark:actor` world (see `wit/`).
//! The host activates an actor on its first message, runs one turn at a time
//! per actor, and commits everything durable a turn did in one transaction
//! before the reply goes out.
//!
//! This crate is the `quark` binary and what runs beside the runtime:
//! - [`node`]: a [`Node`], the runtime and its services wired together;
//! - [`cluster`]: a host's part in a cluster on a shared store (the `quark-cluster` crate);
//! - [`jobs`]: durable jobs and their runner;
//! - [`outbox`]: the outbox dispatcher and its sinks;
//! - [`projections`]: CQRS read models fed from the journal;
//! - [`api`]: the HTTP API; [`cli`]: the `quark` command.
//!
//! The runtime itself (engine, activations, turns, capabilities, journal
//! replay) is the [`runtime`] crate; the stores are [`storage`].

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod jobs;
pub mod node;
pub mod outbox;
pub mod projections;

pub use node::{Node, NodeConfig};
/// A host's part in a cluster (the `quark-cluster` crate).
pub use quark_cluster as cluster;
pub use quark_core::{ActorError, ActorId, ErrorKind, Manifest, error, id};
/// The actor runtime (the `quark-runtime` crate).
pub use quark_runtime as runtime;
pub use quark_runtime::{Host, HostConfig};
/// The store traits and backends (the `quark-store` crate).
pub use quark_store as storage;
