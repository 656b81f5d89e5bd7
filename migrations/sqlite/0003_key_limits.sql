-- Per-key limits (null = unlimited, like a tenant's) and a tenant's context-overflow policy.
-- Same schema as Postgres; SQLite adds one column per statement.

ALTER TABLE api_keys ADD COLUMN tokens_per_minute integer CHECK (tokens_per_minute >= 0);
ALTER TABLE api_keys ADD COLUMN requests_per_minute integer CHECK (requests_per_minute >= 0);
ALTER TABLE api_keys ADD COLUMN monthly_tokens integer CHECK (monthly_tokens >= 0);

-- What to do with a chat request larger than the model's context window: refuse it, or drop
-- the oldest non-system messages until it fits.
ALTER TABLE tenants ADD COLUMN context_overflow text NOT NULL DEFAULT 'reject'
    CHECK (context_overflow IN ('reject', 'truncate_oldest'));
