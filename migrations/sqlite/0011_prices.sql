-- Prices (the registry's catalog) and the cost of every usage record (the ledger): see the
-- Postgres migration for the design. Same schema; SQLite adds one column per statement.
CREATE TABLE prices (
    id                       blob PRIMARY KEY,
    model                    text NOT NULL,
    model_version            text NOT NULL DEFAULT '',
    deployment_type          text NOT NULL,
    deployment               text NOT NULL DEFAULT '',
    currency                 text NOT NULL,
    input_per_million        integer NOT NULL CHECK (input_per_million >= 0),
    cached_input_per_million integer CHECK (cached_input_per_million >= 0),
    output_per_million       integer NOT NULL CHECK (output_per_million >= 0),
    monthly_cost             integer CHECK (monthly_cost >= 0),
    effective_from           text NOT NULL,
    created_at               text NOT NULL,
    UNIQUE (model, model_version, deployment_type, deployment, effective_from)
);

CREATE TRIGGER prices_logged_insert AFTER INSERT ON prices
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER prices_logged_update AFTER UPDATE ON prices
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;
CREATE TRIGGER prices_logged_delete AFTER DELETE ON prices
BEGIN INSERT INTO registry_changes (catalog) VALUES (true); END;

ALTER TABLE usage_events ADD COLUMN cost integer CHECK (cost >= 0);
ALTER TABLE usage_events ADD COLUMN unpriced integer NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost integer NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN unpriced integer NOT NULL DEFAULT 0;

ALTER TABLE tenants ADD COLUMN monthly_budget integer CHECK (monthly_budget >= 0);
ALTER TABLE api_keys ADD COLUMN monthly_budget integer CHECK (monthly_budget >= 0);
