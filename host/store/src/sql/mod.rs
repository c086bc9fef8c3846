//! What the SQL backends share, one file per concern: statements written
//! with `$N` placeholders (SQLite and PostgreSQL both accept them), row
//! decoding, and the store implementations as macros over the backend's
//! database type. This file holds the helpers every concern uses.

mod components;
mod jobs;
mod journal;
mod outbox;

pub(crate) use components::{sql_component_store, version_from_row};
pub(crate) use jobs::{JOB_COLUMNS, job_from_row, sql_job_store};
pub(crate) use journal::{EVENT_COLUMNS, checkpoint_conflict, event_from_row, journal_batch, journal_conflict, sql_journal_store};
pub(crate) use outbox::{OUTBOX_COLUMNS, lane_pairs, outbox_from_row, sql_inbox_store, sql_outbox_store};

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
