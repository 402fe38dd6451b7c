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

use super::direct::{Row, Stmt};
use super::{Durability, SqliteStore};
use crate::query::{ROWS_PER_STATEMENT, Sql, line_open, push_insert_executions, values};
use crate::rows::Columns;
use crate::rows::claimed as claimed_from_row;
use crate::shared::Dialect;
use crate::shared::lines::{Line, push_conflation, push_release_line};
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
    // switches to FULL for this commit.
    let keys = crate::plan::keys(batch);
    let writer = store.core.write.take_for_thread().await?;
    let mut emitted = if keys.is_empty() {
        // Nothing to look up first: the whole transaction, claim included,
        // is one call to the write thread.
        let triage = crate::plan::triage(batch, &HashMap::new());
        let mut stmts = emit_writes(&triage);
        push_claim(&mut stmts, claim);
        let rows = if stmts.is_empty() {
            Vec::new()
        } else {
            store.direct.transaction(store.durability, stmts).await?
        };
        Emitted {
            claimed: claim.map(|c| claimed_from(rows, c.limit)).transpose()?,
            outcomes: triage.outcomes,
        }
    } else {
        let found = store
            .direct
            .start(store.durability, seen_keys(&keys))
            .await?;
        let seen = found
            .iter()
            .map(crate::plan::seen_key)
            .collect::<StoreResult<HashMap<_, _>>>()?;
        let triage = crate::plan::triage(batch, &seen);
        let mut stmts = emit_writes(&triage);
        push_claim(&mut stmts, claim);
        let rows = store.direct.finish(stmts).await?;
        Emitted {
            claimed: claim.map(|c| claimed_from(rows, c.limit)).transpose()?,
            outcomes: triage.outcomes,
        }
    };
    drop(writer);
    if let Some(claim) = claim_after {
        emitted.claimed = Some(claim_due(store, claim).await?);
    }
    Ok(emitted)
}

/// Appends a claim (at most [`HANDLERS_PER_CLAIM`] handlers) and the read of
/// the next due time after it. [`claimed_from`] reads their rows.
fn push_claim(stmts: &mut Vec<Stmt>, claim: Option<&Claim<'_>>) {
    let Some(claim) = claim else { return };
    if !claim.handlers.is_empty() {
        stmts.push(claim_some(claim, claim.handlers, i64::from(claim.limit)));
    }
    stmts.push(Stmt::new(sqlx::Sqlite::NEXT_DUE));
}

