//! Events and the delivery queue, shared by every node.
//!
//! States and leases work as in SQLite (see `sqlite/queue.rs`): a delivery is
//! due when `state = 'pending'` and `next_attempt_at <= now`, and a lease moves
//! `next_attempt_at` to the lease's end. What sharing adds:
//!
//! - **Claims** lock the rows they take with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent claims on several nodes get disjoint rows without waiting on
//!   each other.
//! - **Per-object ordering.** Whether a new ordered delivery is `pending` or
//!   `waiting` depends on rows other nodes may be writing at that moment (an
//!   emit for the same object, or the record of its predecessor finishing).
//!   Under READ COMMITTED, two such transactions would each miss the other's
//!   uncommitted row: two `pending` deliveries for one object (sent out of
//!   order), or a `waiting` one nobody releases. So every transaction that
//!   opens, closes or joins a (handler, object) queue first takes a
//!   transaction-scoped advisory lock on that key; the next statement's
//!   snapshot then includes whatever the previous holder committed. Locks are
//!   taken in one statement, sorted by key, so two transactions never wait on
//!   each other in a cycle. Idempotency keys are locked the same way, so one
//!   key emitted on two nodes at once is stored once.

use provisio_core::timefmt;
use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{NODE_SETTING, PgStore, WORK_CHANNEL};
use crate::query::{ROWS_PER_STATEMENT, push_insert_executions};
use crate::rows::Columns;
use crate::rows::claimed;
use crate::shared::lines::{Line, move_lines_on};
use crate::shared::{SqlCore, transaction};
use crate::*;

/// The advisory-lock key text of a (handler, object) queue.
pub(super) fn queue_key(handler_id: i64, object_key: &str) -> String {
    format!("d:{handler_id}:{object_key}")
}

/// The advisory-lock key text of an idempotency key.
fn idempotency_lock(key: &str) -> String {
    format!("i:{key}")
}

/// Takes the transaction-scoped advisory locks for `keys`, in key order (see
/// the module documentation). `hashtextextended` maps each text to the
/// 64-bit lock space; two texts sharing a hash merely share a lock.
pub(super) async fn lock_keys(conn: &mut PgConnection, keys: Vec<String>) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Postgres>::new("");
    push_lock_keys(&mut q, keys);
    q.build().execute(conn).await?;
    Ok(())
}

