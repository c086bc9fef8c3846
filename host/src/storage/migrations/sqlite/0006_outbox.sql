-- The outbox: messages turns sent, inserted in their commit, deleted once
-- delivered. `seq` orders them; only the oldest pending message of each
-- (sender, kind, target) is claimable, so a pair's messages stay in order.
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    sender         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    method         TEXT,
    payload        BLOB    NOT NULL,
    event_type     TEXT,
    status         TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at_ms     INTEGER NOT NULL,
    lease          TEXT,
    lease_until_ms INTEGER,
    last_error     TEXT,
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pair ON outbox (sender, kind, target, seq) WHERE status = 'pending';
