-- Partial indexes, one per status a claim or the runner looks up, so a job
-- sits only in the index of its current status. A status change now moves
-- a job between two small indexes instead of rewriting three that cover
-- every status, and finished jobs (most of the table) are in none of them.
-- On PostgreSQL a row version also gets entries only in the indexes whose
-- predicate it meets. Drain throughput rose (BENCHMARKS.md, durable jobs).
DROP INDEX jobs_claim;
DROP INDEX jobs_due;
DROP INDEX jobs_lease;
-- Claim order per status: highest priority first, then the earliest due.
CREATE INDEX jobs_scheduled ON jobs (priority DESC, run_at_ms) WHERE status = 'scheduled';
CREATE INDEX jobs_failed ON jobs (priority DESC, run_at_ms) WHERE status = 'failed';
-- The next due time, and expired leases.
CREATE INDEX jobs_scheduled_due ON jobs (run_at_ms) WHERE status = 'scheduled';
CREATE INDEX jobs_running ON jobs (lease_until_ms) WHERE status = 'running';
-- Job ids and targets are ASCII: compare them as bytes, not through the
-- database's locale (every index lookup and insert compares them).
ALTER TABLE jobs ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN target TYPE TEXT COLLATE "C";
