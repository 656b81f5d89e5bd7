-- Prices (the registry's catalog) and the cost of every usage record (the ledger).
--
-- A price is what one million tokens cost on deployments of a model (and version) of one
-- deployment type, or on one deployment, from `effective_from` on. Amounts are integers in
-- micro-units of `currency` (2.50 USD = 2500000), so a call's cost (tokens x price) is an
-- exact integer in pico-units. The table holds one currency. Rows are never updated: a price
-- change is a new row with a later `effective_from`, so the price in force at any instant is
-- the row with the latest `effective_from` not after it, and the past is never rewritten.
-- '' in `model_version` and `deployment` means any version / every deployment (NULLs would
-- never conflict in the unique key).
CREATE TABLE prices (
    id                       uuid PRIMARY KEY,
    model                    text NOT NULL,
    model_version            text NOT NULL DEFAULT '',
    deployment_type          text NOT NULL,
    -- `resource/deployment`, or '' for every deployment of the model and type
    deployment               text NOT NULL DEFAULT '',
    currency                 text NOT NULL,
    input_per_million        bigint NOT NULL CHECK (input_per_million >= 0),
    cached_input_per_million bigint CHECK (cached_input_per_million >= 0),
    output_per_million       bigint NOT NULL CHECK (output_per_million >= 0),
    -- a provisioned deployment's monthly cost, shared among tenants by their token share
    monthly_cost             bigint CHECK (monthly_cost >= 0),
    effective_from           timestamptz NOT NULL,
    created_at               timestamptz NOT NULL,
    UNIQUE (model, model_version, deployment_type, deployment, effective_from)
);

CREATE TRIGGER prices_logged AFTER INSERT OR UPDATE OR DELETE ON prices
    FOR EACH ROW EXECUTE FUNCTION bulkhead_catalog_logged();

-- The cost of a call in pico-units of the price table's currency, computed once when the call
-- is recorded from the price in force when it finished; NULL when no price applied
-- (`unpriced`) or the call is not billed per call (search).
ALTER TABLE usage_events ADD COLUMN cost bigint CHECK (cost >= 0);
ALTER TABLE usage_events ADD COLUMN unpriced boolean NOT NULL DEFAULT false;
ALTER TABLE usage_hourly ADD COLUMN cost bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN unpriced bigint NOT NULL DEFAULT 0;

-- Monthly budgets in currency (micro-units of the price table's currency), a tenant's and a key's.
ALTER TABLE tenants ADD COLUMN monthly_budget bigint CHECK (monthly_budget >= 0);
ALTER TABLE api_keys ADD COLUMN monthly_budget bigint CHECK (monthly_budget >= 0);
