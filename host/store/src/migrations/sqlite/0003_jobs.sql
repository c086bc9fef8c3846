-- Durable jobs. A claim sets `lease` and `lease_until_ms`; the job's turn
-- completes it only while `lease` is still the one it claimed with.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    target           TEXT    NOT NULL,
    actor_type       TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    status           TEXT    NOT NULL,
    run_at_ms        INTEGER NOT NULL,
    cron             TEXT,
    time_zone        TEXT,
    catch_up         TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    backoff_ms       INTEGER NOT NULL,
    max_backoff_ms   INTEGER NOT NULL,
    timeout_ms       INTEGER,
    idempotency_key  TEXT,
    lease            TEXT,
    lease_until_ms   INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         INTEGER,
    progress_note    TEXT,
    errors           TEXT    NOT NULL DEFAULT '[]',
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
);
-- Jobs of one status in claim order: a claim walks it and stops at its
-- LIMIT, however many jobs wait. Running jobs by lease expiry; the next
-- due time per status.
CREATE INDEX jobs_claim ON jobs (status, priority DESC, run_at_ms);
CREATE INDEX jobs_due ON jobs (status, run_at_ms);
CREATE INDEX jobs_lease ON jobs (status, lease_until_ms);
CREATE INDEX jobs_target ON jobs (target);
