//! Handlers. Every write fires the `provisio_routes` trigger, so all nodes
//! reload their routing tables when it commits.

use provisio_core::handler::{Handler, HandlerSpec};
use provisio_core::signing::SigningSecret;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder};

use super::now_ms;
use crate::rows::{HANDLER_SELECT, handler as from_row, json, like_pattern};
use crate::{HandlerFilter, Page, StoreError, StoreResult};

pub(super) async fn insert(pool: &PgPool, spec: &HandlerSpec) -> StoreResult<Handler> {
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO handlers (name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING id",
    )
    .bind(&spec.name)
    .bind(spec.events_id.to_string())
    .bind(spec.stage.as_str())
    .bind(spec.status.as_str())
    .bind(i64::from(spec.priority))
    .bind(spec.kind.as_str())
    .bind(&spec.target)
    .bind(json(&spec.args))
    .bind(json(&spec.headers))
    .bind(i64::from(spec.timeout_ms))
    .bind(i64::from(spec.max_attempts))
    .bind(spec.ordered)
    .bind(spec.on_failure.as_str())
    .bind(SigningSecret::generate().expose())
    .bind(now)
    .fetch_one(pool)
    .await?;
    get(pool, id).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn get(pool: &PgPool, id: i64) -> StoreResult<Option<Handler>> {
    let mut q = QueryBuilder::<Postgres>::new(HANDLER_SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn update(pool: &PgPool, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
    let done = sqlx::query(
        "UPDATE handlers SET name = $1, events_id = $2, stage = $3, status = $4, priority = $5,
            kind = $6, target = $7, args = $8, headers = $9, timeout_ms = $10, max_attempts = $11,
            ordered = $12, on_failure = $13, updated_at = $14
         WHERE id = $15",
    )
    .bind(&spec.name)
    .bind(spec.events_id.to_string())
    .bind(spec.stage.as_str())
    .bind(spec.status.as_str())
    .bind(i64::from(spec.priority))
    .bind(spec.kind.as_str())
    .bind(&spec.target)
    .bind(json(&spec.args))
    .bind(json(&spec.headers))
    .bind(i64::from(spec.timeout_ms))
    .bind(i64::from(spec.max_attempts))
    .bind(spec.ordered)
    .bind(spec.on_failure.as_str())
    .bind(now_ms())
    .bind(id)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    get(pool, id).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn rotate_secret(pool: &PgPool, id: i64) -> StoreResult<Handler> {
    let row = sqlx::query(
        "UPDATE handlers SET secret = $1, updated_at = $2 WHERE id = $3
         RETURNING id, name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at",
    )
    .bind(SigningSecret::generate().expose())
    .bind(now_ms())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or(StoreError::NotFound)
}

pub(super) async fn delete(pool: &PgPool, id: i64) -> StoreResult<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("DELETE FROM handlers WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Nothing would ever send them. No ordering lock is needed: this closes
    // every queue of the handler at once and opens none.
    sqlx::query(
        "UPDATE deliveries SET state = 'failed', finished_at = $1, next_attempt_at = NULL,
            lease_until = NULL, last_error = 'the handler was deleted'
         WHERE handler_id = $2 AND state IN ('pending', 'waiting')",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn list(
    pool: &PgPool,
    filter: &HandlerFilter,
    page: Page,
) -> StoreResult<(Vec<Handler>, u64)> {
    let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM handlers");
    push_where(&mut count, filter);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Postgres>::new(HANDLER_SELECT);
    push_where(&mut q, filter);
    q.push(" ORDER BY priority, id LIMIT ")
        .push_bind(i64::from(page.per_page))
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = q.build().fetch_all(pool).await?;
    let found = rows.iter().map(from_row).collect::<StoreResult<_>>()?;
    Ok((found, total as u64))
}

pub(super) async fn all(pool: &PgPool) -> StoreResult<Vec<Handler>> {
    sqlx::query(concat!(
        "SELECT id, name, events_id, stage, status, priority, kind, target, args, headers, ",
        "timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at ",
        "FROM handlers ORDER BY priority, id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

fn push_where(q: &mut QueryBuilder<Postgres>, f: &HandlerFilter) {
    q.push(" WHERE TRUE");
    if let Some(events_id) = &f.events_id {
        // The handler's own pattern, or a pattern that fires for this type:
        // `*`, or `prefix.*` where the type starts with `prefix.`.
        q.push(" AND (events_id = ")
            .push_bind(events_id.clone())
            .push(" OR events_id = '*' OR (right(events_id, 2) = '.*' AND starts_with(")
            .push_bind(events_id.clone())
            .push(", left(events_id, -1))))");
    }
    if let Some(kind) = f.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    match f.status {
        Some(status) => {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        None if !f.include_archived => {
            q.push(" AND status <> 'archived'");
        }
        None => {}
    }
    if let Some(stage) = f.stage {
        q.push(" AND stage = ").push_bind(stage.as_str());
    }
    if let Some(text) = f.q.as_deref().filter(|t| !t.is_empty()) {
        // ILIKE: SQLite's LIKE is case-insensitive, and the filter is too.
        q.push(" AND name ILIKE ")
            .push_bind(like_pattern(text))
            .push(" ESCAPE '\\'");
    }
}
