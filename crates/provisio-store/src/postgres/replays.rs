//! Replay jobs: queueing and cancelling them under the (handler, object)
//! line locks an emit takes (see `queue.rs`), since both join and close
//! lines other nodes may be writing.

use sqlx::Postgres;

use super::queue::{lock_keys, queue_key};
use super::{PgStore, notify_work};
use crate::shared::{SqlCore, transaction};
use crate::*;

/// Queueing a replay joins (handler, object) queues, so it takes their
/// locks first, like an emit: it reads which objects it would queue for,
/// locks them, and then queues only for those (an object whose first event
/// was stored in between is left out: that event reached the handler by its
/// own emit, or was stored after the job began).
pub(super) async fn start_replay(store: &PgStore, job: &NewReplay) -> StoreResult<ReplayRecord> {
    let record = transaction(&store.core.write, None, async |tx| {
        let keys = SqlCore::<Postgres>::replay_object_keys_in(tx, job).await?;
        lock_keys(
            tx,
            keys.iter().map(|k| queue_key(job.handler_id, k)).collect(),
        )
        .await?;
        let record = SqlCore::<Postgres>::start_replay_in(tx, job, |q| {
            q.push(" AND m.object_key = ANY(").push_bind(keys).push(")");
        })
        .await?;
        if record.queued > 0 {
            notify_work(tx).await?;
        }
        Ok(record)
    })
    .await?;
    if record.queued >= ANALYZE_AFTER {
        // Thousands of `waiting` rows at once make the planner's statistics
        // stale (autovacuum looks a minute later at best): it then releases
        // each object's next delivery by scanning every waiting row, and the
        // replay crawls at a quarter of its speed (measured: ~800 against
        // ~3,300 deliveries/s for 20,000). Fresh statistics restore the index
        // lookups. The job is committed: a failed ANALYZE only costs speed.
        let _ = sqlx::query("ANALYZE deliveries")
            .execute(&store.core.write)
            .await;
    }
    Ok(record)
}

/// A replay that queues this many deliveries refreshes the planner's
/// statistics of `deliveries`.
const ANALYZE_AFTER: u64 = 1_000;

/// A cancel closes and reopens (handler, object) queues: under their locks.
pub(super) async fn cancel_replay(
    store: &PgStore,
    id: &str,
    now: i64,
) -> StoreResult<(ReplayRecord, u64)> {
    transaction(&store.core.write, None, async |tx| {
        let (handler_id, keys) = SqlCore::<Postgres>::replay_open_keys_in(tx, id).await?;
        lock_keys(tx, keys.iter().map(|k| queue_key(handler_id, k)).collect()).await?;
        let (record, released) =
            SqlCore::<Postgres>::cancel_replay_in(tx, id, handler_id, now).await?;
        if released > 0 {
            notify_work(tx).await?;
        }
        Ok((record, released))
    })
    .await
}
