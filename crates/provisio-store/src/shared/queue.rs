//! The delivery queue's reads, and settling interrupted attempts. Emits,
//! claims and records differ per backend (see each backend's
//! `queue.rs`).

use provisio_core::catalog::EventPattern;
use provisio_core::event::Event;
use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::query::{ROWS_PER_STATEMENT, log_interrupted, settle_leases};
use crate::rows::{
    Columns, DELIVERY_COLUMNS, corrupt, delivery as delivery_from_row, event as event_from_row,
};
use crate::{DeliveryRecord, FilteredOut, StoreResult};

impl<DB: Dialect> SqlCore<DB> {
    /// From the writer's pool, which has just committed the work it asks
    /// about. A paused handler's deliveries are left out: they are not due
    /// until it resumes, and a past due time of theirs would hide a running
    /// handler's next retry from the dispatcher's timer.
    pub(crate) async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        // One index seek per running handler: filtering the paused ones out
        // of one walk of a due index of all handlers (dropped since, 0015)
        // stepped over every row of a paused handler's backlog, older than
        // any new delivery, on every wake of the dispatcher.
        let mut q = QueryBuilder::<DB>::new(DB::NEXT_DUE);
        q.build()
            .fetch_one(DB::on(&mut *self.writer().await?))
            .await?
            .opt_int("due")
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

    pub(crate) async fn get_delivery(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        let mut q = QueryBuilder::<DB>::new("SELECT ");
        q.push(DELIVERY_COLUMNS)
            .push(" FROM deliveries WHERE id = ")
            .bind(id.to_owned());
        let row = q.build().fetch_optional(self.reader()).await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// The line's waiting deliveries (a seek of `deliveries_open`, in `seq`
    /// order).
    pub(crate) async fn waiting_behind(
        &self,
        delivery_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut q = QueryBuilder::<DB>::new("SELECT ");
        q.push(DELIVERY_COLUMNS)
            .push(
                " FROM deliveries WHERE state = 'waiting'
                  AND handler_id = (SELECT handler_id FROM deliveries WHERE id = ",
            )
            .bind(delivery_id.to_owned())
            .push(") AND object_key = (SELECT object_key FROM deliveries WHERE id = ")
            .bind(delivery_id.to_owned())
            .push(") ORDER BY seq LIMIT ")
            .bind(i64::from(limit));
        q.build()
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    /// Event ids are ULIDs: their order is emit order, and the primary key
    /// walks it backwards.
    pub(crate) async fn recent_events(
        &self,
        pattern: &EventPattern,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT id AS event_id, events_id, object_id, dt, data FROM events",
        );
        match pattern {
            EventPattern::All => {}
            EventPattern::Exact(id) => {
                q.push(" WHERE events_id = ").bind(id.clone());
            }
            EventPattern::Prefix(prefix) => {
                q.push(" WHERE substr(events_id, 1, ")
                    .bind(prefix.len() as i64)
                    .push(") = ")
                    .bind(prefix.clone());
            }
        }
        q.push(" ORDER BY id DESC LIMIT ").bind(i64::from(limit));
        q.build()
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    pub(crate) async fn filtered_out(&self, event_id: &str) -> StoreResult<Vec<FilteredOut>> {
        let mut q = QueryBuilder::<DB>::new("SELECT filtered_out FROM events WHERE id = ");
        q.bind(event_id.to_owned());
        let Some(row) = q.build().fetch_optional(self.reader()).await? else {
            return Ok(Vec::new());
        };
        match row.opt_text("filtered_out")? {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str(&json).map_err(|e| corrupt("event filtered_out", e)),
        }
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
