-- The cluster: membership and the actor directory (see src/cluster.rs).
-- Times are the store's (ms since the epoch); leases compare with it.
CREATE TABLE cluster_members (
    id TEXT PRIMARY KEY,
    incarnation BIGINT NOT NULL,
    api TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    activations BIGINT NOT NULL DEFAULT 0
);

-- Incarnations and epochs: one counter each, never reused, so a fence
-- taken once can never match again after its row is gone.
CREATE SEQUENCE cluster_incarnations;
CREATE SEQUENCE cluster_epochs;

CREATE TABLE actor_directory (
    actor TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    incarnation BIGINT NOT NULL,
    epoch BIGINT NOT NULL
);
CREATE INDEX actor_directory_host ON actor_directory (host);
