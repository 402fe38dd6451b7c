//! The delivery queue's reads, and settling interrupted attempts. Emits,
//! claims, records and redelivers differ per backend (see each backend's
//! `queue.rs`).

use provisio_core::event::Event;
use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::query::{ROWS_PER_STATEMENT, log_interrupted, settle_leases};
use crate::rows::{
    Columns, DELIVERY_COLUMNS, delivery as delivery_from_row, event as event_from_row,
};
use crate::{DeliveryRecord, StoreResult};

impl<DB: Dialect> SqlCore<DB> {
    /// From the writer's pool, which has just committed the work it asks
    /// about. A paused handler's deliveries are left out: they are not due
    /// until it resumes, and a past due time of theirs would hide a running
    /// handler's next retry from the dispatcher's timer.
    pub(crate) async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE state = 'pending'
             AND handler_id NOT IN (SELECT id FROM handlers WHERE paused_reason IS NOT NULL)",
        );
        q.build().fetch_one(self.writer()).await?.opt_int("due")
    }

    pub(crate) async fn get_event(
        &self,
        id: &str,
    ) -> StoreResult<Option<(Event, Vec<DeliveryRecord>)>> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT id AS event_id, events_id, object_id, dt, data FROM events WHERE id = ",
        );
        q.bind(id.to_owned());
        let Some(row) = q.build().fetch_optional(self.reader()).await? else {
            return Ok(None);
        };
        let event = event_from_row(&row)?;
        let mut q = QueryBuilder::<DB>::new("SELECT ");
        q.push(DELIVERY_COLUMNS)
            .push(" FROM deliveries WHERE event_id = ")
            .bind(id.to_owned())
            .push(" ORDER BY seq");
        let rows = q.build().fetch_all(self.reader()).await?;
        let deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<StoreResult<_>>()?;
        Ok(Some((event, deliveries)))
    }

    /// Two PostgreSQL nodes settling at once cannot both settle a delivery:
    /// the second UPDATE waits on the first's row lock, then sees the lease
    /// gone.
    pub(crate) async fn settle_interrupted(
        &self,
        now: i64,
        ending_before: i64,
    ) -> StoreResult<u64> {
        DB::write_tx(&self.write, async |tx| {
            let seqs = settle_leases::<DB>(now, ending_before)
                .build()
                .fetch_all(DB::on(&mut *tx))
                .await?
                .iter()
                .map(|row| row.int("seq"))
                .collect::<StoreResult<Vec<_>>>()?;
            for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
                log_interrupted::<DB>(now, chunk)
                    .build()
                    .execute(DB::on(&mut *tx))
                    .await?;
            }
            Ok(seqs.len() as u64)
        })
        .await
    }
}
