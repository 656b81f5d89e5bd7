-- The fleet's recent traffic (the admin console's overview reads the last hour of events by
-- time, across tenants).
CREATE INDEX usage_events_finished ON usage_events (finished_at);
