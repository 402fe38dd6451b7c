-- Pause and the automatic pause (circuit breaker). A handler is paused while
-- paused_reason is set ('operator', or the automatic pause's reason); its
-- deliveries stay queued and are shown as held. Existing handlers run, with
-- the automatic pause off (NULL settings).
ALTER TABLE handlers ADD COLUMN paused_reason TEXT;
ALTER TABLE handlers ADD COLUMN paused_at INTEGER;
-- While paused automatically: when the next probe (one delivery) is due.
ALTER TABLE handlers ADD COLUMN probe_at INTEGER;
ALTER TABLE handlers ADD COLUMN auto_pause_failures INTEGER;
ALTER TABLE handlers ADD COLUMN auto_pause_after_ms INTEGER;
ALTER TABLE handlers ADD COLUMN auto_pause_probe_ms INTEGER;
-- Pace: the most calls in flight to this handler at once; NULL is no cap of
-- its own (the fair share still applies).
ALTER TABLE handlers ADD COLUMN max_in_flight INTEGER;
-- Pace: calls per second at most, spread evenly; NULL is no limit.
ALTER TABLE handlers ADD COLUMN rate_limit_per_second INTEGER;
