-- Message ids are unique per sender, not across senders: two senders may
-- pick the same id for messages to one receiver, and an HTTP caller's
-- idempotency key (sender '') never matches an actor's message.
-- The inbox gains the sender; an existing entry takes the sender of the
-- outbox message it matches (one still in the outbox may be redelivered),
-- and '' otherwise (HTTP keys; delivered messages are never redelivered).
CREATE TABLE inbox_by_sender (
    actor      TEXT    NOT NULL,
    sender     TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    reply      BLOB    NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (actor, sender, message_id)
);
INSERT INTO inbox_by_sender (actor, sender, message_id, reply, at_ms)
SELECT i.actor,
       COALESCE((SELECT o.sender FROM outbox o WHERE o.id = i.message_id AND o.kind = 'actor' AND o.target = i.actor), ''),
       i.message_id, i.reply, i.at_ms
FROM inbox i;
DROP TABLE inbox;
ALTER TABLE inbox_by_sender RENAME TO inbox;
CREATE INDEX inbox_at ON inbox (at_ms);

-- The outbox: ids unique per sender.
CREATE TABLE outbox_by_sender (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL,
    sender         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    target         TEXT NOT NULL,
    method         TEXT,
    payload        BLOB NOT NULL,
    event_type     TEXT,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at_ms     INTEGER NOT NULL,
    last_error     TEXT,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (sender, id)
);
INSERT INTO outbox_by_sender SELECT seq, id, sender, kind, target, method, payload, event_type, status, attempts, next_at_ms, last_error, created_at_ms FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_by_sender RENAME TO outbox;
CREATE INDEX outbox_lane_order ON outbox (sender, kind, target, seq) WHERE status = 'pending';
