-- The usage ledger (crates/usage-ledger), same schema as Postgres: one row per finished
-- data-plane call, and hourly rollups maintained in the same transaction from the events that
-- transaction newly inserted. Uuids are 16-byte blobs, timestamps RFC 3339 text in UTC (so
-- they order as text), booleans 0/1.

CREATE TABLE usage_events (
    id                blob PRIMARY KEY,
    tenant_id         blob NOT NULL,
    key_id            blob,
    kind              text NOT NULL CHECK (kind IN ('openai', 'search')),
    -- the alias the tenant called (openai) or the logical index (search)
    alias             text NOT NULL,
    operation         text NOT NULL,
    member            text,
    deployment        text,
    region            text,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    cached_tokens     integer NOT NULL CHECK (cached_tokens >= 0),
    documents         integer NOT NULL CHECK (documents >= 0),
    status            integer NOT NULL,
    latency_ms        integer NOT NULL CHECK (latency_ms >= 0),
    streamed          integer NOT NULL,
    finished_at       text NOT NULL
);

CREATE INDEX usage_events_tenant_finished ON usage_events (tenant_id, finished_at);

-- deployment '' when none (search), key_id the nil uuid for a token: NULLs would never
-- conflict, so the upsert would add rows instead of adding to them.
CREATE TABLE usage_hourly (
    tenant_id         blob NOT NULL,
    hour              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('openai', 'search')),
    alias             text NOT NULL,
    deployment        text NOT NULL,
    key_id            blob NOT NULL,
    requests          integer NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    cached_tokens     integer NOT NULL,
    documents         integer NOT NULL,
    errors            integer NOT NULL,
    PRIMARY KEY (tenant_id, hour, kind, alias, deployment, key_id)
);
