//! The event type catalog.

use provisio_core::catalog::EventType;
use sqlx::sqlite::SqlitePool;

use super::{conflict_on_unique, now_ms};
use crate::StoreResult;

pub(super) async fn seed(pool: &SqlitePool, types: &[EventType]) -> StoreResult<()> {
    super::write_tx(pool, super::Durability::Normal, async |tx| {
        let now = now_ms();
        for t in types {
            sqlx::query(
            "INSERT INTO event_types (id, group_name, description, empty_data, builtin, created_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.group)
        .bind(&t.description)
        .bind(t.empty_data)
        .bind(t.builtin)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        }
        Ok(())
    })
    .await
}

pub(super) async fn list(pool: &SqlitePool) -> StoreResult<Vec<EventType>> {
    let rows = sqlx::query(
        "SELECT id, group_name, description, empty_data, builtin FROM event_types
         ORDER BY builtin DESC, created_at, id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(crate::rows::event_type).collect()
}

pub(super) async fn insert(pool: &SqlitePool, t: &EventType) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_types (id, group_name, description, empty_data, builtin, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
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
