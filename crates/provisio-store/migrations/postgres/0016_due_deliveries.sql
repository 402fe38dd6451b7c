-- The queue's due work in a table of its own, kept by a trigger: a row per
-- pending delivery (handler, due time, lease), nothing else.
--
-- Claims walk their handler's due rows oldest first. In `deliveries`, each
-- emit, lease and finish leaves the delivery's earlier index entries dead,
-- and they sort first (their due times are past): every claim stepped over
-- all of them until a vacuum removed them. After a drain of 100,000 that
-- was ~1,500 index pages per claim (1.4-1.6 ms against ~0.1 on a fresh
-- table), and on a large table, whose autovacuum waits for a
-- fifth of its rows to be dead, it lasted for hours and grew with the
-- traffic. This table holds the unfinished work only, so a vacuum of it
-- costs what the backlog is, not what the retained log is, and may run as
-- often as it has churned (below, and `PgStore::finished`).
CREATE TABLE due_deliveries (
    handler_id      BIGINT NOT NULL,
    -- A pending delivery always has a due time; were one ever without, it
    -- would be due at once rather than never.
    next_attempt_at BIGINT NOT NULL,
    seq             BIGINT NOT NULL,                    -- deliveries.seq
    lease_until     BIGINT,
    -- The one index: the claims' walk per handler in due order, and the
    -- trigger's seek of a row by its old values. A second, on `seq`, cost
    -- each emit, lease and finish another index write.
    PRIMARY KEY (handler_id, next_attempt_at, seq)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

-- Every write of `deliveries`, by any statement or node version, keeps the
-- mirror: one clear mechanism rather than a second write in each place
-- that changes a delivery's state.
-- Its statements seek the primary key and nothing else: a plan made while
-- the table held a few rows (a scan of them looks cheaper) is kept for the
-- session, and would read a backlog of a million on every change.
CREATE FUNCTION provisio_mirror_due() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO due_deliveries (handler_id, next_attempt_at, seq, lease_until)
        VALUES (NEW.handler_id, coalesce(NEW.next_attempt_at, 0), NEW.seq, NEW.lease_until);
    ELSIF TG_OP = 'DELETE' OR NEW.state <> 'pending' THEN
        DELETE FROM due_deliveries WHERE handler_id = OLD.handler_id
            AND next_attempt_at = coalesce(OLD.next_attempt_at, 0) AND seq = OLD.seq;
    ELSIF OLD.state <> 'pending' THEN
        INSERT INTO due_deliveries (handler_id, next_attempt_at, seq, lease_until)
        VALUES (NEW.handler_id, coalesce(NEW.next_attempt_at, 0), NEW.seq, NEW.lease_until);
    ELSE
        UPDATE due_deliveries SET handler_id = NEW.handler_id,
            next_attempt_at = coalesce(NEW.next_attempt_at, 0), lease_until = NEW.lease_until
        WHERE handler_id = OLD.handler_id AND next_attempt_at = coalesce(OLD.next_attempt_at, 0)
          AND seq = OLD.seq;
    END IF;
    RETURN NULL;
END $fn$;

CREATE TRIGGER deliveries_due_inserted AFTER INSERT ON deliveries
    FOR EACH ROW WHEN (NEW.state = 'pending') EXECUTE FUNCTION provisio_mirror_due();
CREATE TRIGGER deliveries_due_changed AFTER UPDATE ON deliveries
    FOR EACH ROW WHEN ((OLD.state = 'pending' OR NEW.state = 'pending') AND (
        OLD.state IS DISTINCT FROM NEW.state
        OR OLD.next_attempt_at IS DISTINCT FROM NEW.next_attempt_at
        OR OLD.lease_until IS DISTINCT FROM NEW.lease_until
        OR OLD.handler_id IS DISTINCT FROM NEW.handler_id))
    EXECUTE FUNCTION provisio_mirror_due();
CREATE TRIGGER deliveries_due_deleted AFTER DELETE ON deliveries
    FOR EACH ROW WHEN (OLD.state = 'pending') EXECUTE FUNCTION provisio_mirror_due();

INSERT INTO due_deliveries (handler_id, next_attempt_at, seq, lease_until)
SELECT handler_id, coalesce(next_attempt_at, 0), seq, lease_until FROM deliveries
WHERE state = 'pending';

-- Claims, the next due time and the settling of lapsed leases read the
-- mirror now: the index on `deliveries` would only cost writes.
DROP INDEX deliveries_due_by_handler;
