//! Quark's end-to-end tests: one binary, one module per area.
//!
//! They run real components (built from `samples/` and `tests/actors/` by
//! `make samples`) on a real SQLite file and, where named, a real PostgreSQL.

mod support;

mod actor_calls;
mod architecture;
mod cli_process;
mod cluster;
mod cluster_calls;
mod failures;
mod hardening;
mod hot_swap;
mod http_api;
mod jobs;
mod journal;
mod languages;
mod linearizable;
mod locality;
mod memory;
mod actor_migration;
mod migrations;
mod outbox;
mod stateless_workers;
mod storage_conformance;
mod workflows;
