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
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{corrupt, executions, now_ms};
use crate::*;

pub(super) async fn insert_events(
    pool: &SqlitePool,
    batch: &[NewEvent],
) -> StoreResult<Vec<EmitOutcome>> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for new in batch {
        if let Some(key) = &new.idempotency
            && let Some(seen) = seen_key(&mut tx, key, new.created_at_ms).await?
        {
            outcomes.push(seen);
            continue;
        }
        insert_event(&mut tx, new).await?;
        outcomes.push(EmitOutcome::Stored);
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

async fn insert_event(conn: &mut SqliteConnection, new: &NewEvent) -> StoreResult<()> {
    let event = &new.event;
    let object_key = event.object_id.key();
    sqlx::query("INSERT INTO events (id, events_id, object_id, object_key, dt, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(&event.id)
        .bind(&event.events_id)
        .bind(event.object_id.to_json())
        .bind(&object_key)
        .bind(timefmt::format_seconds(event.dt))
        .bind(&event.data)
        .bind(new.created_at_ms)
        .execute(&mut *conn)
        .await?;
    for delivery in &new.deliveries {
        // An ordered delivery waits while an earlier one for the same object
        // is unfinished; everything else is due at once.
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, handler_id, object_key, state, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4,
                CASE WHEN ?5 AND EXISTS (SELECT 1 FROM deliveries WHERE handler_id = ?3 AND object_key = ?4
                                         AND state IN ('pending', 'waiting'))
                     THEN 'waiting' ELSE 'pending' END,
                ?6, ?6)",
        )
        .bind(&delivery.id)
        .bind(&event.id)
        .bind(delivery.handler_id)
        .bind(&object_key)
        .bind(delivery.ordered)
        .bind(new.created_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(key) = &new.idempotency {
        sqlx::query("INSERT INTO idempotency_keys (key, body_hash, event_id, deliveries, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&key.key)
            .bind(&key.body_hash[..])
            .bind(&event.id)
            .bind(new.deliveries.len() as i64)
            .bind(new.created_at_ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
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

pub(super) async fn record_attempts(
    pool: &SqlitePool,
    batch: &[AttemptResult],
) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let mut released = 0;
    for result in batch {
        if let Some(execution) = &result.execution {
            executions::insert(&mut tx, execution).await?;
        }
        let (state, next_at, finished_at) = match result.next {
            DeliveryNext::Succeeded => ("success", None, Some(result.finished_at_ms)),
            DeliveryNext::Failed => ("failed", None, Some(result.finished_at_ms)),
            DeliveryNext::RetryAt { at_ms } => ("pending", Some(at_ms), None),
        };
        sqlx::query(
            "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL,
                last_error = ?, finished_at = ?
             WHERE seq = ?",
        )
        .bind(state)
        .bind(result.attempts)
        .bind(next_at)
        .bind(&result.last_error)
        .bind(finished_at)
        .bind(result.delivery_seq)
        .execute(&mut *tx)
        .await?;
        if finished_at.is_some() {
            released += release_next(
                &mut tx,
                result.handler_id,
                &result.object_key,
                result.finished_at_ms,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(released)
}

/// Makes the oldest waiting delivery of (handler, object) due.
async fn release_next(
    conn: &mut SqliteConnection,
    handler_id: i64,
    object_key: &str,
    now: i64,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?
         WHERE seq = (SELECT seq FROM deliveries WHERE handler_id = ? AND object_key = ? AND state = 'waiting'
                      ORDER BY seq LIMIT 1)",
    )
    .bind(now)
    .bind(handler_id)
    .bind(object_key)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
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
