//! The overview's p95 durations on PostgreSQL: `percentile_disc`, one query
//! for every handler at once.

use sqlx::Row;

use super::PgStore;
use crate::{HandlerActivity, StoreResult};

pub(super) async fn add_p95(
    store: &PgStore,
    since_ms: i64,
    activity: &mut [HandlerActivity],
) -> StoreResult<()> {
    let p95s = sqlx::query(
        "SELECT handler_id, percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95
         FROM executions WHERE started_at >= $1 GROUP BY handler_id",
    )
    .bind(since_ms)
    .fetch_all(&store.core.read)
    .await?;
    for row in p95s {
        let handler_id: i64 = row.try_get("handler_id")?;
        let p95: Option<i64> = row.try_get("p95")?;
        if let Some(a) = activity.iter_mut().find(|a| a.handler_id == handler_id) {
            a.p95_ms = p95.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32);
        }
    }
    Ok(())
}
