-- The tenant registry (SQLite, the embedded default). Same schema as Postgres; uuids are
-- 16-byte blobs, timestamps RFC 3339 text. One process owns the file, so no notifications.

CREATE TABLE openai_resources (
    id           blob PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    endpoint     text NOT NULL,
    region       text NOT NULL,
    data_zone    text,
    credential   blob NOT NULL,
    owner_tenant text,
    created_at   text NOT NULL
);

CREATE TABLE openai_deployments (
    id           blob PRIMARY KEY,
    resource_id  blob NOT NULL REFERENCES openai_resources (id) ON DELETE CASCADE,
    name         text NOT NULL,
    model        text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('standard', 'provisioned')),
    capacity_tpm integer NOT NULL CHECK (capacity_tpm >= 0),
    owner_tenant text,
    created_at   text NOT NULL,
    UNIQUE (resource_id, name)
);

CREATE TABLE openai_pools (
    id         blob PRIMARY KEY,
    alias      text NOT NULL UNIQUE,
    created_at text NOT NULL
);

CREATE TABLE openai_pool_members (
    pool_id       blob NOT NULL REFERENCES openai_pools (id) ON DELETE CASCADE,
    deployment_id blob NOT NULL REFERENCES openai_deployments (id) ON DELETE RESTRICT,
    priority      integer NOT NULL CHECK (priority >= 0),
    weight        integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (pool_id, deployment_id)
);

CREATE TABLE search_services (
    id             blob PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    endpoint       text NOT NULL,
    region         text NOT NULL,
    data_zone      text,
    credential     blob NOT NULL,
    owner_tenant   text,
    index_capacity integer NOT NULL CHECK (index_capacity > 0),
    created_at     text NOT NULL
);

CREATE TABLE index_templates (
    id         blob PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    definition text NOT NULL,
    created_at text NOT NULL
);

CREATE TABLE tenants (
    id                  blob PRIMARY KEY,
    slug                text NOT NULL UNIQUE,
    display_name        text NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'suspended', 'offboarding')),
    data_zone           text,
    openai_isolation    text CHECK (openai_isolation IN
                            ('shared', 'dedicated_deployment', 'dedicated_resource', 'tenant_provided')),
    openai_endpoint     text,
    openai_region       text,
    openai_credential   blob,
    search_isolation    text CHECK (search_isolation IN ('shared_index', 'dedicated_index', 'dedicated_service')),
    search_service_id   blob REFERENCES search_services (id) ON DELETE RESTRICT,
    tokens_per_minute   integer,
    requests_per_minute integer,
    monthly_tokens      integer,
    created_at          text NOT NULL,
    updated_at          text NOT NULL
);

CREATE TABLE tenant_openai_members (
    tenant_id     blob NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    alias         text NOT NULL,
    deployment_id blob NOT NULL REFERENCES openai_deployments (id) ON DELETE RESTRICT,
    priority      integer NOT NULL CHECK (priority >= 0),
    weight        integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (tenant_id, alias, deployment_id)
);

CREATE TABLE tenant_openai_resources (
    tenant_id   blob NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource_id blob NOT NULL REFERENCES openai_resources (id) ON DELETE RESTRICT,
    position    integer NOT NULL,
    PRIMARY KEY (tenant_id, resource_id)
);

CREATE TABLE api_keys (
    id         blob PRIMARY KEY,
    tenant_id  blob NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('read', 'read-write')),
    hash       blob NOT NULL UNIQUE,
    hint       text NOT NULL,
    expires_at text,
    revoked_at text,
    created_at text NOT NULL
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

