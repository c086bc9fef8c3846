-- Every actor's journal. `seq` is the global position projections read by
-- (AUTOINCREMENT: never reused, even after retention deletes the newest rows).
CREATE TABLE journal (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    actor          TEXT    NOT NULL,
    actor_type     TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    caller         TEXT,
    method         TEXT    NOT NULL,
    UNIQUE (actor, version)
);
CREATE INDEX journal_by_type ON journal (actor_type, seq);

-- Events moved out of the live journal by `archive` retention.
CREATE TABLE journal_archive (
    seq            INTEGER PRIMARY KEY,
    actor          TEXT    NOT NULL,
    actor_type     TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    caller         TEXT,
    method         TEXT    NOT NULL,
    UNIQUE (actor, version)
);

CREATE INDEX journal_archive_by_type ON journal_archive (actor_type, seq);

-- Each stream's version: the optimistic-concurrency check of every append.
CREATE TABLE journal_heads (
    actor   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- Snapshots of event-sourced actors, all kept (replays start from them).
CREATE TABLE journal_snapshots (
    actor             TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    component_version INTEGER NOT NULL,
    taken_at_ms       INTEGER NOT NULL,
    data              BLOB    NOT NULL,
    PRIMARY KEY (actor, version)
) WITHOUT ROWID;

-- Projections and their checkpoints (a global journal position).
CREATE TABLE projections (
    name          TEXT PRIMARY KEY,
    source_type   TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    checkpoint    INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
