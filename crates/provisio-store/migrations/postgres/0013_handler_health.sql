-- The operator views' figures (issue 14), each read from an index alone:
-- the index holds every column the statement reads, so no table row is
-- visited (SQLite reads a partial index's condition columns from the row
-- unless the index holds them too).
--
-- A handler's unfinished deliveries by state, and its oldest (by seq), in
-- one ordered pass: `deliveries_open` gains `state` and `seq`. Its leading
-- columns, and so the per-object line checks it serves, stay the same.
DROP INDEX deliveries_open;
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key, state, seq)
    WHERE state IN ('pending', 'waiting', 'blocked');
-- When a handler's deliveries last succeeded or failed, and how many ended
-- in the last 24 hours (a range per handler and state).
CREATE INDEX deliveries_outcome ON deliveries (handler_id, state, finished_at)
    WHERE state IN ('success', 'failed');
-- When a handler's calls last failed (attempts that will be retried too).
-- Only failed calls are indexed: a successful attempt pays nothing for it.
CREATE INDEX executions_failed ON executions (handler_id, started_at, status, test)
    WHERE status = 'fail' AND test = false;
-- Before-stage calls, which have no deliveries: their counts (refusals
-- apart, by verdict) and last outcomes. After-stage calls pay nothing for it.
CREATE INDEX executions_before ON executions (handler_id, status, started_at, stage, test, verdict)
    WHERE stage = 'before' AND test = false;
