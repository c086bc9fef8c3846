-- The outbox: messages turns sent, inserted in their commit, deleted once
-- delivered, in `seq` order per lane.
CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT COLLATE "C" NOT NULL UNIQUE,
    sender         TEXT COLLATE "C" NOT NULL,
    kind           TEXT NOT NULL,
    target         TEXT COLLATE "C" NOT NULL,
    method         TEXT,
    payload        BYTEA NOT NULL,
    event_type     TEXT,
    status         TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    next_at_ms     BIGINT NOT NULL,
    last_error     TEXT,
    created_at_ms  BIGINT NOT NULL
);
CREATE INDEX outbox_lane_order ON outbox (sender, kind, target, seq) WHERE status = 'pending';
-- A lane per sender and destination with pending messages. A dispatcher
-- leases a whole lane and delivers its messages one after the other, so a
-- pair's messages arrive in order while many lanes run at once. A failed
-- message holds its lane until its retry (`next_at_ms`).
CREATE TABLE outbox_lanes (
    id             BIGSERIAL PRIMARY KEY,
    sender         TEXT COLLATE "C" NOT NULL,
    kind           TEXT NOT NULL,
    target         TEXT COLLATE "C" NOT NULL,
    next_at_ms     BIGINT NOT NULL,
    lease          TEXT,
    lease_until_ms BIGINT,
    taken_over     BIGINT NOT NULL DEFAULT 0,
    UNIQUE (sender, kind, target)
);
CREATE INDEX outbox_lanes_due ON outbox_lanes (next_at_ms);
