//! The execution log: one row per call to a handler.

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::query::{ROWS_PER_STATEMENT, insert_executions, push_execution_filter};
use crate::rows::{self, EXECUTION_SELECT};
use crate::*;

pub(super) async fn insert_many(
    conn: &mut PgConnection,
    rows: &[&ExecutionRecord],
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        insert_executions::<Postgres>(chunk)
            .build()
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn list(
    pool: &PgPool,
    filter: &ExecutionFilter,
    page: Page,
) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
    let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM executions");
    push_execution_filter(&mut count, filter, "ILIKE");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut q = QueryBuilder::<Postgres>::new(EXECUTION_SELECT);
    push_execution_filter(&mut q, filter, "ILIKE");
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.per_page))
        .push(" OFFSET ")
        .push_bind(page.offset());
    let found = q.build().fetch_all(pool).await?;
    let items = found
        .iter()
        .map(rows::execution)
        .collect::<StoreResult<_>>()?;
    Ok((items, total as u64))
}

pub(super) async fn get(pool: &PgPool, id: i64) -> StoreResult<Option<ExecutionRecord>> {
    let mut q = QueryBuilder::<Postgres>::new(EXECUTION_SELECT);
    q.push(" WHERE id = ").push_bind(id);
    let row = q.build().fetch_optional(pool).await?;
    row.as_ref().map(rows::execution).transpose()
}
