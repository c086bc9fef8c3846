-- The outbox: messages turns sent, inserted in their commit, deleted once
-- delivered. `seq` orders them; only the oldest pending message of each
-- (sender, kind, target) is claimable, so a pair's messages stay in order.
CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT COLLATE "C" NOT NULL UNIQUE,
    sender         TEXT COLLATE "C" NOT NULL,
    kind           TEXT    NOT NULL,
    target         TEXT COLLATE "C" NOT NULL,
    method         TEXT,
    payload        BYTEA   NOT NULL,
    event_type     TEXT,
    status         TEXT    NOT NULL,
    attempts       BIGINT  NOT NULL DEFAULT 0,
    next_at_ms     BIGINT  NOT NULL,
    lease          TEXT,
    lease_until_ms BIGINT,
    last_error     TEXT,
    created_at_ms  BIGINT  NOT NULL
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_pair ON outbox (sender, kind, target, seq) WHERE status = 'pending';
