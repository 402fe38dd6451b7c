-- Replay jobs: a filter over the stored events, resent to one handler as new
-- deliveries that carry the job's id. A job's progress is counted from those
-- deliveries; the row keeps the filter, who started it, and a cancel.
CREATE TABLE replays (
    id                TEXT    PRIMARY KEY,   -- ULID
    handler_id        BIGINT  NOT NULL,      -- no FK: the record outlives its handler
    events_id         TEXT,                  -- the event pattern, if any
    object_id         TEXT,                  -- the object's key, if any
    from_at           BIGINT,
    to_at             BIGINT,
    status            TEXT    NOT NULL,      -- 'failed' | 'all'
    latest_per_object BOOLEAN NOT NULL,
    state             TEXT    NOT NULL,      -- 'running' | 'done' | 'cancelled'
    matched           BIGINT  NOT NULL,
    queued            BIGINT  NOT NULL,
    created_by        TEXT    NOT NULL,      -- the API token's name
    created_at        BIGINT  NOT NULL,
    finished_at       BIGINT                 -- when it was cancelled (or found nothing)
);
CREATE INDEX replays_created ON replays (created_at);
-- Existing deliveries belong to no replay.
ALTER TABLE deliveries ADD COLUMN replay_id TEXT;
-- A job's progress, and whether an event already has an unfinished delivery
-- from a running replay.
CREATE INDEX deliveries_replay ON deliveries (replay_id, state) WHERE replay_id IS NOT NULL;
-- Replays resend in emit order: the order events were stored. SQLite keeps it
-- in each row's rowid; PostgreSQL gets a sequence (existing rows are numbered
-- in their physical order, which for an append-mostly table is close to it).
ALTER TABLE events ADD COLUMN seq BIGSERIAL;
