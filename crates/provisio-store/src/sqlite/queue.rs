//! Events and the delivery queue.
//!
//! A delivery is due when `state = 'pending'` and `next_attempt_at <= now`.
//! Leasing pushes `next_attempt_at` to the lease's end, so a leased delivery is
//! simply not due; if its worker dies, it becomes due again when the lease
//! lapses, with no sweeper. Ordered deliveries queued behind an unfinished one
//! for the same (handler, object) wait in `state = 'waiting'` and are released
//! one at a time as their predecessor finishes.

use provisio_core::timefmt;
use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::{Durability, SqliteStore, one_trip, write_tx};
use crate::query::push_insert_executions;
use crate::query::{ROWS_PER_STATEMENT, open_states};
use crate::rows::Columns;
use crate::rows::claimed as claimed_from_row;
use crate::shared::SqlCore;
use crate::shared::lines::{Line, push_conflation, push_release};
use crate::shared::queue::NEXT_DUE;
use crate::*;

pub(super) async fn emit(
    store: &SqliteStore,
    batch: &[NewEvent],
    claim: Option<&Claim<'_>>,
) -> StoreResult<Emitted> {
    // A claim over more handlers than one statement takes runs after the
    // emit's commit, as `claim_due`.
    let (claim, claim_after) = match claim {
        Some(c) if c.handlers.len() > HANDLERS_PER_CLAIM => (None, Some(c)),
        c => (c, None),
    };
    // Only accepted emits must survive power loss; other writes (leases,
    // attempt results) can be redone, so the connection runs at NORMAL and
    // switches to FULL for this commit (see `write_tx`).
    let keys = crate::plan::keys(batch);
    let mut emitted = if keys.is_empty() {
        // Nothing to look up first: the whole transaction, BEGIN to COMMIT,
        // claim included, goes to the driver's worker thread in one trip,
        // where each statement would be a trip (two thread wakes) of its own.
        let triage = crate::plan::triage(batch, &HashMap::new());
        let rows = one_trip(&store.core.write, store.durability, |q| {
            let any = push_emit_writes(q, &triage);
            push_claim(q, claim) || any
        })
        .await?;
        Emitted {
            claimed: claim.map(|c| claimed_from(rows, c.limit)).transpose()?,
            outcomes: triage.outcomes,
        }
    } else {
        write_tx(&store.core.write, store.durability, async |conn| {
            let seen = seen_keys(conn, &keys).await?;
            let triage = crate::plan::triage(batch, &seen);
            let mut q = QueryBuilder::<Sqlite>::new("");
            let any = push_emit_writes(&mut q, &triage);
            let rows = if push_claim(&mut q, claim) || any {
                q.build().fetch_all(&mut *conn).await?
            } else {
                Vec::new()
            };
            Ok(Emitted {
                claimed: claim.map(|c| claimed_from(rows, c.limit)).transpose()?,
                outcomes: triage.outcomes,
            })
        })
        .await?
    };
    if let Some(claim) = claim_after {
        emitted.claimed = Some(claim_due(store, claim).await?);
    }
    Ok(emitted)
}

/// Appends a claim (at most [`HANDLERS_PER_CLAIM`] handlers) and the read of
/// the next due time after it, each ended by `;`; says whether there was a
/// claim. [`claimed_from`] reads their rows.
fn push_claim(q: &mut QueryBuilder<Sqlite>, claim: Option<&Claim<'_>>) -> bool {
    let Some(claim) = claim else { return false };
    if !claim.handlers.is_empty() {
        push_claim_some(q, claim, claim.handlers, i64::from(claim.limit));
        q.push("; ");
    }
    q.push(NEXT_DUE).push("; ");
    true
}

