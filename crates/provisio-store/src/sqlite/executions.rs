//! The execution log: one row per call to a handler.

use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::query::{ROWS_PER_STATEMENT, insert_executions, push_execution_filter};
use crate::rows::{self, EXECUTION_SELECT};
use crate::*;

/// Inserts execution rows with one statement per thousand rows.
pub(super) async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[&ExecutionRecord],
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        insert_executions::<Sqlite>(chunk)
            .build()
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &ExecutionFilter,
    page: Page,
) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
    let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM executions");
    push_execution_filter(&mut count, filter, "LIKE");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Sqlite>::new(EXECUTION_SELECT);
    push_execution_filter(&mut q, filter, "LIKE");
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.per_page))
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = q.build().fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(rows::execution)
        .collect::<StoreResult<_>>()?;
    Ok((items, total as u64))
}

pub(super) async fn get(pool: &SqlitePool, id: i64) -> StoreResult<Option<ExecutionRecord>> {
    let mut q = QueryBuilder::<Sqlite>::new(EXECUTION_SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(rows::execution).transpose()
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
    let mut out = rows::activity(&rows)?;
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
