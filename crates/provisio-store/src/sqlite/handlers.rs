//! Handlers.

use provisio_core::handler::{Handler, HandlerSpec};
use provisio_core::signing::SigningSecret;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite};

use super::now_ms;
use crate::query::push_handler_filter;
use crate::rows::{HANDLER_SELECT as SELECT, handler as from_row, json};
use crate::{HandlerFilter, Page, StoreError, StoreResult};

pub(super) async fn insert(pool: &SqlitePool, spec: &HandlerSpec) -> StoreResult<Handler> {
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO handlers (name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&spec.name)
    .bind(spec.events_id.to_string())
    .bind(spec.stage.as_str())
    .bind(spec.status.as_str())
    .bind(spec.priority)
    .bind(spec.kind.as_str())
    .bind(&spec.target)
    .bind(json(&spec.args))
    .bind(json(&spec.headers))
    .bind(spec.timeout_ms)
    .bind(spec.max_attempts)
    .bind(spec.ordered)
    .bind(spec.on_failure.as_str())
    .bind(SigningSecret::generate().expose())
    .bind(now)
    .bind(now)
    .fetch_one(pool)
    .await?;
    get(pool, id).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn get(pool: &SqlitePool, id: i64) -> StoreResult<Option<Handler>> {
    let mut q = QueryBuilder::<Sqlite>::new(SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn update(pool: &SqlitePool, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
    let done = sqlx::query(
        "UPDATE handlers SET name = ?, events_id = ?, stage = ?, status = ?, priority = ?, kind = ?,
            target = ?, args = ?, headers = ?, timeout_ms = ?, max_attempts = ?, ordered = ?,
            on_failure = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(&spec.name)
    .bind(spec.events_id.to_string())
    .bind(spec.stage.as_str())
    .bind(spec.status.as_str())
    .bind(spec.priority)
    .bind(spec.kind.as_str())
    .bind(&spec.target)
    .bind(json(&spec.args))
    .bind(json(&spec.headers))
    .bind(spec.timeout_ms)
    .bind(spec.max_attempts)
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

pub(super) async fn rotate_secret(pool: &SqlitePool, id: i64) -> StoreResult<Handler> {
    let done = sqlx::query("UPDATE handlers SET secret = ?, updated_at = ? WHERE id = ?")
        .bind(SigningSecret::generate().expose())
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    get(pool, id).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn delete(pool: &SqlitePool, id: i64) -> StoreResult<bool> {
    super::write_tx(pool, super::Durability::Normal, async |tx| {
        let now = now_ms();
        let done = sqlx::query("DELETE FROM handlers WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', finished_at = ?, next_attempt_at = NULL,
            lease_until = NULL, last_error = 'the handler was deleted'
         WHERE handler_id = ? AND state IN ('pending', 'waiting')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        Ok(done.rows_affected() > 0)
    })
    .await
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &HandlerFilter,
    page: Page,
) -> StoreResult<(Vec<Handler>, u64)> {
    let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM handlers");
    push_handler_filter(&mut count, filter, "LIKE");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Sqlite>::new(SELECT);
    push_handler_filter(&mut q, filter, "LIKE");
    q.push(" ORDER BY priority, id LIMIT ")
        .push_bind(i64::from(page.per_page))
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = q.build().fetch_all(pool).await?;
    let handlers = rows.iter().map(from_row).collect::<StoreResult<_>>()?;
    Ok((handlers, total as u64))
}

pub(super) async fn all(pool: &SqlitePool) -> StoreResult<Vec<Handler>> {
    let mut q = QueryBuilder::<Sqlite>::new(SELECT);
    q.push(" ORDER BY priority, id");
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}
