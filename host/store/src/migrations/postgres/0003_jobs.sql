-- Durable jobs. A claim sets `lease` and `lease_until_ms`; the job's turn
-- completes it only while `lease` is still the one it claimed with.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    target           TEXT    NOT NULL,
    actor_type       TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    payload          BYTEA   NOT NULL,
    queue            TEXT    NOT NULL,
    priority         BIGINT  NOT NULL,
    status           TEXT    NOT NULL,
    run_at_ms        BIGINT  NOT NULL,
    cron             TEXT,
    time_zone        TEXT,
    catch_up         TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL,
    max_attempts     BIGINT  NOT NULL,
    backoff_ms       BIGINT  NOT NULL,
    max_backoff_ms   BIGINT  NOT NULL,
    timeout_ms       BIGINT ,
    idempotency_key  TEXT,
    lease            TEXT,
    lease_until_ms   BIGINT ,
    cancel_requested BIGINT  NOT NULL DEFAULT 0,
    progress         BIGINT ,
    progress_note    TEXT,
    errors           TEXT    NOT NULL DEFAULT '[]',
    created_at_ms    BIGINT  NOT NULL,
    updated_at_ms    BIGINT  NOT NULL
);
-- Jobs of one status in claim order: a claim walks it and stops at its
-- LIMIT, however many jobs wait. Running jobs by lease expiry; the next
-- due time per status.
CREATE INDEX jobs_claim ON jobs (status, priority DESC, run_at_ms);
CREATE INDEX jobs_due ON jobs (status, run_at_ms);
CREATE INDEX jobs_lease ON jobs (status, lease_until_ms);
CREATE INDEX jobs_target ON jobs (target);
