-- Message ids are unique per sender, not across senders: two senders may
-- pick the same id for messages to one receiver, and an HTTP caller's
-- idempotency key (sender '') never matches an actor's message.
-- The inbox gains the sender; an existing entry takes the sender of the
-- outbox message it matches (one still in the outbox may be redelivered),
-- and '' otherwise (HTTP keys; delivered messages are never redelivered).
ALTER TABLE inbox ADD COLUMN sender TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE inbox SET sender = o.sender FROM outbox o WHERE o.id = inbox.message_id AND o.kind = 'actor' AND o.target = inbox.actor;
ALTER TABLE inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE inbox ADD PRIMARY KEY (actor, sender, message_id);
ALTER TABLE inbox ALTER COLUMN sender DROP DEFAULT;

-- The outbox: ids unique per sender.
ALTER TABLE outbox DROP CONSTRAINT outbox_id_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_sender_id_key UNIQUE (sender, id);
