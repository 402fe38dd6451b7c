-- A token's hash is unique among live tokens only. A value used before (an
-- admin token changed A → B → A across restarts) can then be live again as a
-- new row, while its revoked row keeps the record (and its ended web sessions
-- stay ended). SQLite cannot drop a column's UNIQUE, so the table is rebuilt;
-- nothing references it by foreign key.
CREATE TABLE api_tokens_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    hash        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
INSERT INTO api_tokens_new (id, name, hash, created_at, revoked_at)
    SELECT id, name, hash, created_at, revoked_at FROM api_tokens;
-- Keep the id sequence too: an id is never reused, so a web session's
-- token_id can never point at a newer token.
DELETE FROM sqlite_sequence WHERE name = 'api_tokens_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'api_tokens_new', seq FROM sqlite_sequence WHERE name = 'api_tokens';
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX api_tokens_live_hash ON api_tokens (hash) WHERE revoked_at IS NULL;
