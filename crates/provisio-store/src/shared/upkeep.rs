//! Queue statistics and retention.

use sqlx::QueryBuilder;

use super::{Bind, Dialect, SqlCore};
use crate::query::{finished_states, open_states};
use crate::rows::Columns;
use crate::{IDEMPOTENCY_WINDOW_MS, QueueStats, StoreResult, now_ms};

impl<DB: Dialect> SqlCore<DB> {
    /// A cheap round trip, for `/readyz`.
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        QueryBuilder::<DB>::new("SELECT 1")
            .build()
            .execute(self.reader())
            .await?;
        Ok(())
    }

    pub(crate) async fn queue_stats(&self) -> StoreResult<QueueStats> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT COUNT(*) AS unfinished, MIN(created_at) AS oldest FROM deliveries WHERE ",
        );
        let row = q
            .push(open_states!("state"))
            .build()
            .fetch_one(self.reader())
            .await?;
        Ok(QueueStats {
            unfinished: row.int("unfinished")? as u64,
            oldest_created_ms: row.opt_int("oldest")?,
        })
    }

    /// Deletes up to `batch` rows of each kind older than `before_ms`, in one
    /// transaction, so the writer is never held for long.
    pub(crate) async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        DB::write_tx(&self.write, async |tx| {
            let limit = i64::from(batch);
            let mut removed = 0;
            let mut q = QueryBuilder::<DB>::new(
                "DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE started_at < ",
            );
            q.bind(before_ms)
                .push(" ORDER BY started_at LIMIT ")
                .bind(limit)
                .push(")");
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            // Only finished rows are touched; on PostgreSQL, rows another
            // node is pruning are skipped rather than waited for.
            let mut q = QueryBuilder::<DB>::new(
                "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries
                 WHERE ",
            );
            q.push(finished_states!("state"))
                .push(" AND finished_at < ")
                .bind(before_ms)
                .push(" ORDER BY finished_at LIMIT ")
                .bind(limit)
                .push(DB::SKIP_LOCKED)
                .push(")");
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            // A replay job goes once retention has taken all its deliveries.
            let mut q = QueryBuilder::<DB>::new(
                "DELETE FROM replays WHERE id IN (SELECT r.id FROM replays r WHERE r.created_at < ",
            );
            q.bind(before_ms)
                .push(
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.replay_id = r.id)
                     ORDER BY r.created_at LIMIT ",
                )
                .bind(limit)
                .push(")");
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            // Event ids are ULIDs, so "older than" is a range of the primary
            // key (in byte order, whatever the database's collation).
            let oldest_kept = ulid::Ulid::from_parts(before_ms.max(0) as u64, 0).to_string();
            let mut q = QueryBuilder::<DB>::new(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id",
            );
            q.push(DB::BYTE_ORDER)
                .push(" < ")
                .bind(oldest_kept)
                .push(
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                     ORDER BY e.id",
                )
                .push(DB::BYTE_ORDER)
                .push(" LIMIT ")
                .bind(limit)
                .push(")");
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            let now = now_ms();
            let mut q = QueryBuilder::<DB>::new("DELETE FROM idempotency_keys WHERE created_at < ");
            q.bind(now - IDEMPOTENCY_WINDOW_MS);
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            let mut q = QueryBuilder::<DB>::new("DELETE FROM web_sessions WHERE expires_at < ");
            q.bind(now);
            removed += DB::rows_affected(&q.build().execute(DB::on(&mut *tx)).await?);
            Ok(removed)
        })
        .await
    }
}
