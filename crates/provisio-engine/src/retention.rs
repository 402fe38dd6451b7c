//! Retention: a background task that deletes old history (executions, finished
//! deliveries, their events) in small batches, so disk use stays bounded and no
//! single transaction holds the writer for long. Unfinished work is never pruned.

use std::sync::Arc;
use std::time::Duration;

use provisio_store::Store;
use tokio_util::sync::CancellationToken;

use crate::Clock;

/// Rows of each kind per transaction: small enough that emits committed
/// between two batches are never held up noticeably.
const BATCH: u32 = 1000;

/// What retention uses.
pub(crate) struct Retention {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Clock,
    /// History older than this is deleted.
    pub(crate) keep: Duration,
    /// How long it sleeps between runs.
    pub(crate) every: Duration,
    pub(crate) shutdown: CancellationToken,
}

pub(crate) async fn run(retention: Retention) {
    let Retention {
        store,
        clock,
        keep,
        every,
        shutdown,
    } = retention;
    loop {
        let before = clock.now_ms() - keep.as_millis() as i64;
        let mut total = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match store.prune(before, BATCH).await {
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
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// How often retention runs by default.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(600);