/// The claim's rows, then the next-due row (which comes last), as a
/// [`Claimed`] of at most `limit` deliveries.
fn claimed_from(mut rows: Vec<sqlx::sqlite::SqliteRow>, limit: u32) -> StoreResult<Claimed> {
    let due = rows.pop().map(|row| row.opt_int("due")).transpose()?;
    let mut deliveries = rows
        .iter()
        .map(claimed_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    // RETURNING gives no order; attempts start oldest first.
    deliveries.sort_by_key(|c| c.seq);
    let full = deliveries.len() == limit as usize;
    Ok(Claimed {
        deliveries,
        next_due_ms: due.flatten().filter(|_| !full),
    })
}

/// Appends the statements that store a triaged emit batch to `q`, each
/// ended by `;`, and says whether there were any. The driver binds each
/// statement's `?` from where the previous one's ended, so they run as one
/// statement list.
fn push_emit_writes(q: &mut QueryBuilder<Sqlite>, triage: &crate::plan::Triage<'_>) -> bool {
    let crate::plan::Triage {
        stored, expired, ..
    } = triage;
    let mut any = false;
    for chunk in expired.chunks(ROWS_PER_STATEMENT) {
        q.push("DELETE FROM idempotency_keys WHERE key IN (");
        let mut list = q.separated(", ");
        for key in chunk {
            list.push_bind(key.clone());
        }
        q.push("); ");
        any = true;
    }

    for chunk in stored.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "INSERT INTO events (id, events_id, object_id, object_key, dt, data, filtered_out, created_at) ",
        );
        q.push_values(chunk, |mut row, new| {
            let e = &new.event;
            row.push_bind(e.id.clone())
                .push_bind(e.events_id.clone())
                .push_bind(e.object_id.to_json())
                .push_bind(e.object_id.key())
                .push_bind(timefmt::format_seconds(e.dt))
                .push_bind(e.data.clone())
                .push_bind(new.filtered_out_json())
                .push_bind(new.created_at_ms);
        });
        q.push("; ");
        any = true;
    }

    // An ordered delivery waits while an earlier one for the same (handler,
    // object) is unfinished: one already stored (the EXISTS), or one earlier in
    // this batch (`behind`).
    let rows = crate::plan::delivery_rows(stored);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        // A handler deleted after this emit was routed gets its delivery
        // as failed: deleting failed its open deliveries, and one inserted
        // pending now would never be claimed (claims look only at handlers
        // that exist). The single writer makes the check exact.
        //
        // The checks are one correlated subquery over the rows, not
        // subqueries inside each VALUES row: SQLite keeps every such
        // subquery's cursor open for the whole statement and visits them
        // all on each row it inserts, so a batch of n deliveries cost n²
        // (fan-out to 20 handlers: emits took seconds).
        q.push(
            "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at,
                                     created_at, last_error, finished_at)
             SELECT v.column1, v.column2, v.column3, v.column4,
                    CASE WHEN h.id IS NULL THEN 'failed'
                         WHEN v.column5 OR (v.column6 AND EXISTS (SELECT 1 FROM deliveries o
                              WHERE o.handler_id = v.column3 AND o.object_key = v.column4
                              AND ",
        )
        .push(open_states!("o.state"))
        .push(
            ")) THEN 'waiting' ELSE 'pending' END,
                    v.column7, v.column7,
                    CASE WHEN h.id IS NULL THEN 'not sent: the handler was deleted' END,
                    CASE WHEN h.id IS NULL THEN v.column7 END
             FROM (",
        );
        q.push_values(chunk.iter().enumerate(), |mut row, (i, r)| {
            let (new, d) = (r.new, r.delivery);
            row.push_bind(d.id.clone())
                .push_bind(new.event.id.clone())
                .push_bind(d.handler_id)
                .push_bind(r.object_key.clone())
                .push_bind(r.behind)
                .push_bind(d.ordered)
                .push_bind(new.created_at_ms)
                .push_bind(i as i64);
        });
        // In the batch's order: `seq` is emit order, which lines follow.
        q.push(") AS v LEFT JOIN handlers h ON h.id = v.column3 ORDER BY v.column8; ");
        any = true;
    }

    let keyed: Vec<&NewEvent> = stored
        .iter()
        .copied()
        .filter(|n| n.idempotency.is_some())
        .collect();
    for chunk in keyed.chunks(ROWS_PER_STATEMENT) {
        q.push("INSERT INTO idempotency_keys (key, body_hash, event_id, deliveries, created_at) ");
        q.push_values(chunk, |mut row, new| {
            let key = new.idempotency.as_ref().expect("filtered above");
            row.push_bind(key.key.clone())
                .push_bind(key.body_hash.to_vec())
                .push_bind(new.event.id.clone())
                .push_bind(new.deliveries.len() as i64)
                .push_bind(new.created_at_ms);
        });
        q.push("; ");
        any = true;
    }
    any
}

