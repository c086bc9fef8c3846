-- Each actor's inbox: messages and idempotency keys it handled, with the
-- reply, written in the turn's commit. Entries expire after the host's
-- inbox retention (by `at_ms`).
CREATE TABLE inbox (
    actor      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    reply      BLOB    NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (actor, message_id)
);
CREATE INDEX inbox_at ON inbox (at_ms);
