-- provisio's PostgreSQL schema: the SQLite schema's tables and columns, with
-- PostgreSQL types. Instants are BIGINT milliseconds since the Unix epoch (UTC),
-- as in SQLite, so both backends share one notion of time; JSON documents are
-- TEXT (stored and returned verbatim, never queried inside).

CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT      NOT NULL,
    hash        BYTEA     NOT NULL UNIQUE,
    created_at  BIGINT    NOT NULL,
    revoked_at  BIGINT
);
-- A name identifies one live token; revoked ones keep theirs for the record.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE event_types (
    id          TEXT    PRIMARY KEY,
    group_name  TEXT    NOT NULL,
    description TEXT    NOT NULL,
    empty_data  BOOLEAN NOT NULL,
    builtin     BOOLEAN NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE handlers (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT    NOT NULL,
    events_id    TEXT    NOT NULL,
    stage        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    priority     BIGINT  NOT NULL,
    kind         TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    args         TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    timeout_ms   BIGINT  NOT NULL,
    max_attempts BIGINT  NOT NULL,
    ordered      BOOLEAN NOT NULL,
    on_failure   TEXT    NOT NULL,
    secret       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE events (
    id          TEXT    PRIMARY KEY,
    events_id   TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,   -- JSON text: keeps number or string
    object_key  TEXT    NOT NULL,   -- the id as text, for ordering and search
    dt          TEXT    NOT NULL,   -- as given, with its offset
    data        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY,
    body_hash   BYTEA   NOT NULL,
    event_id    TEXT    NOT NULL,
    deliveries  BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE deliveries (
    seq             BIGSERIAL PRIMARY KEY,              -- emit order
    id              TEXT    NOT NULL UNIQUE,            -- ULID; the webhook-id
    event_id        TEXT    NOT NULL REFERENCES events (id),
    handler_id      BIGINT  NOT NULL,                   -- no FK: outlives its handler
    object_key      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    round_start     BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX deliveries_event ON deliveries (event_id);
-- The queue: due pending work, oldest first.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, seq) WHERE state = 'pending';
-- Per-object ordering: whether a (handler, object) has unfinished deliveries,
-- and which of its waiting ones is next.
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key)
    WHERE state IN ('pending', 'waiting');
CREATE INDEX deliveries_waiting ON deliveries (handler_id, object_key, seq)
    WHERE state = 'waiting';

CREATE TABLE executions (
    id                 BIGSERIAL PRIMARY KEY,
    delivery_id        TEXT,
    handler_id         BIGINT  NOT NULL,
    handler_name       TEXT    NOT NULL,
    event_id           TEXT,
    events_id          TEXT    NOT NULL,
    object_id          TEXT    NOT NULL,
    object_key         TEXT    NOT NULL,
    stage              TEXT    NOT NULL,
    attempt            BIGINT  NOT NULL,
    status             TEXT    NOT NULL,
    started_at         BIGINT  NOT NULL,
    duration_ms        BIGINT  NOT NULL,
    request_target     TEXT    NOT NULL,
    request_headers    TEXT    NOT NULL,
    request_body       TEXT    NOT NULL,
    response_status    BIGINT,
    response_body      TEXT,
    response_truncated BOOLEAN NOT NULL,
    error              TEXT,
    next_attempt_at    BIGINT,
    data_after         TEXT     -- before stage: the data the handler returned, if it changed it
);
CREATE INDEX executions_handler ON executions (handler_id, id);
CREATE INDEX executions_events_id ON executions (events_id, id);
CREATE INDEX executions_object ON executions (object_key, id);
CREATE INDEX executions_delivery ON executions (delivery_id);
CREATE INDEX executions_started ON executions (started_at);

-- Every node keeps its routing table in memory; a change to handlers or the
-- catalog, made on any node, tells all of them to reload. A statement trigger
-- covers every write path (API, future tools, a hand-run UPDATE), and NOTIFY
-- is delivered only when the writing transaction commits.
CREATE FUNCTION provisio_notify_routes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('provisio_routes', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER handlers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON handlers
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_notify_routes();
CREATE TRIGGER event_types_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_types
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_notify_routes();