/// The `SELECT` that takes the locks of `keys`, a row each, for
/// [`lock_keys`] or a statement that takes them on the way.
fn push_lock_keys(q: &mut QueryBuilder<Postgres>, keys: Vec<String>) {
    q.push(
        "SELECT pg_advisory_xact_lock(k)
         FROM (SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest(",
    )
    .push_bind(keys)
    .push("::text[]) AS t ORDER BY k) AS keys");
}

/// Takes the advisory locks of (handler, object) lines, for the shared code
/// (`Dialect::lock_lines`).
pub(super) async fn lock_lines(
    conn: &mut PgConnection,
    lines: &[crate::shared::lines::Line],
) -> StoreResult<()> {
    let keys = lines.iter().map(|(h, o)| queue_key(*h, o)).collect();
    lock_keys(conn, keys).await
}

pub(super) async fn emit(
    store: &PgStore,
    batch: &[NewEvent],
    claim: Option<&Claim<'_>>,
) -> StoreResult<Emitted> {
    let locks: Vec<String> = batch
        .iter()
        .flat_map(|new| {
            let key = new.event.object_id.key();
            let queues = new
                .deliveries
                .iter()
                .filter(|d| d.ordered)
                .map(move |d| queue_key(d.handler_id, &key));
            let idempotency = new.idempotency.iter().map(|k| idempotency_lock(&k.key));
            queues.chain(idempotency)
        })
        .collect();
    let keys = crate::plan::keys(batch);
    if keys.is_empty() {
        // Nothing to look up first: the whole emit, claim included, is one
        // statement in a transaction of its own.
        let triage = crate::plan::triage(batch, &HashMap::new());
        let mut conn = store.queue.acquire().await?;
        let claimed = emit_call(&mut conn, locks, &triage.stored, claim).await?;
        return Ok(Emitted {
            outcomes: triage.outcomes,
            claimed,
        });
    }
    transaction(&store.queue, None, async |tx| {
        // The keys' rows are read under their locks, in a statement after
        // the one that took them (see the module documentation).
        lock_keys(tx, locks).await?;
        let seen = seen_keys(tx, keys).await?;
        let crate::plan::Triage {
            outcomes,
            stored,
            expired,
        } = crate::plan::triage(batch, &seen);
        if !expired.is_empty() {
            sqlx::query("DELETE FROM idempotency_keys WHERE key = ANY($1)")
                .bind(expired)
                .execute(&mut *tx)
                .await?;
        }
        // The locks are held already.
        let claimed = emit_call(tx, Vec::new(), &stored, claim).await?;
        Ok(Emitted { outcomes, claimed })
    })
    .await
}

/// One call of `pg_temp.provisio_emit` (`functions.rs`): takes
/// `locks`, stores the events of `stored` with their deliveries and
/// idempotency keys, makes the claim, and tells other nodes of deliveries
/// it left unleased.
async fn emit_call(
    conn: &mut PgConnection,
    locks: Vec<String>,
    stored: &[&NewEvent],
    claim: Option<&Claim<'_>>,
) -> StoreResult<Option<Claimed>> {
    // Arrays, one per column, turned back into rows by `unnest`, whatever
    // the batch size, with no bound-parameter limit.
    let rows = crate::plan::delivery_rows(stored);
    let events = |f: fn(&NewEvent) -> String| stored.iter().map(|n| f(n)).collect::<Vec<_>>();
    let keyed: Vec<(&NewEvent, &Idempotency)> = stored
        .iter()
        .filter_map(|n| n.idempotency.as_ref().map(|k| (*n, k)))
        .collect();
    let (handlers, rooms): (Vec<i64>, Vec<i64>) = claim
        .iter()
        .flat_map(|c| c.handlers)
        .map(|(id, room)| (*id, i64::from(*room)))
        .unzip();
    let found = sqlx::query(
        "SELECT * FROM pg_temp.provisio_emit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
             $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)",
    )
    .bind(locks)
    .bind(events(|n| n.event.id.clone()))
    .bind(events(|n| n.event.events_id.clone()))
    .bind(events(|n| n.event.object_id.to_json()))
    .bind(events(|n| n.event.object_id.key()))
    .bind(events(|n| timefmt::format_seconds(n.event.dt)))
    .bind(events(|n| n.event.data.clone()))
    .bind(stored.iter().map(|n| n.filtered_out_json()).collect::<Vec<_>>())
    .bind(stored.iter().map(|n| n.created_at_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.delivery.id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.new.event.id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.delivery.handler_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.object_key.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.delivery.ordered).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.behind).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.new.created_at_ms).collect::<Vec<_>>())
    .bind(keyed.iter().map(|(_, k)| k.key.clone()).collect::<Vec<_>>())
    .bind(
        keyed
            .iter()
            .map(|(_, k)| k.body_hash.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(
        keyed
            .iter()
            .map(|(n, _)| n.event.id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        keyed
            .iter()
            .map(|(n, _)| n.deliveries.len() as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        keyed
            .iter()
            .map(|(n, _)| n.created_at_ms)
            .collect::<Vec<_>>(),
    )
    .bind(handlers)
    .bind(rooms)
    .bind(claim.map(|c| c.now_ms))
    .bind(claim.map(|c| i64::from(c.limit)))
    .bind(claim.map(|c| c.lease_until_ms))
    .bind(WORK_CHANNEL)
    .bind(NODE_SETTING)
    .fetch_all(conn)
    .await?;
    claim.map(|c| claimed_from(&found, c.limit)).transpose()
}

/// The stored rows of the batch's idempotency keys, in one query.
async fn seen_keys(
    conn: &mut PgConnection,
    keys: Vec<String>,
) -> StoreResult<HashMap<String, crate::plan::SeenKey>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query(
        "SELECT key, body_hash, event_id, deliveries, created_at FROM idempotency_keys
         WHERE key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(conn)
    .await?
    .iter()
    .map(crate::plan::seen_key)
    .collect()
}

/// Begins the record's transaction, in the same round trip as the BEGIN.
///
/// Its prepared statements run their generic plan: they take arrays
/// (`unnest`), and PostgreSQL otherwise re-plans its `UPDATE` often (see
/// `functions::SESSION_FUNCTIONS`): `pg_stat_statements` showed 0.3 ms of
/// planning per call, twice the execution, at 200 events/s. Not for the
/// whole session: the log's list queries do better with plans made for
/// their values. Without sequential or bitmap scans (nor JIT), as in the
/// session functions: a generic plan outlives the table it was made for.
///
/// And it commits without waiting for its WAL to reach the disk
/// (`synchronous_commit = off`): the WAL writer flushes it within three
/// times `wal_writer_delay` (600 ms by default), and any later commit
/// that waits (the next emit's, a claim's, on any node) flushes it first,
/// since the WAL is one sequence. Only a crash of the database server (not of a
/// node) can lose it, and then it loses what a `kill -9` of a SQLite node
/// loses from its lingering record (ARCHITECTURE.md, "Storage"): attempt
/// results, whose deliveries keep their leases, which lapse and are
/// settled as interrupted (status `unknown`) and sent again, and
/// before-stage calls' log rows. Nothing that saw the result can outlive
/// it: a successor it released is leased by a claim that commits durably
/// after it. The emits' and claims' commits still wait.
/// Measured (issue 15, 200 events/s): server + PostgreSQL 1.39-1.45 ->
/// 1.30-1.32 ms of CPU per event, provisio's own share 12 % less.
const RECORD_TX: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
     SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off; \
     SET LOCAL synchronous_commit = off";

/// A claim in one statement, a transaction of its own.
pub(super) async fn claim_due(store: &PgStore, claim: &Claim<'_>) -> StoreResult<Claimed> {
    let (handlers, rooms): (Vec<i64>, Vec<i64>) = claim
        .handlers
        .iter()
        .map(|(id, room)| (*id, i64::from(*room)))
        .unzip();
    let found = sqlx::query("SELECT * FROM pg_temp.provisio_claim($1, $2, $3, $4, $5)")
        .bind(handlers)
        .bind(rooms)
        .bind(claim.now_ms)
        .bind(i64::from(claim.limit))
        .bind(claim.lease_until_ms)
        .fetch_all(&store.queue)
        .await?;
    claimed_from(&found, claim.limit)
}

/// The rows of `provisio_claim` as a [`Claimed`] of at most `limit`
/// deliveries: one row at least, the next due time, with a leased delivery
/// beside it on each row (if any).
fn claimed_from(rows: &[sqlx::postgres::PgRow], limit: u32) -> StoreResult<Claimed> {
    let due = match rows.first() {
        Some(row) => row.opt_int("due")?,
        None => None,
    };
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        if row.opt_int("seq")?.is_some() {
            deliveries.push(claimed(row)?);
        }
    }
    // The whole limit taken: more may be due at once (claim again).
    let next_due_ms = due.filter(|_| deliveries.len() < limit as usize);
    Ok(Claimed {
        deliveries,
        next_due_ms,
    })
}

/// A record batch: its execution rows, its deliveries' new states and the
/// lines their finish moves on. Four round trips for a batch that moves no
/// line on a conflating handler (BEGIN, one statement for the locks, the
/// log and the states, the release, COMMIT), where a statement each took
/// six.
pub(super) async fn record(
    store: &PgStore,
    batch: &[AttemptResult],
    plain: &[ExecutionRecord],
) -> StoreResult<RecordOutcome> {
    let executions: Vec<&ExecutionRecord> = batch
        .iter()
        .filter_map(|r| r.execution.as_ref())
        .chain(plain)
        .collect();
    let moved = transaction(&store.queue, Some(RECORD_TX), async |tx| {
        if batch.is_empty() {
            SqlCore::<Postgres>::insert_executions(tx, &executions).await?;
            return Ok(RecordOutcome::default());
        }
        let closed: Vec<Line> = record_results(batch, &executions)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map(|rows: Vec<(i64, String, String)>| {
                rows.into_iter()
                    .filter(|(_, _, state)| !matches!(state.as_str(), "pending" | "blocked"))
                    .map(|(h, o, _)| (h, o))
                    .collect()
            })?;

        // Each finished delivery lets the next waiting one of its (handler,
        // object) become due.
        let now = batch
            .iter()
            .map(|r| r.finished_at_ms)
            .max()
            .unwrap_or_default();
        // Of those, the lines whose handler conflated when the attempt started.
        let closed_here: HashSet<&Line> = closed.iter().collect();
        let conflating: Vec<Line> = batch
            .iter()
            .filter(|r| r.conflate && r.next.closes_line())
            .map(|r| (r.handler_id, r.object_key.clone()))
            .filter(|line| closed_here.contains(line))
            .collect();
        let moved = move_lines_on::<Postgres>(tx, &closed, &conflating, now).await?;
        Ok(moved)
    })
    .await?;
    store.finished(batch.len());
    Ok(moved)
}

/// One statement: the advisory locks of the lines the batch finishes, its
/// execution rows, and its deliveries' new states, returning each updated
/// delivery's line and state.
///
/// Only a delivery still pending takes a result. One already finished was
/// also attempted by another node after its lease lapsed here; the first
/// result stands, and its successor is not released a second time.
///
/// The locks are taken first in this statement (the one-time filter before
/// the updates waits for them), and the release that needs them is the
/// next statement: its snapshot, taken after they are held, shows whatever
/// an emit into those lines committed before letting go of them. Locks before row
/// locks, as everywhere: two nodes recording the same delivery (its lease
/// lapsed) queue on the line's lock, never on each other's rows.
fn record_results(
    batch: &[AttemptResult],
    executions: &[&ExecutionRecord],
) -> QueryBuilder<Postgres> {
    let locks: Vec<String> = batch
        .iter()
        .filter(|r| r.next.closes_line())
        .map(|r| queue_key(r.handler_id, &r.object_key))
        .collect();
    let mut seqs = Vec::with_capacity(batch.len());
    let mut states = Vec::with_capacity(batch.len());
    let mut attempts = Vec::with_capacity(batch.len());
    let mut next_at = Vec::with_capacity(batch.len());
    let mut errors = Vec::with_capacity(batch.len());
    let mut finished_at = Vec::with_capacity(batch.len());
    let mut spare = Vec::with_capacity(batch.len());
    for r in batch {
        let (state, next, finished) = crate::plan::delivery_after(r);
        seqs.push(r.delivery_seq);
        states.push(state);
        attempts.push(i64::from(r.attempts));
        next_at.push(next);
        errors.push(r.last_error.clone());
        finished_at.push(finished);
        spare.push(i64::from(r.spare_round));
    }

    let mut q = QueryBuilder::<Postgres>::new("WITH locked AS (");
    push_lock_keys(&mut q, locks);
    q.push(")");
    for (i, chunk) in executions.chunks(ROWS_PER_STATEMENT).enumerate() {
        q.push(format_args!(", logged_{i} AS ("));
        push_insert_executions(&mut q, chunk);
        q.push(")");
    }
    // `provisio_finish` updates a row at a time (see
    // `functions::SESSION_FUNCTIONS`). The uncorrelated condition is a
    // one-time filter, evaluated before the function runs: the locks come
    // first, as they did in a statement of their own.
    q.push(", updated AS (SELECT * FROM pg_temp.provisio_finish(")
        .push_bind(seqs)
        .push(", ")
        .push_bind(states)
        .push(", ")
        .push_bind(attempts)
        .push(", ")
        .push_bind(next_at)
        .push(", ")
        .push_bind(errors)
        .push(", ")
        .push_bind(finished_at)
        .push(", ")
        .push_bind(spare)
        .push(
            ") WHERE (SELECT COUNT(*) FROM locked) >= 0)
         SELECT handler_id, object_key, state FROM updated",
        );
    q
}
