-- What each member reports of its memory (and its sheds, refusals and
-- migrations) with its heartbeat (bytes), for
-- memory-aware placement and rebalancing (issue 17).
ALTER TABLE cluster_members
    ADD COLUMN memory_budget BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_reserved BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_used BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_rss BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_shed BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN memory_refused BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN migrated BIGINT NOT NULL DEFAULT 0;
