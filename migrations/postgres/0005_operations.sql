-- Long-running operations (crate `operations`): provisioning a tenant's search indexes,
-- moving it between search placements, offboarding it. Any replica may run one; the lease
-- (owner, until: epoch milliseconds, comparable on both stores) says which does. At most one operation per tenant is active at a time.
-- No trigger: progress is written often and must not make every replica reload the registry.
CREATE TABLE operations (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    tenant_slug      text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('provision', 'search_move', 'offboard')),
    status           text NOT NULL
                     CHECK (status IN ('notStarted', 'running', 'succeeded', 'failed', 'canceled')),
    phase            text NOT NULL,
    spec             text NOT NULL,
    progress         text NOT NULL,
    error            text,
    cancel_requested boolean NOT NULL DEFAULT false,
    lease_owner      text,
    lease_until_ms   bigint,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz
);

CREATE UNIQUE INDEX operations_one_active_per_tenant ON operations (tenant_id)
    WHERE status IN ('notStarted', 'running');
CREATE INDEX operations_by_tenant ON operations (tenant_id, id);
CREATE INDEX operations_by_slug ON operations (tenant_slug, id);
CREATE INDEX operations_runnable ON operations (status, id);

-- A search move in progress: the target placement while documents are copied (index batches
-- also go there), and whether writes are held for the switch. Set and cleared by the move.
ALTER TABLE tenants ADD COLUMN search_move text;
