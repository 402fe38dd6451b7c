-- The operator views' figures (issue 14), each read from an index alone.
-- When a handler's deliveries last succeeded or failed, and how many ended
-- in the last 24 hours (a range per handler and state).
CREATE INDEX deliveries_outcome ON deliveries (handler_id, state, finished_at)
    WHERE state IN ('success', 'failed');
-- When a handler's calls last failed (attempts that will be retried too).
-- Only failed calls are indexed: a successful attempt pays nothing for it.
CREATE INDEX executions_failed ON executions (handler_id, started_at)
    WHERE status = 'fail' AND test = false;
-- Before-stage calls, which have no deliveries: their counts and last
-- outcomes. After-stage calls pay nothing for it.
CREATE INDEX executions_before ON executions (handler_id, status, started_at)
    WHERE stage = 'before' AND test = false;
