-- provisio's SQLite schema. Instants are INTEGER milliseconds since the Unix
-- epoch (UTC); JSON documents are TEXT.

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    hash        BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
-- A name identifies one live token; revoked ones keep theirs for the record.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE event_types (
    id          TEXT    PRIMARY KEY,
    group_name  TEXT    NOT NULL,
    description TEXT    NOT NULL,
    empty_data  INTEGER NOT NULL,
    builtin     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE handlers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    events_id    TEXT    NOT NULL,
    stage        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    priority     INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    args         TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    ordered      INTEGER NOT NULL,
    on_failure   TEXT    NOT NULL,
    secret       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE events (
    id          TEXT    PRIMARY KEY,
    events_id   TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,   -- JSON text: keeps number or string
    object_key  TEXT    NOT NULL,   -- the id as text, for ordering and search
    dt          TEXT    NOT NULL,   -- as given, with its offset
    data        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY,
    body_hash   BLOB    NOT NULL,
    event_id    TEXT    NOT NULL,
    deliveries  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- emit order
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
    finished_at     INTEGER
);
CREATE INDEX deliveries_event ON deliveries (event_id);
-- The queue: due pending work, oldest first.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, seq) WHERE state = 'pending';
-- Per-object ordering: whether a (handler, object) has unfinished deliveries,
-- and which of its waiting ones is next. (SQLite uses a partial index only when
-- the query repeats the index's condition, hence one index per question.)
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key)
    WHERE state IN ('pending', 'waiting');
CREATE INDEX deliveries_waiting ON deliveries (handler_id, object_key, seq)
    WHERE state = 'waiting';

CREATE TABLE executions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id        TEXT,
    handler_id         INTEGER NOT NULL,
    handler_name       TEXT    NOT NULL,
    event_id           TEXT,
    events_id          TEXT    NOT NULL,
    object_id          TEXT    NOT NULL,
    object_key         TEXT    NOT NULL,
    stage              TEXT    NOT NULL,
    attempt            INTEGER NOT NULL,
    status             TEXT    NOT NULL,
    started_at         INTEGER NOT NULL,
    duration_ms        INTEGER NOT NULL,
    request_target     TEXT    NOT NULL,
    request_headers    TEXT    NOT NULL,
    request_body       TEXT    NOT NULL,
    response_status    INTEGER,
    response_body      TEXT,
    response_truncated INTEGER NOT NULL,
    error              TEXT,
    next_attempt_at    INTEGER,
    data_after         TEXT     -- before stage: the data the handler returned, if it changed it
);
CREATE INDEX executions_handler ON executions (handler_id, id);
CREATE INDEX executions_events_id ON executions (events_id, id);
CREATE INDEX executions_object ON executions (object_key, id);
CREATE INDEX executions_delivery ON executions (delivery_id);
CREATE INDEX executions_started ON executions (started_at);
