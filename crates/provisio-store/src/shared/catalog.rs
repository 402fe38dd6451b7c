//! The event type catalog. On PostgreSQL every write fires the
//! `provisio_routes` trigger, so all nodes reload their routing tables.

use provisio_core::catalog::EventType;
use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::query::ROWS_PER_STATEMENT;
use crate::{StoreResult, conflict_on_unique, now_ms};

impl<DB: Dialect> SqlCore<DB> {
    /// One statement per thousand types; nodes starting together both
    /// succeed. A type that exists keeps its row, but a built-in one takes
    /// this release's example (written only when it differs, since every
    /// write to the catalog makes the other nodes reload).
    pub(crate) async fn seed_event_types(&self, types: &[EventType]) -> StoreResult<()> {
        DB::write_tx(&self.write, async |tx| {
            let now = now_ms();
            for chunk in types.chunks(ROWS_PER_STATEMENT) {
                let mut q = insert(chunk, now);
                q.push(
                    " ON CONFLICT (id) DO UPDATE SET example = excluded.example
                      WHERE event_types.builtin
                        AND event_types.example IS DISTINCT FROM excluded.example",
                );
                q.build().execute(DB::on(&mut *tx)).await?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        QueryBuilder::<DB>::new(
            "SELECT id, group_name, description, empty_data, builtin, example FROM event_types
             ORDER BY builtin DESC, created_at, id",
        )
        .build()
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(crate::rows::event_type)
        .collect()
    }

    pub(crate) async fn insert_event_type(&self, t: &EventType) -> StoreResult<()> {
        insert(std::slice::from_ref(t), now_ms())
            .build()
            .execute(DB::on(&mut *self.writer().await?))
            .await
            .map_err(|e| conflict_on_unique(e, || format!("event type {} exists", t.id)))?;
        Ok(())
    }
}

fn insert<DB: Dialect>(types: &[EventType], now: i64) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new(
        "INSERT INTO event_types (id, group_name, description, empty_data, builtin, example, created_at) ",
    );
    q.push_values(types, |mut row, t| {
        row.bind(t.id.clone())
            .bind(t.group.clone())
            .bind(t.description.clone())
            .bind(t.empty_data)
            .bind(t.builtin)
            .bind(t.example.clone())
            .bind(now);
    });
    q
}
