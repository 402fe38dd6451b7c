//! Retention: a background task that deletes old history (executions, finished
//! deliveries, their events) in small batches, so disk use stays bounded and no
//! single transaction holds the writer for long. Unfinished work is never pruned.

use std::time::Duration;

use crate::Engine;

/// Rows of each kind per transaction: small enough that emits committed
/// between two batches are never held up noticeably.
const BATCH: u32 = 1000;

pub(crate) async fn run(engine: Engine) {
    let shared = &engine.0;
    let Some(keep) = shared.config.retention else {
        return;
    };
    loop {
        let before = shared.config.clock.now_ms() - keep.as_millis() as i64;
        let mut total = 0;
        loop {
            if shared.shutdown.is_cancelled() {
                return;
            }
            match shared.store.prune(before, BATCH).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(err) => {
                    tracing::warn!(error = %err, "pruning old history failed; trying again later");
                    break;
                }
            }
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(
                rows = total,
                "pruned history older than the retention period"
            );
            metrics::counter!("provisio_pruned_rows_total").increment(total);
        }
        tokio::select! {
            () = tokio::time::sleep(shared.config.prune_every) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// How often retention runs by default.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(600);
