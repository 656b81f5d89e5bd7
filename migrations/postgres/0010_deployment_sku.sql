-- How Azure bills each deployment (its deployment type) and the model version it runs: what
-- a price applies to. NULL in rows written before: the type follows `kind` (provisioned, else
-- global_standard) and the version is unknown.
ALTER TABLE openai_deployments ADD COLUMN deployment_type text;
ALTER TABLE openai_deployments ADD COLUMN model_version text;
