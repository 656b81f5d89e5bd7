-- The per-tenant response cache (issue 18, part 4).
--
-- A tenant's cache setting, chosen by the admin: both columns null = off; both set = on, for
-- that TTL and within that many bytes of entries (in Redis, and in each replica's memory).
-- The tenants trigger of 0006 fires on UPDATE, so a change reaches every replica.
ALTER TABLE tenants
    ADD COLUMN response_cache_ttl_seconds integer
        CHECK (response_cache_ttl_seconds BETWEEN 1 AND 2592000),
    ADD COLUMN response_cache_max_bytes bigint
        CHECK (response_cache_max_bytes BETWEEN 1024 AND 1099511627776),
    ADD CONSTRAINT tenants_response_cache_whole
        CHECK ((response_cache_ttl_seconds IS NULL) = (response_cache_max_bytes IS NULL));

-- A call answered from the cache: metered with zero upstream tokens, counted apart in the
-- rollups (cache_hits is a part of requests).
ALTER TABLE usage_events ADD COLUMN cache_hit boolean NOT NULL DEFAULT false;
ALTER TABLE usage_hourly ADD COLUMN cache_hits bigint NOT NULL DEFAULT 0;