/// The stored rows of the batch's idempotency keys, in one query per
/// thousand keys.
async fn seen_keys(
    conn: &mut SqliteConnection,
    keys: &[String],
) -> StoreResult<HashMap<String, crate::plan::SeenKey>> {
    let mut seen = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT key, body_hash, event_id, deliveries, created_at FROM idempotency_keys WHERE key IN (",
        );
        let mut list = q.separated(", ");
        for key in chunk {
            list.push_bind(key.clone());
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await? {
            let (key, found) = crate::plan::seen_key(&row)?;
            seen.insert(key, found);
        }
    }
    Ok(seen)
}

/// Handlers per claim statement: SQLite allows 500 terms in a compound SELECT.
const HANDLERS_PER_CLAIM: usize = 400;

/// Leases due deliveries, a statement per 400 handlers; the last one reads
/// the next due time in the same round trip to the driver's worker thread.
pub(super) async fn claim_due(store: &SqliteStore, claim: &Claim<'_>) -> StoreResult<Claimed> {
    if claim.handlers.len() <= HANDLERS_PER_CLAIM {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_claim(&mut q, Some(claim));
        let rows = q
            .build()
            .fetch_all(&mut *store.core.write.take().await?)
            .await?;
        return claimed_from(rows, claim.limit);
    }
    let mut conn = store.core.write.take().await?;
    let mut claimed = Vec::new();
    for handlers in claim.handlers.chunks(HANDLERS_PER_CLAIM) {
        let limit = claim.limit as usize - claimed.len();
        if limit == 0 {
            break;
        }
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_claim_some(&mut q, claim, handlers, limit as i64);
        for row in q.build().fetch_all(&mut *conn).await? {
            claimed.push(row);
        }
    }
    // The next-due row last, as `claimed_from` reads it.
    claimed.push(sqlx::query(NEXT_DUE).fetch_one(&mut *conn).await?);
    claimed_from(claimed, claim.limit)
}

/// One statement: for each handler, its oldest due rows up to its room (an
/// index seek each, `deliveries_due_by_handler`), of those the oldest
/// `limit`, leased and returned with their events' columns.
///
/// The limits are written `LIMIT +?`: SQLite plans a bare `LIMIT ?` for the
/// value bound and marks the prepared statement stale whenever a new value
/// is bound, so a claim re-parsed and re-planned its whole statement almost
/// every time (a third of the database thread's CPU at 200 events/s). Behind
/// the unary plus the value is not looked at when planning.
fn push_claim_some(
    q: &mut QueryBuilder<Sqlite>,
    claim: &Claim<'_>,
    handlers: &[(i64, u32)],
    limit: i64,
) {
    q.push("UPDATE deliveries SET lease_until = ");
    q.push_bind(claim.lease_until_ms)
        .push(", next_attempt_at = ")
        .push_bind(claim.lease_until_ms)
        .push(" WHERE seq IN (SELECT seq FROM (");
    for (i, (handler_id, room)) in handlers.iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push(
            "SELECT * FROM (SELECT seq, next_attempt_at FROM deliveries
             WHERE state = 'pending' AND lease_until IS NULL AND handler_id = ",
        )
        .push_bind(*handler_id)
        .push(" AND next_attempt_at <= ")
        .push_bind(claim.now_ms)
        .push(" ORDER BY next_attempt_at, seq LIMIT +")
        .push_bind(i64::from(*room))
        .push(")");
    }
    q.push(") ORDER BY next_attempt_at, seq LIMIT +")
        .push_bind(limit)
        .push(
            ") RETURNING seq, id, handler_id, attempts, round_start, event_id,
               (SELECT e.events_id FROM events e WHERE e.id = deliveries.event_id) AS events_id,
               (SELECT e.object_id FROM events e WHERE e.id = deliveries.event_id) AS object_id,
               (SELECT e.dt FROM events e WHERE e.id = deliveries.event_id) AS dt,
               (SELECT e.data FROM events e WHERE e.id = deliveries.event_id) AS data",
        );
}

