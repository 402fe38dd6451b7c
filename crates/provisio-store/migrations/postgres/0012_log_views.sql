-- What a before-stage call decided: unchanged, changed, forbidden or failed
-- (NULL for after-stage calls, and for calls logged before this column).
ALTER TABLE executions ADD COLUMN verdict TEXT;
-- The log's status and verdict filters seek these instead of scanning the
-- whole log; the verdict index holds before-stage rows only.
CREATE INDEX executions_status ON executions (status, id);
CREATE INDEX executions_verdict ON executions (verdict, id) WHERE verdict IS NOT NULL;
