-- Web section sessions. The cookie holds a random id; only its SHA-256 is kept.
CREATE TABLE web_sessions (
    id_hash     BLOB    PRIMARY KEY,
    token_id    INTEGER NOT NULL,   -- the API token the operator logged in with
    csrf        TEXT    NOT NULL,   -- the session's anti-CSRF token
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