/// The claim's rows, then the next-due row (which comes last), as a
/// [`Claimed`] of at most `limit` deliveries.
fn claimed_from(mut rows: Vec<Row>, limit: u32) -> StoreResult<Claimed> {
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

/// The statements that store a triaged emit batch.
fn emit_writes(triage: &crate::plan::Triage<'_>) -> Vec<Stmt> {
    let crate::plan::Triage {
        stored, expired, ..
    } = triage;
    let mut stmts = Vec::new();
    for chunk in expired.chunks(ROWS_PER_STATEMENT) {
        let mut q = Stmt::new("DELETE FROM idempotency_keys WHERE key IN (");
        for (i, key) in chunk.iter().enumerate() {
            q.sql(if i == 0 { "" } else { ", " }).arg(key.clone());
        }
        q.sql(")");
        stmts.push(q);
    }

    // A statement per row (ARCHITECTURE.md, "Storage"): one text, prepared
    // once, where a multi-row `VALUES` list has a text per batch size,
    // parsed and planned anew as batch sizes vary.
    for new in stored {
        let e = &new.event;
        let mut q = Stmt::new(
            "INSERT INTO events (id, events_id, object_id, object_key, dt, data, filtered_out, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        );
        q.bind(e.id.clone())
            .bind(e.events_id.clone())
            .bind(e.object_id.to_json())
            .bind(e.object_id.key())
            .bind(timefmt::format_seconds(e.dt))
            .bind(e.data.clone())
            .bind(new.filtered_out_json())
            .bind(new.created_at_ms);
        stmts.push(q);
    }

    // In emit order (`seq` is emit order, which lines follow): see
    // `INSERT_DELIVERY`.
    for r in crate::plan::delivery_rows(stored) {
        let (new, d) = (r.new, r.delivery);
        let mut q = Stmt::new(INSERT_DELIVERY);
        q.bind(d.id.clone())
            .bind(new.event.id.clone())
            .bind(d.handler_id)
            .bind(r.object_key)
            .bind(d.ordered)
            .bind(new.created_at_ms);
        stmts.push(q);
    }

    let keyed: Vec<&NewEvent> = stored
        .iter()
        .copied()
        .filter(|n| n.idempotency.is_some())
        .collect();
    for chunk in keyed.chunks(ROWS_PER_STATEMENT) {
        let mut q = Stmt::new(
            "INSERT INTO idempotency_keys (key, body_hash, event_id, deliveries, created_at) ",
        );
        values(&mut q, chunk, |row, new| {
            let key = new.idempotency.as_ref().expect("filtered above");
            row.arg(key.key.clone())
                .arg(key.body_hash.to_vec())
                .arg(new.event.id.clone())
                .arg(new.deliveries.len() as i64)
                .arg(new.created_at_ms);
        });
        stmts.push(q);
    }
    stmts
}

/// Inserts one delivery: `?1` id, `?2` event, `?3` handler, `?4` object
/// key, `?5` ordered, `?6` now.
///
/// An ordered delivery waits while an earlier one for the same (handler,
/// object) is unfinished: one already stored, or one earlier in this batch,
/// inserted by the statements before (so the plan's `behind`, which
/// PostgreSQL's single statement needs, is not needed here). A handler deleted after this
/// emit was routed gets its delivery as failed: deleting failed its open
/// deliveries, and one inserted pending now would never be claimed (claims
/// look only at handlers that exist). The single writer makes the checks
/// exact.
///
/// One row per statement, from the write thread's statement cache: a
/// multi-row `INSERT … SELECT … FROM (VALUES …)` cost SQLite a statement
/// journal (a copy of each page it wrote, for the foreign key's sake), an
/// ephemeral table and a sorter on every run, an emit of one event
/// included (issue 15). (Subqueries inside each row of one `VALUES` list
/// were worse: SQLite keeps every such subquery's cursor open for the
/// whole statement and visits them all per row, n² for a batch.)
const INSERT_DELIVERY: &str = concat!(
    "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at,
                             created_at, last_error, finished_at)
     VALUES (?1, ?2, ?3, ?4,
             CASE WHEN NOT EXISTS (SELECT 1 FROM handlers WHERE id = ?3) THEN 'failed'
                  WHEN ?5 AND ",
    line_open!("?3", "?4"),
    " THEN 'waiting' ELSE 'pending' END,
             ?6, ?6,
             CASE WHEN NOT EXISTS (SELECT 1 FROM handlers WHERE id = ?3)
                  THEN 'not sent: the handler was deleted' END,
             CASE WHEN NOT EXISTS (SELECT 1 FROM handlers WHERE id = ?3) THEN ?6 END)"
);

/// The reads of the batch's stored idempotency keys, one per thousand keys
/// (their rows for `plan::seen_key`).
fn seen_keys(keys: &[String]) -> Vec<Stmt> {
    keys.chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            let mut q = Stmt::new(
                "SELECT key, body_hash, event_id, deliveries, created_at FROM idempotency_keys WHERE key IN (",
            );
            for (i, key) in chunk.iter().enumerate() {
                q.sql(if i == 0 { "" } else { ", " }).arg(key.clone());
            }
            q.sql(")");
            q
        })
        .collect()
}

/// Handlers per claim statement: SQLite allows 500 terms in a compound SELECT.
const HANDLERS_PER_CLAIM: usize = 400;

/// Leases due deliveries, a statement per 400 handlers; the last call also
/// reads the next due time.
pub(super) async fn claim_due(store: &SqliteStore, claim: &Claim<'_>) -> StoreResult<Claimed> {
    let _writer = store.core.write.take_for_thread().await?;
    if claim.handlers.len() <= HANDLERS_PER_CLAIM {
        let mut stmts = Vec::with_capacity(2);
        push_claim(&mut stmts, Some(claim));
        let rows = store.direct.transaction(Durability::Normal, stmts).await?;
        return claimed_from(rows, claim.limit);
    }
    // Each statement's limit is what the ones before left.
    let mut claimed = Vec::new();
    for handlers in claim.handlers.chunks(HANDLERS_PER_CLAIM) {
        let limit = claim.limit as usize - claimed.len();
        if limit == 0 {
            break;
        }
        let stmt = claim_some(claim, handlers, limit as i64);
        claimed.extend(
            store
                .direct
                .transaction(Durability::Normal, vec![stmt])
                .await?,
        );
    }
    // The next-due row last, as `claimed_from` reads it.
    claimed.extend(
        store
            .direct
            .transaction(Durability::Normal, vec![Stmt::new(sqlx::Sqlite::NEXT_DUE)])
            .await?,
    );
    claimed_from(claimed, claim.limit)
}

