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
pub(crate) mod migrations;
mod outbox;
mod state;

pub(crate) use journal::{EventRow, HeadMove, NewHead};
pub(crate) use outbox::Lane;
pub(crate) use state::{StateDelete, StateUpsert};

use std::collections::HashSet;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::outbox::{NewLanes, OutboxMessage};
use crate::{InboxEntry, StoreError, TurnCommit};

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
/// differs from the other's: a few constants and the batched writes of a
/// group commit (multi-row `VALUES` on SQLite, `UNNEST` arrays on
/// PostgreSQL). Implemented by `sqlx::Sqlite` and `sqlx::Postgres` (in
/// `sqlite.rs` and `postgres.rs`).
#[async_trait]
pub(crate) trait Dialect: sqlx::Database {
    /// Whether claims name the index of each job status (`INDEXED BY`):
    /// SQLite's planner, without statistics, sorts every due job otherwise.
    const CLAIM_INDEX_HINTS: bool;

    /// Ends a claim's inner select: `FOR UPDATE SKIP LOCKED` where writers
    /// run concurrently, empty for a single-writer store.
    const SKIP_LOCKED: &'static str;

    /// Starts a claim's transaction. A claim only moves delivery
    /// bookkeeping and need not wait for the disk: a claim lost in a crash
    /// leaves its jobs due and its messages to be redelivered (the inbox
    /// recognises them), and a later durable commit flushes it anyway.
    const CLAIM_BEGIN: &'static str;

    /// Statements run on the writer before and after an outbox claim, for
    /// a backend that relaxes durability per connection rather than in
    /// [`Dialect::CLAIM_BEGIN`] (SQLite: `synchronous = NORMAL`, then
    /// `FULL` again); empty when not needed.
    const RELAXED_CLAIMS: (&'static str, &'static str);

    /// Locks the lanes a claim releases (`{}`: their ids' placeholders), in
    /// the order a commit upserts them, so the two never deadlock; empty
    /// for a single-writer store.
    const LOCK_LANES: &'static str;

    /// The placeholder of parameter `i` (from 1) in a statement whose
    /// parameters appear in order, each once: `$i` by default. SQLite
    /// looks a numbered parameter's name up with a linear search at every
    /// bind (quadratic in a multi-row insert of thousands of parameters),
    /// so it takes plain `?`s, bound in order.
    fn param(i: usize) -> String {
        format!("${i}")
    }

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

    /// The error for a failed `COMMIT`. Default: the database's error, as is.
    fn commit_failed(error: sqlx::Error) -> StoreError {
        error.into()
    }

    /// Creates journal heads, skipping streams that exist; the number created.
    async fn insert_heads(conn: &mut Conn<Self>, heads: &[NewHead<'_>]) -> Result<u64, StoreError>;

    /// Moves journal heads still at their expected version; the number moved.
    async fn move_heads(conn: &mut Conn<Self>, moves: &[HeadMove<'_>]) -> Result<u64, StoreError>;

    /// Appends journal events.
    async fn insert_events(conn: &mut Conn<Self>, events: &[EventRow<'_>]) -> Result<(), StoreError>;

    /// Writes state rows, replacing the values of keys that exist.
    async fn upsert_state(conn: &mut Conn<Self>, rows: &[StateUpsert<'_>]) -> Result<(), StoreError>;

    /// Deletes state rows.
    async fn delete_state(conn: &mut Conn<Self>, rows: &[StateDelete<'_>]) -> Result<(), StoreError>;

    /// Inserts inbox entries (receiver, entry), skipping ones there
    /// already; the number inserted.
    async fn insert_inbox(conn: &mut Conn<Self>, entries: &[(&str, &InboxEntry)]) -> Result<u64, StoreError>;

    /// Inserts messages, in order, skipping (sender, id) pairs already
    /// there; with `returning`, the keys ([`OutboxMessage::key`]) inserted.
    async fn insert_messages(conn: &mut Conn<Self>, messages: &[&OutboxMessage], returning: bool) -> Result<HashSet<String>, StoreError>;

    /// Upserts `lanes` (sorted, each once), new ones under `lease` (token,
    /// expiry); with a lease, each lane's row after it: `id, sender, kind,
    /// target, lease`.
    async fn upsert_lanes(conn: &mut Conn<Self>, lanes: &[Lane<'_>], lease: Option<&(String, i64)>) -> Result<Vec<SqlRow<Self>>, StoreError>;
}

/// What a commit tells other hosts about, where the store can push news.
#[derive(Debug, Clone, Copy)]
pub(crate) enum News {
    /// Jobs were added.
    Jobs,
    /// Outbox messages were sent.
    Messages,
}

/// A SQL store: its dialect, its pools and its announcements. The shared
/// store code is implemented for every `SqlStore`.
#[async_trait]
pub(crate) trait SqlStore: Send + Sync + 'static {
    /// The backend.
    type Db: Dialect;

    /// The pool for writes and transactions.
    fn writer(&self) -> &sqlx::Pool<Self::Db>;

    /// The pool for reads.
    fn reader(&self) -> &sqlx::Pool<Self::Db>;

    /// Lanes this host's commits opened, for its own dispatcher.
    fn new_lanes(&self) -> &NewLanes;

    /// Inside a commit, before any write: the fenced turns of `batch`
    /// ([`TurnCommit::fence`]) must still own their actors. Default (a
    /// single-host store, which has no directory): a fenced turn is refused.
    async fn check_fences(&self, _tx: &mut Conn<Self::Db>, batch: &[TurnCommit]) -> Result<(), StoreError> {
        match batch.iter().find(|c| c.fence.is_some()) {
            Some(c) => Err(StoreError::Fenced(format!("{}: this store is single-host and has no actor directory", c.actor))),
            None => Ok(()),
        }
    }

    /// Announces `news` inside a commit's transaction (delivered if it
    /// commits). Default: nothing to announce to.
    async fn announce_in(&self, _tx: &mut Conn<Self::Db>, _news: News) -> Result<(), StoreError> {
        Ok(())
    }

    /// Announces jobs added outside a turn. Default: nothing.
    async fn announce_jobs(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Yields whenever any host announces jobs; `None` (the default): poll.
    async fn job_announcements(&self) -> Option<BoxStream<'static, ()>> {
        None
    }

    /// Yields whenever another host sends messages; `None` (the default): poll.
    async fn message_announcements(&self) -> Option<BoxStream<'static, ()>> {
        None
    }
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

/// Prepared statements each connection keeps: every shape of a group
/// commit's batched statements ([`pow2_chunks`]) fits, so commits do not
/// parse again once warm.
pub(crate) const STATEMENT_CACHE: usize = 500;

/// `$first, $first+1, …` for `count` placeholders.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// [`Dialect::param`] placeholders `first, first+1, …` for `count`
/// parameters, in a statement whose parameters all appear in order.
pub(crate) fn params<D: Dialect>(first: usize, count: usize) -> String {
    (first..first + count).map(D::param).collect::<Vec<_>>().join(", ")
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

/// `(a, b)` row values (`(id, lease)`, `(sender, id)`) for `count` pairs,
/// [`Dialect::param`] placeholders from `first`, in a statement whose
/// parameters all appear in order.
pub(crate) fn param_pairs<D: Dialect>(first: usize, count: usize) -> String {
    (0..count).map(|i| format!("({}, {})", D::param(first + 2 * i), D::param(first + 2 * i + 1))).collect::<Vec<_>>().join(", ")
}
