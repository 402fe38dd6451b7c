//! The event type catalog. Every write fires the `provisio_routes` trigger,
//! so all nodes reload their routing tables.

use provisio_core::catalog::EventType;
use sqlx::postgres::PgPool;

use super::{conflict_on_unique, now_ms};
use crate::StoreResult;

/// One statement for the whole list; nodes starting together both succeed
/// (`ON CONFLICT DO NOTHING`).
pub(super) async fn seed(pool: &PgPool, types: &[EventType]) -> StoreResult<()> {
    let column = |f: fn(&EventType) -> String| types.iter().map(f).collect::<Vec<_>>();
    let flags = |f: fn(&EventType) -> bool| types.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO event_types (id, group_name, description, empty_data, builtin, created_at)
         SELECT id, group_name, description, empty_data, builtin, $6
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[])
              AS v(id, group_name, description, empty_data, builtin)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(column(|t| t.id.clone()))
    .bind(column(|t| t.group.clone()))
    .bind(column(|t| t.description.clone()))
    .bind(flags(|t| t.empty_data))
    .bind(flags(|t| t.builtin))
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn list(pool: &PgPool) -> StoreResult<Vec<EventType>> {
    sqlx::query(
        "SELECT id, group_name, description, empty_data, builtin FROM event_types
         ORDER BY builtin DESC, created_at, id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(crate::rows::event_type)
    .collect()
}

pub(super) async fn insert(pool: &PgPool, t: &EventType) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_types (id, group_name, description, empty_data, builtin, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&t.id)
    .bind(&t.group)
    .bind(&t.description)
    .bind(t.empty_data)
    .bind(t.builtin)
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(|e| conflict_on_unique(e, || format!("event type {} exists", t.id)))?;
    Ok(())
}
