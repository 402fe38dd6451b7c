-- Every pending delivery's due time was kept twice: in `deliveries_due`
-- (all handlers) and `deliveries_due_by_handler`. Since claims and the next
-- due time seek per handler, only the settling of lapsed leases read the
-- first, and now seeks per handler too. Each emit, claim and record wrote
-- both: one index fewer on the hot path.
DROP INDEX deliveries_due;
