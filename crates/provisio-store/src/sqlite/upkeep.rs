//! The overview's p95 durations on SQLite, which has no percentile function:
//! each handler's p95 is read by offset, one query per handler.

use super::SqliteStore;
use crate::{HandlerActivity, StoreResult};

pub(super) async fn add_p95(
    store: &SqliteStore,
    since_ms: i64,
    activity: &mut [HandlerActivity],
) -> StoreResult<()> {
    for a in activity {
        let total: u64 = a.buckets.iter().map(|(_, s, f)| s + f).sum();
        let offset = (total as f64 * 0.95).ceil() as i64 - 1;
        a.p95_ms = sqlx::query_scalar(
            "SELECT duration_ms FROM executions WHERE handler_id = ? AND started_at >= ?
             ORDER BY duration_ms LIMIT 1 OFFSET ?",
        )
        .bind(a.handler_id)
        .bind(since_ms)
        .bind(offset.max(0))
        .fetch_optional(&store.core.read)
        .await?;
    }
    Ok(())
}
