-- Calls made by a handler test ("send it once"), logged like any other and
-- marked, so they are never mistaken for a delivery.
ALTER TABLE executions ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
