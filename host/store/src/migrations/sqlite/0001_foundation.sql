-- Per-actor key/value state, written only by the turn committer.
CREATE TABLE actor_state (
    actor TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (actor, key)
) WITHOUT ROWID;

-- Component bytes, content-addressed: redeploying the same bytes stores nothing new.
CREATE TABLE component_blobs (
    hash  TEXT PRIMARY KEY,
    bytes BLOB NOT NULL
);

-- Every deployed version of every actor type.
CREATE TABLE component_versions (
    actor_type    TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    hash          TEXT    NOT NULL REFERENCES component_blobs (hash),
    size          INTEGER NOT NULL,
    manifest      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (actor_type, version)
);

-- The active version of each actor type (hot-swap and rollback move it).
CREATE TABLE component_heads (
    actor_type TEXT PRIMARY KEY,
    version    INTEGER NOT NULL
);
