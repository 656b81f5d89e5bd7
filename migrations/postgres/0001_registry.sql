-- The tenant registry. Owned resources name their owner by slug (not a foreign key) so a
-- resource can be registered for a tenant before the tenant is onboarded.

CREATE TABLE openai_resources (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    endpoint     text NOT NULL,
    region       text NOT NULL,
    data_zone    text,
    credential   bytea NOT NULL,
    owner_tenant text,
    created_at   timestamptz NOT NULL
);

CREATE TABLE openai_deployments (
    id           uuid PRIMARY KEY,
    resource_id  uuid NOT NULL REFERENCES openai_resources (id) ON DELETE CASCADE,
    name         text NOT NULL,
    model        text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('standard', 'provisioned')),
    capacity_tpm bigint NOT NULL CHECK (capacity_tpm >= 0),
    owner_tenant text,
    created_at   timestamptz NOT NULL,
    UNIQUE (resource_id, name)
);

CREATE TABLE openai_pools (
    id         uuid PRIMARY KEY,
    alias      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

CREATE TABLE openai_pool_members (
    pool_id       uuid NOT NULL REFERENCES openai_pools (id) ON DELETE CASCADE,
    deployment_id uuid NOT NULL REFERENCES openai_deployments (id) ON DELETE RESTRICT,
    priority      integer NOT NULL CHECK (priority >= 0),
    weight        integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (pool_id, deployment_id)
);

CREATE TABLE search_services (
    id             uuid PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    endpoint       text NOT NULL,
    region         text NOT NULL,
    data_zone      text,
    credential     bytea NOT NULL,
    owner_tenant   text,
    index_capacity integer NOT NULL CHECK (index_capacity > 0),
    created_at     timestamptz NOT NULL
);

CREATE TABLE index_templates (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE tenants (
    id                  uuid PRIMARY KEY,
    slug                text NOT NULL UNIQUE,
    display_name        text NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'suspended', 'offboarding')),
    data_zone           text,
    openai_isolation    text CHECK (openai_isolation IN
                            ('shared', 'dedicated_deployment', 'dedicated_resource', 'tenant_provided')),
    openai_endpoint     text,
    openai_region       text,
    openai_credential   bytea,
    search_isolation    text CHECK (search_isolation IN ('shared_index', 'dedicated_index', 'dedicated_service')),
    search_service_id   uuid REFERENCES search_services (id) ON DELETE RESTRICT,
    tokens_per_minute   bigint,
    requests_per_minute bigint,
    monthly_tokens      bigint,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE tenant_openai_members (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    alias         text NOT NULL,
    deployment_id uuid NOT NULL REFERENCES openai_deployments (id) ON DELETE RESTRICT,
    priority      integer NOT NULL CHECK (priority >= 0),
    weight        integer NOT NULL CHECK (weight > 0),
    PRIMARY KEY (tenant_id, alias, deployment_id)
);

CREATE TABLE tenant_openai_resources (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource_id uuid NOT NULL REFERENCES openai_resources (id) ON DELETE RESTRICT,
    position    integer NOT NULL,
    PRIMARY KEY (tenant_id, resource_id)
);

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('read', 'read-write')),
    hash       bytea NOT NULL UNIQUE,
    hint       text NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Every change to the registry wakes every gateway replica (LISTEN bulkhead_registry), which
-- reloads its in-memory view. Statement-level: one notification per statement, not per row.
CREATE FUNCTION bulkhead_registry_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('bulkhead_registry', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['openai_resources', 'openai_deployments', 'openai_pools',
        'openai_pool_members', 'search_services', 'index_templates', 'tenants',
        'tenant_openai_members', 'tenant_openai_resources', 'api_keys']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_registry_changed()',
                       t || '_changed', t);
    END LOOP;
END;
$$;
