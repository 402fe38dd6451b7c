//! Events and the delivery queue.
//!
//! A delivery is due when `state = 'pending'` and `next_attempt_at <= now`.
//! Leasing pushes `next_attempt_at` to the lease's end, so a leased delivery is
//! simply not due; if its worker dies, it becomes due again when the lease
//! lapses, with no sweeper. Ordered deliveries queued behind an unfinished one
//! for the same (handler, object) wait in `state = 'waiting'` and are released
//! one at a time as their predecessor finishes.

use provisio_core::event::{DeliveryState, Event, ObjectId};
use provisio_core::timefmt::{self, from_millis};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use std::collections::{HashMap, HashSet};

use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{Durability, corrupt, executions, now_ms};
use crate::*;

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 1000;

pub(super) async fn insert_events(
    pool: &SqlitePool,
    durability: Durability,
    batch: &[NewEvent],
) -> StoreResult<Vec<EmitOutcome>> {
    let mut conn = pool.acquire().await?;
    // Only accepted emits must survive power loss; other writes (leases,
    // attempt results) can be redone, so the connection runs at NORMAL and
    // switches to FULL for this commit. One fsync of the WAL covers everything
    // written before it.
    if durability == Durability::Full {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
    }
    let result = insert_events_tx(&mut conn, batch).await;
    if durability == Durability::Full {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn insert_events_tx(
    conn: &mut SqliteConnection,
    batch: &[NewEvent],
) -> StoreResult<Vec<EmitOutcome>> {
    let mut tx = conn.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut stored: Vec<&NewEvent> = Vec::with_capacity(batch.len());
    let mut keys_in_batch: HashMap<&str, usize> = HashMap::new();
    for new in batch {
        if let Some(key) = &new.idempotency {
            // The same key twice in one batch: the later one sees the earlier.
            if let Some(&first) = keys_in_batch.get(key.key.as_str()) {
                let earlier: &NewEvent = stored[first];
                let same = earlier
                    .idempotency
                    .as_ref()
                    .is_some_and(|k| k.body_hash == key.body_hash);
                outcomes.push(if same {
                    EmitOutcome::Replayed {
                        event_id: earlier.event.id.clone(),
                        deliveries: earlier.deliveries.len() as u32,
                    }
                } else {
                    EmitOutcome::KeyReused
                });
                continue;
            }
            if let Some(seen) = seen_key(&mut tx, key, new.created_at_ms).await? {
                outcomes.push(seen);
                continue;
            }
            keys_in_batch.insert(&key.key, stored.len());
        }
        stored.push(new);
        outcomes.push(EmitOutcome::Stored);
    }

    for chunk in stored.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, events_id, object_id, object_key, dt, data, created_at) ",
        );
        q.push_values(chunk, |mut row, new| {
            let e = &new.event;
            row.push_bind(e.id.clone())
                .push_bind(e.events_id.clone())
                .push_bind(e.object_id.to_json())
                .push_bind(e.object_id.key())
                .push_bind(timefmt::format_seconds(e.dt))
                .push_bind(e.data.clone())
                .push_bind(new.created_at_ms);
        });
        q.build().execute(&mut *tx).await?;
    }

    // An ordered delivery waits while an earlier one for the same (handler,
    // object) is unfinished: one already stored (the EXISTS), or one earlier in
    // this batch (a multi-row INSERT does not see its own rows, so Rust marks those).
    let mut open_in_batch: HashSet<(i64, String)> = HashSet::new();
    let mut rows: Vec<(&NewEvent, &NewDelivery, String, bool)> = Vec::new();
    for new in &stored {
        let key = new.event.object_id.key();
        for d in &new.deliveries {
            let behind = d.ordered && !open_in_batch.insert((d.handler_id, key.clone()));
            rows.push((new, d, key.clone(), behind));
        }
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at, created_at) ",
        );
        q.push_values(chunk, |mut row, (new, d, key, behind)| {
            row.push_bind(d.id.clone())
                .push_bind(new.event.id.clone())
                .push_bind(d.handler_id)
                .push_bind(key.clone())
                .push("CASE WHEN ")
                .push_bind_unseparated(*behind)
                .push_unseparated(" OR (")
                .push_bind_unseparated(d.ordered)
                .push_unseparated(" AND EXISTS (SELECT 1 FROM deliveries WHERE handler_id = ")
                .push_bind_unseparated(d.handler_id)
                .push_unseparated(" AND object_key = ")
                .push_bind_unseparated(key.clone())
                .push_unseparated(
                    " AND state IN ('pending', 'waiting'))) THEN 'waiting' ELSE 'pending' END",
                )
                .push_bind(new.created_at_ms)
                .push_bind(new.created_at_ms);
        });
        q.build().execute(&mut *tx).await?;
    }

    let keyed: Vec<&NewEvent> = stored
        .iter()
        .copied()
        .filter(|n| n.idempotency.is_some())
        .collect();
    for chunk in keyed.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO idempotency_keys (key, body_hash, event_id, deliveries, created_at) ",
        );
        q.push_values(chunk, |mut row, new| {
            let key = new.idempotency.as_ref().expect("filtered above");
            row.push_bind(key.key.clone())
                .push_bind(key.body_hash.to_vec())
                .push_bind(new.event.id.clone())
                .push_bind(new.deliveries.len() as i64)
                .push_bind(new.created_at_ms);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The outcome for a key used within the window; `None` when the key is new or
/// expired (an expired row is dropped so the key can be used again).
async fn seen_key(
    conn: &mut SqliteConnection,
    key: &Idempotency,
    now: i64,
) -> StoreResult<Option<EmitOutcome>> {
    let row = sqlx::query(
        "SELECT body_hash, event_id, deliveries, created_at FROM idempotency_keys WHERE key = ?",
    )
    .bind(&key.key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let created_at: i64 = row.try_get("created_at")?;
    if created_at + IDEMPOTENCY_WINDOW_MS < now {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = ?")
            .bind(&key.key)
            .execute(&mut *conn)
            .await?;
        return Ok(None);
    }
    let body_hash: Vec<u8> = row.try_get("body_hash")?;
    if body_hash != key.body_hash {
        return Ok(Some(EmitOutcome::KeyReused));
    }
    Ok(Some(EmitOutcome::Replayed {
        event_id: row.try_get("event_id")?,
        deliveries: row.try_get("deliveries")?,
    }))
}

pub(super) async fn claim_due(
    pool: &SqlitePool,
    claim: &Claim<'_>,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let mut tx = pool.begin().await?;
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT d.seq, d.id, d.handler_id, d.attempts, d.round_start,
                e.id AS event_id, e.events_id, e.object_id, e.dt, e.data
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.state = 'pending' AND d.next_attempt_at <= ",
    );
    q.push_bind(claim.now_ms);
    if !claim.skip_handlers.is_empty() {
        q.push(" AND d.handler_id NOT IN (");
        let mut list = q.separated(", ");
        for id in claim.skip_handlers {
            list.push_bind(*id);
        }
        q.push(")");
    }
    q.push(" ORDER BY d.next_attempt_at, d.seq LIMIT ")
        .push_bind(i64::from(claim.limit));
    let rows = q.build().fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let claimed = rows
        .iter()
        .map(claimed_from_row)
        .collect::<StoreResult<Vec<_>>>()?;

    let mut lease = QueryBuilder::<Sqlite>::new("UPDATE deliveries SET lease_until = ");
    lease
        .push_bind(claim.lease_until_ms)
        .push(", next_attempt_at = ")
        .push_bind(claim.lease_until_ms)
        .push(" WHERE seq IN (");
    let mut list = lease.separated(", ");
    for c in &claimed {
        list.push_bind(c.seq);
    }
    lease.push(")");
    lease.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(claimed)
}

fn claimed_from_row(row: &SqliteRow) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        handler_id: row.try_get("handler_id")?,
        attempts: row.try_get("attempts")?,
        round_start: row.try_get("round_start")?,
        event: event_from_row(row)?,
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<Event> {
    let object_id: String = row.try_get("object_id")?;
    let dt: String = row.try_get("dt")?;
    Ok(Event {
        id: row.try_get("event_id")?,
        events_id: row.try_get("events_id")?,
        object_id: ObjectId::from_json_text(&object_id)
            .map_err(|e| corrupt("event object_id", e))?,
        dt: timefmt::parse(&dt).map_err(|e| corrupt("event dt", e))?,
        data: row.try_get("data")?,
    })
}

pub(super) async fn next_due_ms(pool: &SqlitePool) -> StoreResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'")
            .fetch_one(pool)
            .await?,
    )
}

