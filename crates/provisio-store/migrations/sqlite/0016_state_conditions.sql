-- The open and finished states in the partial indexes' conditions become
-- comparisons (`query::open_states!`, `query::finished_states!`, which the
-- statements that use these indexes repeat). SQLite evaluates a constant
-- `IN` list of more than two values through a temporary b-tree built from
-- it, and for a partial index's condition it built one for every row
-- written, before and after the change: four for each delivery whose state
-- changed, two for each one inserted (issue 15). Same rows, same columns.
DROP INDEX deliveries_open;
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key, state, seq)
    WHERE (state = 'pending' OR state = 'waiting' OR state = 'blocked');
DROP INDEX deliveries_finished;
CREATE INDEX deliveries_finished ON deliveries (finished_at)
    WHERE (state = 'success' OR state = 'failed' OR state = 'superseded');
