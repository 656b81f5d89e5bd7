-- The registry's change log (see the Postgres migration of the same number): every write
-- leaves a row naming the tenant, API key or catalog it touched, so the in-memory view is
-- updated by those rows alone.
CREATE TABLE registry_changes (
    seq       integer PRIMARY KEY AUTOINCREMENT,
    tenant_id blob,
    key_id    blob,
    catalog   boolean NOT NULL DEFAULT false,
    at        text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX registry_changes_at ON registry_changes (at);

CREATE TRIGGER tenants_logged_insert AFTER INSERT ON tenants
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.id); END;
CREATE TRIGGER tenants_logged_update AFTER UPDATE ON tenants
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.id); END;
CREATE TRIGGER tenants_logged_delete AFTER DELETE ON tenants
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (OLD.id); END;

CREATE TRIGGER tenant_openai_members_logged_insert AFTER INSERT ON tenant_openai_members
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.tenant_id); END;
CREATE TRIGGER tenant_openai_members_logged_update AFTER UPDATE ON tenant_openai_members
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.tenant_id); END;
CREATE TRIGGER tenant_openai_members_logged_delete AFTER DELETE ON tenant_openai_members
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (OLD.tenant_id); END;

CREATE TRIGGER tenant_openai_resources_logged_insert AFTER INSERT ON tenant_openai_resources
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.tenant_id); END;
CREATE TRIGGER tenant_openai_resources_logged_update AFTER UPDATE ON tenant_openai_resources
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (NEW.tenant_id); END;
CREATE TRIGGER tenant_openai_resources_logged_delete AFTER DELETE ON tenant_openai_resources
BEGIN INSERT INTO registry_changes (tenant_id) VALUES (OLD.tenant_id); END;

CREATE TRIGGER api_keys_logged_insert AFTER INSERT ON api_keys
BEGIN INSERT INTO registry_changes (tenant_id, key_id) VALUES (NEW.tenant_id, NEW.id); END;
CREATE TRIGGER api_keys_logged_update AFTER UPDATE ON api_keys
BEGIN INSERT INTO registry_changes (tenant_id, key_id) VALUES (NEW.tenant_id, NEW.id); END;
CREATE TRIGGER api_keys_logged_delete AFTER DELETE ON api_keys
BEGIN INSERT INTO registry_changes (tenant_id, key_id) VALUES (OLD.tenant_id, OLD.id); END;

CREATE TRIGGER openai_resources_logged_insert AFTER INSERT ON openai_resources
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_resources_logged_update AFTER UPDATE ON openai_resources
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_resources_logged_delete AFTER DELETE ON openai_resources
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

CREATE TRIGGER openai_deployments_logged_insert AFTER INSERT ON openai_deployments
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_deployments_logged_update AFTER UPDATE ON openai_deployments
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_deployments_logged_delete AFTER DELETE ON openai_deployments
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

CREATE TRIGGER openai_pools_logged_insert AFTER INSERT ON openai_pools
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_pools_logged_update AFTER UPDATE ON openai_pools
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_pools_logged_delete AFTER DELETE ON openai_pools
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

CREATE TRIGGER openai_pool_members_logged_insert AFTER INSERT ON openai_pool_members
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_pool_members_logged_update AFTER UPDATE ON openai_pool_members
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER openai_pool_members_logged_delete AFTER DELETE ON openai_pool_members
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

CREATE TRIGGER search_services_logged_insert AFTER INSERT ON search_services
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER search_services_logged_update AFTER UPDATE ON search_services
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER search_services_logged_delete AFTER DELETE ON search_services
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

CREATE TRIGGER index_templates_logged_insert AFTER INSERT ON index_templates
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER index_templates_logged_update AFTER UPDATE ON index_templates
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER index_templates_logged_delete AFTER DELETE ON index_templates
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