pub(super) async fn release_all_leases(pool: &SqlitePool) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET next_attempt_at = ?, lease_until = NULL
         WHERE state = 'pending' AND lease_until IS NOT NULL",
    )
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn record(
    pool: &SqlitePool,
    batch: &[AttemptResult],
    plain: &[ExecutionRecord],
) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let executions: Vec<&ExecutionRecord> = batch
        .iter()
        .filter_map(|r| r.execution.as_ref())
        .chain(plain)
        .collect();
    executions::insert_many(&mut tx, &executions).await?;

    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE deliveries SET state = v.column2, attempts = v.column3, next_attempt_at = v.column4,
                lease_until = NULL, last_error = v.column5, finished_at = v.column6
             FROM (",
        );
        q.push_values(chunk, |mut row, r| {
            let (state, next_at, finished_at) = match r.next {
                DeliveryNext::Succeeded => ("success", None, Some(r.finished_at_ms)),
                DeliveryNext::Failed => ("failed", None, Some(r.finished_at_ms)),
                DeliveryNext::RetryAt { at_ms } => ("pending", Some(at_ms), None),
            };
            row.push_bind(r.delivery_seq)
                .push_bind(state)
                .push_bind(r.attempts)
                .push_bind(next_at)
                .push_bind(r.last_error.clone())
                .push_bind(finished_at);
        });
        q.push(") AS v WHERE deliveries.seq = v.column1");
        q.build().execute(&mut *tx).await?;
    }

    // Each finished delivery lets the oldest waiting one of its (handler,
    // object) become due.
    let finished: Vec<&AttemptResult> = batch
        .iter()
        .filter(|r| !matches!(r.next, DeliveryNext::RetryAt { .. }))
        .collect();
    let mut released = 0;
    for chunk in finished.chunks(ROWS_PER_STATEMENT) {
        let now = chunk
            .iter()
            .map(|r| r.finished_at_ms)
            .max()
            .unwrap_or_default();
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ",
        );
        q.push_bind(now)
            .push(" WHERE seq IN (SELECT MIN(d.seq) FROM (");
        q.push_values(chunk, |mut row, r| {
            row.push_bind(r.handler_id).push_bind(r.object_key.clone());
        });
        q.push(
            ") AS v JOIN deliveries d
                ON d.handler_id = v.column1 AND d.object_key = v.column2 AND d.state = 'waiting'
             GROUP BY d.handler_id, d.object_key)",
        );
        released += q.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(released)
}

