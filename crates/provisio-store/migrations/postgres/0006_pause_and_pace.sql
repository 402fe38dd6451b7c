-- Pause and the automatic pause (circuit breaker). A handler is paused while
-- paused_reason is set ('operator', or the automatic pause's reason); its
-- deliveries stay queued and are shown as held. Existing handlers run, with
-- the automatic pause off (NULL settings). Every change fires the
-- provisio_routes trigger, so a pause or resume reaches every node.
ALTER TABLE handlers ADD COLUMN paused_reason TEXT;
ALTER TABLE handlers ADD COLUMN paused_at BIGINT;
-- While paused automatically: when the next probe (one delivery) is due.
ALTER TABLE handlers ADD COLUMN probe_at BIGINT;
ALTER TABLE handlers ADD COLUMN auto_pause_failures BIGINT;
ALTER TABLE handlers ADD COLUMN auto_pause_after_ms BIGINT;
ALTER TABLE handlers ADD COLUMN auto_pause_probe_ms BIGINT;
-- Pace: the most calls in flight to this handler at once; NULL is no cap of
-- its own (the fair share still applies).
ALTER TABLE handlers ADD COLUMN max_in_flight BIGINT;
-- Pace: calls per second at most, spread evenly; NULL is no limit.
ALTER TABLE handlers ADD COLUMN rate_limit_per_second BIGINT;
