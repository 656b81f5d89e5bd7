-- The registry's change log: every write leaves a row naming what it touched (a tenant, an
-- API key, or the catalog), so a replica updates its in-memory view by those rows alone
-- instead of reading everything again. Replicas read it from the last sequence number they
-- applied, when notified (LISTEN bulkhead_registry, as before) and on a short poll, so a
-- missed notification is caught up. Sequence numbers are taken at insert and become visible
-- at commit, so they may appear out of order or never (a rollback): readers wait a while for
-- a gap before passing it (see tenant-registry's `registry.rs`). Rows older than an hour are
-- pruned; a replica further behind reads everything.
CREATE TABLE registry_changes (
    seq       bigserial PRIMARY KEY,
    tenant_id uuid,
    key_id    uuid,
    catalog   boolean NOT NULL DEFAULT false,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX registry_changes_at ON registry_changes (at);

CREATE FUNCTION bulkhead_registry_logged() RETURNS trigger AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'api_keys' THEN
        INSERT INTO registry_changes (tenant_id, key_id) VALUES (r.tenant_id, r.id);
    ELSIF TG_TABLE_NAME = 'tenants' THEN
        INSERT INTO registry_changes (tenant_id) VALUES (r.id);
    ELSE
        INSERT INTO registry_changes (tenant_id) VALUES (r.tenant_id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION bulkhead_catalog_logged() RETURNS trigger AS $$
BEGIN
    INSERT INTO registry_changes (catalog) VALUES (true);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'tenant_openai_members', 'tenant_openai_resources',
        'api_keys']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION bulkhead_registry_logged()',
                       t || '_logged', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['openai_resources', 'openai_deployments', 'openai_pools',
        'openai_pool_members', 'search_services', 'index_templates']
    LOOP
        -- Per row, so a statement that changes nothing (offboarding a tenant that reserved
        -- no resource) logs nothing.
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION bulkhead_catalog_logged()',
                       t || '_logged', t);
    END LOOP;
END;
$$;