const DELIVERY_COLUMNS: &str = "id, event_id, handler_id, state, attempts, next_attempt_at, lease_until, last_error, created_at, finished_at";

pub(super) async fn get_event(
    pool: &SqlitePool,
    id: &str,
) -> StoreResult<Option<(Event, Vec<DeliveryRecord>)>> {
    let row = sqlx::query(
        "SELECT id AS event_id, events_id, object_id, dt, data FROM events WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let event = event_from_row(&row)?;
    let mut q = QueryBuilder::<Sqlite>::new("SELECT ");
    q.push(DELIVERY_COLUMNS)
        .push(" FROM deliveries WHERE event_id = ")
        .push_bind(id)
        .push(" ORDER BY seq");
    let rows = q.build().fetch_all(pool).await?;
    let deliveries = rows
        .iter()
        .map(delivery_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(Some((event, deliveries)))
}

pub(super) async fn redeliver(
    pool: &SqlitePool,
    delivery_id: &str,
    now: i64,
) -> StoreResult<DeliveryRecord> {
    let mut tx = pool.begin().await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE id = ?")
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?;
    match state.as_deref() {
        None => return Err(StoreError::NotFound),
        Some("pending" | "waiting") => {
            return Err(StoreError::Conflict(
                "the delivery is still pending; it will be attempted again on its own".into(),
            ));
        }
        Some(_) => {}
    }
    // Behind any unfinished delivery of the same object, so order still holds.
    sqlx::query(
        "UPDATE deliveries SET
            state = CASE WHEN EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = deliveries.handler_id
                                      AND o.object_key = deliveries.object_key
                                      AND o.state IN ('pending', 'waiting'))
                         THEN 'waiting' ELSE 'pending' END,
            round_start = attempts, next_attempt_at = ?, lease_until = NULL, finished_at = NULL
         WHERE id = ?",
    )
    .bind(now)
    .bind(delivery_id)
    .execute(&mut *tx)
    .await?;
    let mut q = QueryBuilder::<Sqlite>::new("SELECT ");
    q.push(DELIVERY_COLUMNS)
        .push(" FROM deliveries WHERE id = ")
        .push_bind(delivery_id);
    let row = q.build().fetch_one(&mut *tx).await?;
    tx.commit().await?;
    delivery_from_row(&row)
}

fn delivery_from_row(row: &SqliteRow) -> StoreResult<DeliveryRecord> {
    let state: String = row.try_get("state")?;
    let state: DeliveryState = state.parse().map_err(|e| corrupt("delivery state", e))?;
    let leased = row.try_get::<Option<i64>, _>("lease_until")?.is_some();
    let next: Option<i64> = row.try_get("next_attempt_at")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        handler_id: row.try_get("handler_id")?,
        state,
        attempts: row.try_get("attempts")?,
        // A leased delivery's next_attempt_at is its lease end, not a schedule.
        next_attempt_at: next
            .filter(|_| state == DeliveryState::Pending && !leased)
            .map(from_millis),
        last_error: row.try_get("last_error")?,
        created_at: from_millis(row.try_get("created_at")?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
    })
}

pub(super) async fn prune(pool: &SqlitePool, before_ms: i64, batch: u32) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let limit = i64::from(batch);
    let mut removed = 0;
    removed += sqlx::query(
        "DELETE FROM executions WHERE id IN
            (SELECT id FROM executions WHERE started_at < ? ORDER BY started_at LIMIT ?)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    removed += sqlx::query(
        "DELETE FROM deliveries WHERE seq IN
            (SELECT seq FROM deliveries WHERE state IN ('success', 'failed') AND finished_at < ?
             ORDER BY finished_at LIMIT ?)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Event ids are ULIDs, so "older than" is a range of the primary key.
    let oldest_kept = ulid::Ulid::from_parts(before_ms.max(0) as u64, 0).to_string();
    removed += sqlx::query(
        "DELETE FROM events WHERE id IN
            (SELECT e.id FROM events e WHERE e.id < ?
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             ORDER BY e.id LIMIT ?)",
    )
    .bind(oldest_kept)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let now = now_ms();
    removed += sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
        .bind(now - IDEMPOTENCY_WINDOW_MS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    removed += sqlx::query("DELETE FROM web_sessions WHERE expires_at < ?")
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(removed)
}
