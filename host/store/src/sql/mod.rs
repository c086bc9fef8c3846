//! What the SQL backends share, one file per concern: statements written
//! with `$N` placeholders (SQLite and PostgreSQL both accept them), row
//! decoding, and the store implementations, generic over a [`Dialect`]
//! (how a backend runs a statement and reads a column, and where its SQL
//! differs) and a [`SqlStore`] (its pools). This file holds the helpers
//! every concern uses.
//!
//! Statements pass their parameters as [`Arg`]s, which the dialect binds:
//! the shared code needs no sqlx trait bounds, only these two traits.

mod components;
mod jobs;
mod journal;
mod outbox;

pub(crate) use jobs::{JOB_COLUMNS, job_from_row, sql_job_store};
pub(crate) use journal::{commit_checkpoints, journal_batch, journal_conflict};
pub(crate) use outbox::{OUTBOX_COLUMNS, commit_inbox, lane_pairs, outbox_from_row, sql_outbox_store};

use async_trait::async_trait;

use crate::{InboxEntry, StoreError};

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

/// A backend's connection.
pub(crate) type Conn<D> = <D as sqlx::Database>::Connection;

/// A backend's result row.
pub(crate) type SqlRow<D> = <D as sqlx::Database>::Row;

/// How a SQL backend runs statements and reads columns, and where its SQL
/// differs from the other's. Implemented by `sqlx::Sqlite` and
/// `sqlx::Postgres` (in `sqlite.rs` and `postgres.rs`).
#[async_trait]
pub(crate) trait Dialect: sqlx::Database {
    /// Runs `sql` with `args`; the number of rows it changed.
    async fn execute(conn: &mut Conn<Self>, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError>;

    /// Runs a query; every row.
    async fn fetch_all(conn: &mut Conn<Self>, sql: &str, args: &[Arg<'_>]) -> Result<Vec<SqlRow<Self>>, StoreError>;

    /// Runs a query; its first row, if any.
    async fn fetch_optional(conn: &mut Conn<Self>, sql: &str, args: &[Arg<'_>]) -> Result<Option<SqlRow<Self>>, StoreError>;

    /// A text column.
    fn text(row: &SqlRow<Self>, column: &str) -> Result<String, StoreError>;

    /// A nullable text column.
    fn opt_text(row: &SqlRow<Self>, column: &str) -> Result<Option<String>, StoreError>;

    /// An integer column.
    fn int(row: &SqlRow<Self>, column: &str) -> Result<i64, StoreError>;

    /// A nullable integer column.
    fn opt_int(row: &SqlRow<Self>, column: &str) -> Result<Option<i64>, StoreError>;

    /// A blob column.
    fn bytes(row: &SqlRow<Self>, column: &str) -> Result<Vec<u8>, StoreError>;

    /// Inserts inbox entries (receiver, entry), skipping ones there
    /// already; the number inserted.
    async fn insert_inbox(conn: &mut Conn<Self>, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError>;
}

/// A SQL store: its dialect and its pools. The shared store code is
/// implemented for every `SqlStore`.
pub(crate) trait SqlStore: Send + Sync + 'static {
    /// The backend.
    type Db: Dialect;

    /// The pool for writes and transactions.
    fn writer(&self) -> &sqlx::Pool<Self::Db>;

    /// The pool for reads.
    fn reader(&self) -> &sqlx::Pool<Self::Db>;
}

/// A backend's query with `args` bound, in order (both backends take
/// every kind of [`Arg`]).
pub(crate) fn bind_args<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for arg in args {
        query = match *arg {
            Arg::Text(v) => query.bind(v),
            Arg::OptText(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
            Arg::OptInt(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
        };
    }
    query
}

/// A lane as a commit upserts it: sender, kind, target, due at (ms).
pub(crate) type LaneKey<'a> = (&'a str, &'a str, &'a str, i64);

/// Prepared statements each connection keeps: every shape of a group
/// commit's batched statements ([`pow2_chunks`]) fits, so commits do not
/// parse again once warm.
pub(crate) const STATEMENT_CACHE: usize = 500;

/// `$first, $first+1, …` for `count` placeholders.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Cuts `rows` into chunks of at most `max` rows, each a power of two, so
/// a multi-row statement has only a few shapes: each is prepared once and
/// then reused from sqlx's statement cache (preparing a new shape for every
/// batch size cost about a fifth of the journal's throughput).
pub(crate) fn pow2_chunks<T>(mut rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = if rows.len() >= max { max } else { 1 << (usize::BITS - 1 - rows.len().leading_zeros()) };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}
