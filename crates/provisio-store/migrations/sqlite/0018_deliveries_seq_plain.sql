-- `deliveries.seq` without AUTOINCREMENT. With it, every commit that
-- inserted a delivery (every emit) rewrote the table's row in
-- `sqlite_sequence`: a page of its own in the WAL, ~0.8 of the ~11 pages an
-- event wrote at 200 events/s, a whole one of the ~10 at 1,000/s (issue 15).
-- A plain INTEGER PRIMARY KEY takes the largest seq + 1, so a new delivery
-- still follows every stored one, which is all `seq` promises (emit order
-- among the deliveries that exist: the lines' order, the claims' ties). A
-- seq could come back only once every delivery above it is gone, and only
-- finished deliveries are ever deleted (retention); nothing outside the
-- table keeps one, and `executions.id`, which the API shows, keeps its
-- AUTOINCREMENT. PostgreSQL's seq is a sequence and stays as it is.
--
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt, with the
-- same columns, rows and indexes (about 3.5 s per million deliveries on a
-- two-core machine).
CREATE TABLE deliveries_new (
    seq             INTEGER PRIMARY KEY,               -- emit order
    id              TEXT    NOT NULL UNIQUE,            -- ULID; the webhook-id
    event_id        TEXT    NOT NULL REFERENCES events (id),
    handler_id      INTEGER NOT NULL,                   -- no FK: outlives its handler
    object_key      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    round_start     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    superseded_by   TEXT,
    replay_id       TEXT
);
INSERT INTO deliveries_new (seq, id, event_id, handler_id, object_key, state, attempts,
                            round_start, next_attempt_at, lease_until, last_error, created_at,
                            finished_at, superseded_by, replay_id)
    SELECT seq, id, event_id, handler_id, object_key, state, attempts, round_start,
           next_attempt_at, lease_until, last_error, created_at, finished_at, superseded_by,
           replay_id
    FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
DELETE FROM sqlite_sequence WHERE name = 'deliveries';

-- The indexes as migrations 0001-0017 left them.
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_due_by_handler ON deliveries (handler_id, next_attempt_at, seq)
    WHERE state = 'pending';
CREATE INDEX deliveries_replay ON deliveries (replay_id, state) WHERE replay_id IS NOT NULL;
CREATE INDEX deliveries_outcome ON deliveries (handler_id, state, finished_at)
    WHERE state IN ('success', 'failed');
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key, state, seq)
    WHERE (state = 'pending' OR state = 'waiting' OR state = 'blocked');
CREATE INDEX deliveries_finished ON deliveries (finished_at)
    WHERE (state = 'success' OR state = 'failed' OR state = 'superseded');
