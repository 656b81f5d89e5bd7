-- The tenant listing's filters (status, OpenAI isolation, search isolation) each read a page
-- in slug order from an index of their own, so a rare value is found without walking every
-- tenant's slug.
CREATE INDEX tenants_status_slug ON tenants (status, slug);
CREATE INDEX tenants_openai_isolation_slug ON tenants (openai_isolation, slug);
CREATE INDEX tenants_search_isolation_slug ON tenants (search_isolation, slug);
