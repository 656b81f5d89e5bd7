-- Per-key limits (null = unlimited, like a tenant's) and a tenant's context-overflow policy.
-- The api_keys and tenants triggers of 0001 fire on UPDATE, so a change here reaches every
-- replica like any other.

ALTER TABLE api_keys
    ADD COLUMN tokens_per_minute   bigint CHECK (tokens_per_minute >= 0),
    ADD COLUMN requests_per_minute bigint CHECK (requests_per_minute >= 0),
    ADD COLUMN monthly_tokens      bigint CHECK (monthly_tokens >= 0);

-- What to do with a chat request larger than the model's context window: refuse it, or drop
-- the oldest non-system messages until it fits.
ALTER TABLE tenants
    ADD COLUMN context_overflow text NOT NULL DEFAULT 'reject'
        CHECK (context_overflow IN ('reject', 'truncate_oldest'));