/// One statement: for each handler, its oldest due rows up to its room (an
/// index seek each, `deliveries_due_by_handler`), of those the oldest
/// `limit`, with their events' columns; the write thread then leases each
/// row it read, by `seq`, in the same transaction. (`UPDATE … WHERE seq IN
/// (…) RETURNING …` did both in one statement, and cost SQLite an
/// ephemeral table for the `IN` list, another for the returned rows and a
/// Bloom filter, on every claim: issue 15.)
///
/// The limits are written `LIMIT +?`: SQLite plans a bare `LIMIT ?` for the
/// value bound and marks the prepared statement stale whenever a new value
/// is bound, so a claim re-parsed and re-planned its whole statement almost
/// every time (a third of the database thread's CPU at 200 events/s). Behind
/// the unary plus the value is not looked at when planning.
fn claim_some(claim: &Claim<'_>, handlers: &[(i64, u32)], limit: i64) -> Stmt {
    let mut q = Stmt::new(
        "SELECT d.seq AS seq, d.id AS id, d.handler_id AS handler_id, d.attempts AS attempts,
                d.round_start AS round_start, d.event_id AS event_id, e.events_id AS events_id,
                e.object_id AS object_id, e.dt AS dt, e.data AS data
         FROM (SELECT seq FROM (",
    );
    for (i, (handler_id, room)) in handlers.iter().enumerate() {
        if i > 0 {
            q.sql(" UNION ALL ");
        }
        q.sql(
            "SELECT * FROM (SELECT seq, next_attempt_at FROM deliveries
             WHERE state = 'pending' AND lease_until IS NULL AND handler_id = ",
        )
        .arg(*handler_id)
        .sql(" AND next_attempt_at <= ")
        .arg(claim.now_ms)
        .sql(" ORDER BY next_attempt_at, seq LIMIT +")
        .arg(i64::from(*room))
        .sql(")");
    }
    q.sql(") ORDER BY next_attempt_at, seq LIMIT +")
        .arg(limit)
        .sql(
            ") AS c JOIN deliveries d ON d.seq = c.seq
             LEFT JOIN events e ON e.id = d.event_id",
        );
    let lease_until = claim.lease_until_ms;
    q.each_row(move |row| {
        let mut lease = Stmt::new(
            "UPDATE deliveries SET lease_until = ?1, next_attempt_at = ?1 WHERE seq = ?2",
        );
        lease.bind(lease_until).bind(row.int("seq")?);
        Ok(lease)
    })
}

/// A record batch in one call to the write thread: its execution rows, its
/// deliveries' new states and the lines their finish moves on, in one
/// transaction. The statements that move lines on return a row per
/// delivery they supersede or release, which are counted.
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
    if executions.is_empty() && batch.is_empty() {
        return Ok(RecordOutcome::default());
    }
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

    let mut stmts = Vec::new();
    // A statement per row, as in an emit.
    for execution in executions {
        let mut q = Stmt::default();
        push_insert_executions(&mut q, &[execution]);
        stmts.push(q);
    }
    stmts.extend(batch.iter().map(delivery_update));
    for chunk in conflating.chunks(ROWS_PER_STATEMENT) {
        let mut q = Stmt::default();
        push_conflation(&mut q, chunk, now);
        stmts.push(q.count_as("superseded"));
    }
    // A statement per line, as the updates above (`push_release_line`).
    for line in &closed {
        let mut q = Stmt::default();
        push_release_line(&mut q, line, now);
        stmts.push(q.count_as("released"));
    }
    // Nobody waits on a plain result: it rides with the next emit's or
    // claim's commit (one commit per event at low rates, not two). A batch
    // that moved a line on commits at once, for the dispatcher to claim
    // what it released. It begins at the emits' durability, so an emit
    // can join it.
    let writer = store.core.write.take_for_thread().await?;
    let answer = store.direct.linger(store.durability, stmts)?;
    drop(writer);
    let rows = answer.wait().await?;
    let mut moved = RecordOutcome::default();
    for row in &rows {
        let count = row.int("count")? as u64;
        match row.text("moved")?.as_str() {
            "superseded" => moved.superseded += count,
            _ => moved.released += count,
        }
    }
    Ok(moved)
}

/// The `UPDATE` that gives an attempted delivery its state after the
/// attempt: one statement per delivery, run from the write thread's cache.
/// A single-row update by `seq` needs none of what one statement for the
/// whole batch (`UPDATE … FROM (VALUES …)`) cost SQLite on every run: two
/// ephemeral b-trees and a statement journal. Issue 15: instructions per
/// event at 20 events/s (`--only instructions`), see ARCHITECTURE.md.
fn delivery_update(r: &AttemptResult) -> Stmt {
    let (state, next_at, finished_at) = crate::plan::delivery_after(r);
    let mut q = Stmt::new("UPDATE deliveries SET state = ");
    q.arg(state)
        .sql(", attempts = ")
        .arg(i64::from(r.attempts))
        .sql(", next_attempt_at = ")
        .arg(next_at)
        .sql(", lease_until = NULL, last_error = ")
        .arg(r.last_error.clone())
        .sql(", finished_at = ")
        .arg(finished_at)
        .sql(", round_start = round_start + ")
        .arg(i64::from(r.spare_round))
        .sql(" WHERE seq = ")
        .arg(r.delivery_seq);
    q
}
