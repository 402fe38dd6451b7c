//! Handlers. Every write fires the `provisio_routes` trigger, so all nodes
//! reload their routing tables when it commits.

use provisio_core::handler::{Handler, HandlerSpec};
use provisio_core::signing::SigningSecret;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder};

use super::now_ms;
use crate::query::push_handler_filter;
use crate::rows::{HANDLER_SELECT, handler as from_row, json};
use crate::{HandlerFilter, Page, StoreError, StoreResult};

/// The query with the spec's fields bound as `$1` to `$13`, in column order.
fn bind_spec<'q>(query: PgQuery<'q>, spec: &HandlerSpec) -> PgQuery<'q> {
    query
        .bind(spec.name.clone())
        .bind(spec.events_id.to_string())
        .bind(spec.stage.as_str())
        .bind(spec.status.as_str())
        .bind(i64::from(spec.priority))
        .bind(spec.kind.as_str())
        .bind(spec.target.clone())
        .bind(json(&spec.args))
        .bind(json(&spec.headers))
        .bind(i64::from(spec.timeout_ms))
        .bind(i64::from(spec.max_attempts))
        .bind(spec.ordered)
        .bind(spec.on_failure.as_str())
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

pub(super) async fn insert(pool: &PgPool, spec: &HandlerSpec) -> StoreResult<Handler> {
    let query = sqlx::query(
        "INSERT INTO handlers (name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
         RETURNING id, name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at",
    );
    let row = bind_spec(query, spec)
        .bind(SigningSecret::generate().expose().to_owned())
        .bind(now_ms())
        .fetch_one(pool)
        .await?;
    from_row(&row)
}

pub(super) async fn get(pool: &PgPool, id: i64) -> StoreResult<Option<Handler>> {
    let mut q = QueryBuilder::<Postgres>::new(HANDLER_SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn update(pool: &PgPool, id: i64, spec: &HandlerSpec) -> StoreResult<Handler> {
    let query = sqlx::query(
        "UPDATE handlers SET name = $1, events_id = $2, stage = $3, status = $4, priority = $5,
            kind = $6, target = $7, args = $8, headers = $9, timeout_ms = $10, max_attempts = $11,
            ordered = $12, on_failure = $13, updated_at = $14
         WHERE id = $15
         RETURNING id, name, events_id, stage, status, priority, kind, target, args, headers,
            timeout_ms, max_attempts, ordered, on_failure, secret, created_at, updated_at",
    );
    let row = bind_spec(query, spec)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or(StoreError::NotFound)
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
    push_handler_filter(&mut count, filter, "ILIKE");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Postgres>::new(HANDLER_SELECT);
    push_handler_filter(&mut q, filter, "ILIKE");
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