/// A record batch in one round trip to the driver's worker thread: its
/// execution rows, its deliveries' new states and the lines their finish
/// moves on, BEGIN to COMMIT as one statement list. The statements that
/// move lines on return a row per delivery they supersede or release, which
/// are counted.
pub(super) async fn record(
    store: &SqliteStore,
    batch: &[AttemptResult],
    plain: &[ExecutionRecord],
) -> StoreResult<RecordOutcome> {
    let executions: Vec<&ExecutionRecord> = batch
        .iter()
        .filter_map(|r| r.execution.as_ref())
        .chain(plain)
        .collect();
    // Each finished delivery lets the next waiting one of its (handler,
    // object) become due; a blocked one holds its line.
    let line = |r: &AttemptResult| (r.handler_id, r.object_key.clone());
    let closing = || batch.iter().filter(|r| r.next.closes_line());
    let closed: Vec<Line> = closing().map(line).collect();
    let conflating: Vec<Line> = closing().filter(|r| r.conflate).map(line).collect();
    let now = batch
        .iter()
        .map(|r| r.finished_at_ms)
        .max()
        .unwrap_or_default();

    let rows = one_trip(&store.core.write, Durability::Normal, |q| {
        for chunk in executions.chunks(ROWS_PER_STATEMENT) {
            push_insert_executions(q, chunk);
            q.push("; ");
        }
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            push_delivery_updates(q, chunk);
            q.push("; ");
        }
        for chunk in conflating.chunks(ROWS_PER_STATEMENT) {
            push_conflation(q, chunk, now);
            q.push(" RETURNING 'superseded' AS moved; ");
        }
        for chunk in closed.chunks(ROWS_PER_STATEMENT) {
            push_release(q, chunk, now);
            q.push(" RETURNING 'released' AS moved; ");
        }
        !executions.is_empty() || !batch.is_empty()
    })
    .await?;
    let mut moved = RecordOutcome::default();
    for row in &rows {
        match row.text("moved")?.as_str() {
            "superseded" => moved.superseded += 1,
            _ => moved.released += 1,
        }
    }
    Ok(moved)
}

/// Appends the `UPDATE` that gives each attempted delivery in `chunk` its
/// state after the attempt.
fn push_delivery_updates(q: &mut QueryBuilder<Sqlite>, chunk: &[AttemptResult]) {
    q.push(
        "UPDATE deliveries SET state = v.column2, attempts = v.column3, next_attempt_at = v.column4,
            lease_until = NULL, last_error = v.column5, finished_at = v.column6,
            round_start = round_start + v.column7
         FROM (",
    );
    q.push_values(chunk, |mut row, r| {
        let (state, next_at, finished_at) = crate::plan::delivery_after(r);
        row.push_bind(r.delivery_seq)
            .push_bind(state)
            .push_bind(r.attempts)
            .push_bind(next_at)
            .push_bind(r.last_error.clone())
            .push_bind(finished_at)
            .push_bind(i64::from(r.spare_round));
    });
    q.push(") AS v WHERE deliveries.seq = v.column1");
}

/// The single writer makes the selection and the queueing exact: no emit or
/// record runs between them.
pub(super) async fn start_replay(
    store: &SqliteStore,
    job: &NewReplay,
) -> StoreResult<ReplayRecord> {
    write_tx(&store.core.write, Durability::Normal, async |tx| {
        SqlCore::<Sqlite>::start_replay_in(tx, job, |_| {}).await
    })
    .await
}

pub(super) async fn cancel_replay(
    store: &SqliteStore,
    id: &str,
    now: i64,
) -> StoreResult<(ReplayRecord, u64)> {
    write_tx(&store.core.write, Durability::Normal, async |tx| {
        let (handler_id, _) = SqlCore::<Sqlite>::replay_open_keys_in(tx, id).await?;
        SqlCore::<Sqlite>::cancel_replay_in(tx, id, handler_id, now).await
    })
    .await
}
