-- Web section sessions. The cookie holds a random id; only its SHA-256 is kept.
CREATE TABLE web_sessions (
    id_hash     BYTEA   PRIMARY KEY,
    token_id    BIGINT  NOT NULL,   -- the API token the operator logged in with
    csrf        TEXT    NOT NULL,   -- the session's anti-CSRF token
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
