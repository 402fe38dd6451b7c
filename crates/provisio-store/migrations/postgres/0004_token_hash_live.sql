-- A token's hash is unique among live tokens only. A value used before (an
-- admin token changed A → B → A across restarts) can then be live again as a
-- new row, while its revoked row keeps the record (and its ended web sessions
-- stay ended).
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_hash_key;
CREATE UNIQUE INDEX api_tokens_live_hash ON api_tokens (hash) WHERE revoked_at IS NULL;
