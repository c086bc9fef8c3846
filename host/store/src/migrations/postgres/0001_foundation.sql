-- Per-actor key/value state, written only by the turn committer.
CREATE TABLE actor_state (
    actor TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (actor, key)
);

-- Component bytes, content-addressed: redeploying the same bytes stores nothing new.
CREATE TABLE component_blobs (
    hash  TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);

-- Every deployed version of every actor type.
CREATE TABLE component_versions (
    actor_type    TEXT    NOT NULL,
    version       BIGINT NOT NULL,
    hash          TEXT    NOT NULL REFERENCES component_blobs (hash),
    size          BIGINT NOT NULL,
    manifest      TEXT    NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (actor_type, version)
);

-- The active version of each actor type (hot-swap and rollback move it).
CREATE TABLE component_heads (
    actor_type TEXT PRIMARY KEY,
    version    BIGINT NOT NULL
);
