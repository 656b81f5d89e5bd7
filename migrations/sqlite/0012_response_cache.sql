-- The per-tenant response cache (issue 18, part 4). Same schema as Postgres; SQLite adds one
-- column per statement, and a table constraint cannot be added afterwards, so "both or
-- neither" is a column check on the second column.
ALTER TABLE tenants ADD COLUMN response_cache_ttl_seconds integer
    CHECK (response_cache_ttl_seconds BETWEEN 1 AND 2592000);
ALTER TABLE tenants ADD COLUMN response_cache_max_bytes integer
    CHECK (response_cache_max_bytes IS NULL
           OR (response_cache_max_bytes BETWEEN 1024 AND 1099511627776
               AND response_cache_ttl_seconds IS NOT NULL));

-- A call answered from the cache: metered with zero upstream tokens, counted apart in the
-- rollups (cache_hits is a part of requests).
ALTER TABLE usage_events ADD COLUMN cache_hit boolean NOT NULL DEFAULT false;
ALTER TABLE usage_hourly ADD COLUMN cache_hits integer NOT NULL DEFAULT 0;
