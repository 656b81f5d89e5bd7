-- Sessions of the admin console (crates/api/src/console): a signed-in browser holds a random
-- session id in an HttpOnly cookie; the store keeps only its SHA-256, so a copy of this table
-- opens no session. `csrf` is the token every state-changing request of the session must
-- echo. `admin` fingerprints the admin token that opened the session: a session opened with a
-- token since rotated away opens nothing. Times are Unix seconds. Any replica serves any
-- session; signing out deletes the row.
CREATE TABLE console_sessions (
    id_hash    text PRIMARY KEY,
    csrf       text NOT NULL,
    admin      text NOT NULL,
    expires_at bigint NOT NULL
);

CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
