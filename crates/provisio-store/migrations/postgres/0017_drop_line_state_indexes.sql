-- A line's waiting and blocked deliveries each had an index of their own
-- (`deliveries_waiting`, `deliveries_blocked`) from before
-- `deliveries_open` held the state and the order: since migration 0013 it
-- is (handler_id, object_key, state, seq) over every open state, and
-- answers "the line's oldest (or newest) waiting delivery" and "the
-- delivery that blocks the line" with the same seek, in `seq` order, as
-- its own questions. Each waiting delivery was written to two indexes when
-- it joined its line and again when it was released, and every statement
-- that changes a delivery opened and checked both.
DROP INDEX deliveries_waiting;
DROP INDEX deliveries_blocked;
