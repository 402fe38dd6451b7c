-- Claims look for due work handler by handler, each up to its fair share, so a
-- handler with a long due backlog and no room (a receiver that hangs) costs
-- nothing to the claims of the others: no scan walks past its rows.
CREATE INDEX deliveries_due_by_handler ON deliveries (handler_id, next_attempt_at, seq)
    WHERE state = 'pending';
