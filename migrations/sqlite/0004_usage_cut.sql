-- A usage event whose counts are the gateway's own rather than Azure's: the call ended before
-- its usage arrived (a stream cut by the upstream, the caller or a shutdown), so the prompt is
-- the one admission counted or estimated and the completion the text relayed.
ALTER TABLE usage_events ADD COLUMN cut boolean NOT NULL DEFAULT false;
