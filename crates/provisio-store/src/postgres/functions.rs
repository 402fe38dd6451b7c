//! The queue's functions of the session: `pg_temp.provisio_emit`,
//! `pg_temp.provisio_claim`, `pg_temp.provisio_finish` and
//! `pg_temp.provisio_release`, PL/pgSQL, created on every connection as it
//! opens (`open_session` in `mod.rs`) and called by `queue.rs` and `mod.rs`.

use crate::query::open_states;

/// The claim, the body of `provisio_claim` and part of `provisio_emit`:
/// for each handler (`handler_ids`), its oldest due rows up to its room
/// (`rooms`; an ordered walk of `due_deliveries`' primary key each, the
/// mirror of due work, migration 0016), locked in `deliveries` or skipped
/// (`SKIP LOCKED`: rows another node is leasing right now are passed over,
/// not waited for); of those the oldest `max_rows`, moved past
/// the lease's end and returned with their events. Rows locked but not
/// chosen are released at the end of the statement. Written into the emit
/// rather than called from it: the nested call cost as much as the claim's
/// own statement.
macro_rules! claim {
    () => {
        concat!(
            r#"
    RETURN QUERY WITH due AS (
        SELECT d.seq, d.next_attempt_at FROM unnest(handler_ids, rooms) AS h(id, room)
        CROSS JOIN LATERAL (
            -- Found in the mirror of due work (`due_deliveries`), in due
            -- order, each locked and checked again in `deliveries`: a row
            -- another node is leasing is skipped, one it leased or
            -- finished since this statement began is left out. The lock
            -- is a `LATERAL` subquery's, so the plan can only be this
            -- walk with a seek of `seq` per row, and the `LIMIT` stops it
            -- at the handler's room; `pending_state` is a variable, so no
            -- partial index's condition matches and the seek is the
            -- primary key's.
            SELECT w.seq, w.next_attempt_at FROM due_deliveries w
            CROSS JOIN LATERAL (
                SELECT 1 FROM deliveries dl
                WHERE dl.seq = w.seq AND dl.state = pending_state AND dl.lease_until IS NULL
                FOR UPDATE SKIP LOCKED
            ) dl
            WHERE w.handler_id = h.id AND w.next_attempt_at <= now_ms AND w.lease_until IS NULL
            ORDER BY w.next_attempt_at, w.seq LIMIT h.room
        ) d
        ORDER BY d.next_attempt_at, d.seq LIMIT max_rows
    ), leased AS (
        UPDATE deliveries SET lease_until = lease_until_ms, next_attempt_at = lease_until_ms
        WHERE seq IN (SELECT seq FROM due)
        RETURNING seq, id, handler_id, attempts, round_start, event_id
    ), next AS (
        -- The next due time after the claim (`NEXT_DUE`), in the same
        -- statement: its snapshot still shows the rows just leased as due,
        -- so they are left out and count at their lease's end.
        SELECT LEAST(
            ("#,
            next_due!("w.seq NOT IN (SELECT seq FROM leased)"),
            r#"),
            (SELECT lease_until_ms WHERE EXISTS (
                 SELECT 1 FROM leased l JOIN handlers h ON h.id = l.handler_id
                 WHERE h.paused_reason IS NULL))
        ) AS due
    )
    -- One row at least: the next due time, with the leased deliveries (if
    -- any) beside it.
    SELECT n.due, l.seq, l.id, l.handler_id, l.attempts, l.round_start,
           e.id, e.events_id, e.object_id, e.dt, e.data
    FROM next n LEFT JOIN (leased l JOIN events e ON e.id = l.event_id) ON true
    ORDER BY l.seq;
"#
        )
    };
}

/// The planner's settings of every session function (see
/// [`SESSION_FUNCTIONS`]), as its `SET` clauses.
macro_rules! planner {
    () => {
        "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off \
         SET enable_bitmapscan = off SET jit = off"
    };
}

/// The emit and the claim as functions of each session (`pg_temp`),
/// created when a connection opens ([`super::PgStore`]): an emit is then one
/// statement, a transaction of its own, where BEGIN, the locks, the insert,
/// the claim and COMMIT were a round trip each, and a claim is one where it
/// was three: provisio's CPU per event fell by 12-17 % and the emit's
/// latency with it; PostgreSQL's own CPU stayed where it was (issue 15).
///
/// Functions of the session, not of the schema: each node runs the text it
/// was built with, so nodes of two versions share a database during an
/// upgrade, and changing the text needs no migration. PL/pgSQL keeps each
/// statement's plan for the session; `plan_cache_mode` makes those plans
/// generic at once (PostgreSQL otherwise re-planned the insert and the claim
/// on every call: their custom plans looked cheaper than the generic one,
/// whose `unnest` row counts are guesses). A volatile function's statements
/// each see what committed before they began, so the insert still sees
/// whatever the holder of a lock this function waited for committed.
///
/// A plan made once per session is made for the table as it was then, and
/// PostgreSQL keeps it however the table grows (an `ANALYZE` did not make
/// these plans anew). Set-based statements over a batch (`UPDATE … FROM
/// unnest(…)`, `seq IN (SELECT …)`) are joins whose method follows the
/// estimates: made while the table was small, or while few deliveries were
/// pending, their plans hashed every pending delivery (the record) or the
/// whole table (the release) on every call, a cost that grew with the
/// backlog (issue 15: 10 % of PostgreSQL's CPU at 200 events/s on a table
/// of a few thousand rows). So the record's updates (`provisio_finish`) and
/// the release of lines (`provisio_release`) run a statement per row or
/// line, each a seek of a key; the loop is in the function, so the batch
/// is still one round trip. On a small table whose size a vacuum made
/// known, estimates still pick the wrong path: a scan of a few pages looks
/// cheaper than a seek, and of two partial indexes the smaller wins (the
/// release's "pending?" probe went to `deliveries_due_by_handler` and read
/// the handler's whole backlog per line once it held 100,000: a release of
/// 1,000 lines ran into the statement timeout). So each condition names
/// only the index meant to answer it, and the functions run with
/// `enable_seqscan = off`: every statement here seeks, none means to read a
/// whole table; the planner takes a sequential scan only where nothing
/// else can answer (`handlers`, for `paused_reason IS NULL`). Such a scan
/// then costs 10^10 in the plan, past `jit_above_cost`, and PostgreSQL
/// compiled the claim with LLVM on every call (446 ms an emit); `jit = off`
/// too: a statement of a millisecond never gains from it. And
/// `enable_bitmapscan = off`: the claim's walk must come out of its index
/// in order, so the `LIMIT` stops it after the handler's room; a plan made
/// while `due_deliveries` was empty took a bitmap scan of every due row of
/// the handler, sorted them all and locked after the sort (30,000 rows and
/// 57 ms a claim; with 100,000 queued, claims ran into the statement
/// timeout).
pub(super) const SESSION_FUNCTIONS: &str = concat!(
    r#"
CREATE FUNCTION pg_temp.provisio_claim(
    handler_ids int8[], rooms int8[], now_ms int8, max_rows int8, lease_until_ms int8)
RETURNS TABLE (due int8, seq int8, id text, handler_id int8, attempts int8, round_start int8,
               event_id text, events_id text, object_id text, dt text, data text)
LANGUAGE plpgsql "#,
    planner!(),
    r#" AS $fn$
#variable_conflict use_column
DECLARE
    pending_state text := 'pending';
BEGIN
"#,
    claim!(),
    r#"END $fn$;

CREATE FUNCTION pg_temp.provisio_emit(
    lock_keys text[],
    ev_ids text[], ev_types text[], ev_objects text[], ev_object_keys text[], ev_dts text[],
    ev_data text[], ev_filtered_out text[], ev_created int8[],
    dl_ids text[], dl_events text[], dl_handlers int8[], dl_object_keys text[], dl_ordered bool[],
    dl_behind bool[], dl_created int8[],
    key_names text[], key_hashes bytea[], key_events text[], key_deliveries int8[],
    key_created int8[],
    handler_ids int8[], rooms int8[], now_ms int8, max_rows int8, lease_until_ms int8,
    work_channel text, node_setting text)
RETURNS TABLE (due int8, seq int8, id text, handler_id int8, attempts int8, round_start int8,
               event_id text, events_id text, object_id text, dt text, data text)
LANGUAGE plpgsql "#,
    planner!(),
    r#" AS $fn$
#variable_conflict use_column
DECLARE
    fresh text[];
    fresh_id text;
    pending_state text := 'pending';
BEGIN
    -- The locks of the lines the emit joins and of its idempotency keys,
    -- sorted, in one statement (see `lock_keys`).
    PERFORM pg_advisory_xact_lock(k)
    FROM (SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest(lock_keys) AS t ORDER BY k) AS keys;

    -- The events and their deliveries in one statement (the deliveries'
    -- foreign key is checked at its end, when the events are in). An
    -- ordered delivery waits while an earlier one for the same (handler,
    -- object) is unfinished: one already stored (the EXISTS, safe from
    -- races under the line's lock), or one earlier in this batch
    -- (`behind`). `WITH ORDINALITY … ORDER BY` gives `seq` in emit order.
    IF cardinality(ev_ids) > 0 THEN
        WITH stored_events AS (
            INSERT INTO events (id, events_id, object_id, object_key, dt, data, filtered_out, created_at)
            SELECT * FROM unnest(ev_ids, ev_types, ev_objects, ev_object_keys, ev_dts, ev_data,
                                 ev_filtered_out, ev_created)
        ), inserted AS (
        INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at,
                                created_at, last_error, finished_at)
        SELECT v.id, v.event_id, v.handler_id, v.object_key,
               CASE WHEN NOT h.live THEN 'failed'
                    WHEN v.behind OR (v.ordered AND EXISTS (
                   SELECT 1 FROM deliveries d WHERE d.handler_id = v.handler_id
                       AND d.object_key = v.object_key AND "#,
    open_states!("d.state"),
    r#"
                   -- A probe of `deliveries_open` per row, never a hash of
                   -- every open delivery: the plan is made once per
                   -- session, maybe while the table is small, and a hash
                   -- grows with the backlog (OFFSET 0 keeps PostgreSQL
                   -- from turning the EXISTS into one).
                   OFFSET 0))
               THEN 'waiting' ELSE 'pending' END,
               v.created_at, v.created_at,
               CASE WHEN NOT h.live THEN 'not sent: the handler was deleted' END,
               CASE WHEN NOT h.live THEN v.created_at END
        FROM unnest(dl_ids, dl_events, dl_handlers, dl_object_keys, dl_ordered, dl_behind, dl_created)
             WITH ORDINALITY AS v(id, event_id, handler_id, object_key, ordered, behind, created_at, n)
        -- A handler deleted after this emit was routed (here or on another
        -- node) gets its delivery as failed: one inserted pending would
        -- never be claimed. FOR KEY SHARE makes a concurrent delete wait
        -- for this commit, so its own sweep of open deliveries sees ours.
        -- OFFSET 0 keeps the subquery whole: pulled up, each of the three
        -- `h.live` above became a sublink of its own, and the handler's
        -- row was sought and locked three times per delivery.
        CROSS JOIN LATERAL (SELECT EXISTS (
            SELECT 1 FROM handlers WHERE handlers.id = v.handler_id FOR KEY SHARE) AS live
            OFFSET 0) h
        ORDER BY v.n
        RETURNING id, state
        )
        SELECT array_agg(id) FILTER (WHERE state = 'pending') INTO fresh FROM inserted;
    END IF;

    IF cardinality(key_names) > 0 THEN
        INSERT INTO idempotency_keys (key, body_hash, event_id, deliveries, created_at)
        SELECT * FROM unnest(key_names, key_hashes, key_events, key_deliveries, key_created);
    END IF;

    IF max_rows IS NOT NULL THEN
"#,
    claim!(),
    r#"    END IF;

    -- Other nodes hear of new due deliveries this node did not lease at
    -- once (no room here, or no claim): those it leased need nobody else,
    -- and waking every node for them cost each a claim; a waiting one is
    -- announced when its line moves on. Sent at commit, signed with this
    -- node's id. A lookup by key each, up to the first one not leased: a
    -- plan over the whole array was made once per session, while the table
    -- was small, and kept scanning it (a millisecond per emit at 10,000
    -- rows).
    FOREACH fresh_id IN ARRAY coalesce(fresh, '{}') LOOP
        IF EXISTS (SELECT 1 FROM deliveries d WHERE d.id = fresh_id AND d.lease_until IS NULL) THEN
            PERFORM pg_notify(work_channel, current_setting(node_setting, true));
            EXIT;
        END IF;
    END LOOP;
END $fn$;

CREATE FUNCTION pg_temp.provisio_finish(
    r_seqs int8[], r_states text[], r_attempts int8[], r_next_at int8[], r_errors text[],
    r_finished_at int8[], r_spare int8[])
RETURNS TABLE (handler_id int8, object_key text, state text)
LANGUAGE plpgsql "#,
    planner!(),
    r#" AS $fn$
#variable_conflict use_column
DECLARE
    -- A variable, so a parameter of the plan: no partial index's condition
    -- can be matched to it, and the update below can only seek `seq`.
    -- With the literal, a plan made while few deliveries were pending
    -- read every pending one through `deliveries_open`. (The claim's
    -- variable of the same name does the same for its seek.)
    pending_state text := 'pending';
BEGIN
    FOR i IN 1 .. coalesce(cardinality(r_seqs), 0) LOOP
        RETURN QUERY
        UPDATE deliveries d SET state = r_states[i], attempts = r_attempts[i],
            next_attempt_at = r_next_at[i], lease_until = NULL, last_error = r_errors[i],
            finished_at = r_finished_at[i], round_start = d.round_start + r_spare[i]
        WHERE d.seq = r_seqs[i] AND d.state = pending_state
        RETURNING d.handler_id, d.object_key, d.state;
    END LOOP;
END $fn$;

CREATE FUNCTION pg_temp.provisio_release(handler_ids int8[], object_keys text[], now_ms int8)
RETURNS int8
LANGUAGE plpgsql "#,
    planner!(),
    r#" AS $fn$
DECLARE
    released int8 := 0;
    changed int8;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(handler_ids), 0) LOOP
        UPDATE deliveries SET state = 'pending', next_attempt_at = now_ms
        WHERE seq = (SELECT d.seq FROM deliveries d WHERE d.handler_id = handler_ids[i]
                         AND d.object_key = object_keys[i] AND d.state = 'waiting'
                     ORDER BY d.seq LIMIT 1)
          -- Pending or blocked, in one probe only `deliveries_open` can
          -- answer: with `state = 'pending'` alone, a plan made on a small
          -- table took `deliveries_due_by_handler` (the handler's pending
          -- deliveries, every object's) and read the whole backlog per line.
          AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = handler_ids[i]
                              AND o.object_key = object_keys[i]
                              AND o.state IN ('pending', 'blocked'));
        GET DIAGNOSTICS changed = ROW_COUNT;
        released := released + changed;
    END LOOP;
    RETURN released;
END $fn$;
"#
);
