//! The execution log: one row per call to a handler.

use provisio_core::event::ObjectId;
use provisio_core::timefmt::{from_millis, to_millis};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::corrupt;
use super::handlers::like_pattern;
use crate::*;

const SELECT: &str = "SELECT id, delivery_id, handler_id, handler_name, event_id, events_id, object_id, stage, \
     attempt, status, started_at, duration_ms, request_target, request_headers, request_body, response_status, \
     response_body, response_truncated, error, next_attempt_at, data_after FROM executions";

/// Inserts execution rows with one statement per thousand rows.
pub(super) async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[&ExecutionRecord],
) -> StoreResult<()> {
    for chunk in rows.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO executions (delivery_id, handler_id, handler_name, event_id, events_id, object_id,
                object_key, stage, attempt, status, started_at, duration_ms, request_target, request_headers,
                request_body, response_status, response_body, response_truncated, error, next_attempt_at,
                data_after) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(e.delivery_id.clone())
                .push_bind(e.handler_id)
                .push_bind(e.handler_name.clone())
                .push_bind(e.event_id.clone())
                .push_bind(e.events_id.clone())
                .push_bind(e.object_id.to_json())
                .push_bind(e.object_id.key())
                .push_bind(e.stage.as_str())
                .push_bind(e.attempt)
                .push_bind(e.status.as_str())
                .push_bind(to_millis(e.started_at))
                .push_bind(e.duration_ms)
                .push_bind(e.request.target.clone())
                .push_bind(
                    serde_json::to_string(&e.request.headers)
                        .expect("a string map always serializes"),
                )
                .push_bind(e.request.body.clone())
                .push_bind(e.response_status)
                .push_bind(e.response_body.clone())
                .push_bind(e.response_truncated)
                .push_bind(e.error.clone())
                .push_bind(e.next_attempt_at.map(to_millis))
                .push_bind(e.data_after.clone());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &ExecutionFilter,
    page: Page,
) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
    let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM executions");
    push_where(&mut count, filter);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Sqlite>::new(SELECT);
    push_where(&mut q, filter);
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.per_page))
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = q.build().fetch_all(pool).await?;
    let items = rows.iter().map(from_row).collect::<StoreResult<_>>()?;
    Ok((items, total as u64))
}

pub(super) async fn get(pool: &SqlitePool, id: i64) -> StoreResult<Option<ExecutionRecord>> {
    let mut q = QueryBuilder::<Sqlite>::new(SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

fn push_where(q: &mut QueryBuilder<Sqlite>, f: &ExecutionFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = f.handler_id {
        q.push(" AND handler_id = ").push_bind(v);
    }
    if let Some(v) = &f.events_id {
        q.push(" AND events_id = ").push_bind(v.clone());
    }
    if let Some(v) = f.status {
        q.push(" AND status = ").push_bind(v.as_str());
    }
    if let Some(v) = f.stage {
        q.push(" AND stage = ").push_bind(v.as_str());
    }
    if let Some(v) = &f.object_id {
        q.push(" AND object_key = ").push_bind(v.clone());
    }
    if let Some(v) = &f.delivery_id {
        q.push(" AND delivery_id = ").push_bind(v.clone());
    }
    if let Some(v) = &f.event_id {
        q.push(" AND event_id = ").push_bind(v.clone());
    }
    if let Some(v) = f.data.as_deref().filter(|v| !v.is_empty()) {
        q.push(" AND request_body LIKE ")
            .push_bind(like_pattern(v))
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = f.error.as_deref().filter(|v| !v.is_empty()) {
        q.push(" AND error LIKE ")
            .push_bind(like_pattern(v))
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = f.from_ms {
        q.push(" AND started_at >= ").push_bind(v);
    }
    if let Some(v) = f.to_ms {
        q.push(" AND started_at <= ").push_bind(v);
    }
}

fn from_row(row: &SqliteRow) -> StoreResult<ExecutionRecord> {
    let object_id: String = row.try_get("object_id")?;
    let stage: String = row.try_get("stage")?;
    let status: String = row.try_get("status")?;
    let headers: String = row.try_get("request_headers")?;
    Ok(ExecutionRecord {
        id: row.try_get("id")?,
        delivery_id: row.try_get("delivery_id")?,
        handler_id: row.try_get("handler_id")?,
        handler_name: row.try_get("handler_name")?,
        event_id: row.try_get("event_id")?,
        events_id: row.try_get("events_id")?,
        object_id: ObjectId::from_json_text(&object_id)
            .map_err(|e| corrupt("execution object_id", e))?,
        stage: stage.parse().map_err(|e| corrupt("execution stage", e))?,
        attempt: row.try_get("attempt")?,
        status: status.parse().map_err(|e| corrupt("execution status", e))?,
        started_at: from_millis(row.try_get("started_at")?),
        duration_ms: row.try_get("duration_ms")?,
        request: RequestRecord {
            target: row.try_get("request_target")?,
            headers: serde_json::from_str(&headers)
                .map_err(|e| corrupt("execution request headers", e))?,
            body: row.try_get("request_body")?,
        },
        response_status: row.try_get("response_status")?,
        response_body: row.try_get("response_body")?,
        response_truncated: row.try_get("response_truncated")?,
        error: row.try_get("error")?,
        next_attempt_at: row
            .try_get::<Option<i64>, _>("next_attempt_at")?
            .map(from_millis),
        data_after: row.try_get("data_after")?,
    })
}

pub(super) async fn activity(
    pool: &SqlitePool,
    since_ms: i64,
    bucket_ms: i64,
) -> StoreResult<Vec<HandlerActivity>> {
    let rows = sqlx::query(
        "SELECT handler_id, (started_at / ?1) * ?1 AS bucket,
                SUM(status = 'success') AS successes, SUM(status = 'fail') AS failures
         FROM executions WHERE started_at >= ?2
         GROUP BY handler_id, bucket ORDER BY handler_id, bucket",
    )
    .bind(bucket_ms.max(1))
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<HandlerActivity> = Vec::new();
    for row in rows {
        let handler_id: i64 = row.try_get("handler_id")?;
        let bucket = (
            row.try_get("bucket")?,
            row.try_get::<i64, _>("successes")? as u64,
            row.try_get::<i64, _>("failures")? as u64,
        );
        match out.last_mut() {
            Some(last) if last.handler_id == handler_id => last.buckets.push(bucket),
            _ => out.push(HandlerActivity {
                handler_id,
                buckets: vec![bucket],
                p95_ms: None,
            }),
        }
    }
    for activity in &mut out {
        let total: u64 = activity.buckets.iter().map(|(_, s, f)| s + f).sum();
        let offset = (total as f64 * 0.95).ceil() as i64 - 1;
        activity.p95_ms = sqlx::query_scalar(
            "SELECT duration_ms FROM executions WHERE handler_id = ? AND started_at >= ?
             ORDER BY duration_ms LIMIT 1 OFFSET ?",
        )
        .bind(activity.handler_id)
        .bind(since_ms)
        .bind(offset.max(0))
        .fetch_optional(pool)
        .await?;
    }
    Ok(out)
}
