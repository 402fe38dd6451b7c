//! The recorder: commits attempt results and before-stage executions in
//! batches, then wakes the dispatcher for whatever became due.

use std::sync::Arc;
use std::time::Duration;

use provisio_store::{AttemptResult, DeliveryNext, ExecutionRecord, RecordOutcome, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) const QUEUE_DEPTH: usize = 8192;
/// The most items one transaction records.
const BATCH: usize = 1024;

/// After a batch that released nothing, how long results gather before the
/// next batch is recorded; not after a full batch, whose successors are
/// already waiting (a 20-handler fan-out recorded 1,024 results and then
/// slept, while results came at ~15,000 a second). At a few hundred events
/// a second each result came alone, and its execution row and its
/// delivery's new state wrote the same pages as the next one's (the
/// right-hand leaves of the log's table and of its six indexes, and of the
/// deliveries' state indexes), in a commit of their own or an emit's: ~17
/// WAL frames a commit at 200 events/s, each written, checksummed and
/// synced (issue 15). Gathered, a batch shares them. Nothing waits on a
/// plain result: the dispatcher learns of freed slots from the attempt
/// itself, and a batch that released an ordered successor is followed by
/// the next at once, so a line moves at the pace of its receiver. What it
/// costs: the log shows a call and the delivery its new state up to this
/// much later, and a `kill -9` may send again what gathered (as it may what
/// lingers).
const GATHER: Duration = Duration::from_millis(25);

/// Something for the log.
pub(crate) enum Recorded {
    /// An after-stage attempt: its execution row and its delivery's new state.
    Attempt(AttemptResult),
    /// A before-stage call, which belongs to no delivery.
    Execution(ExecutionRecord),
}

/// What the recorder uses.
pub(crate) struct Recorder {
    pub(crate) store: Arc<dyn Store>,
    /// Wakes the dispatcher after a batch that may have made work due: a
    /// retry (its timer must be set again) or an ordered successor released.
    pub(crate) wake: Arc<Notify>,
    /// Once shut down, the recorder gives up on a batch the database keeps
    /// refusing after `drain_timeout`.
    pub(crate) shutdown: CancellationToken,
    pub(crate) drain_timeout: Duration,
}

/// Runs until every sender is gone (the dispatcher has drained and the engine
/// has dropped its own), committing what arrives.
pub(crate) async fn run(recorder: Recorder, mut rx: mpsc::Receiver<Recorded>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut attempts = Vec::with_capacity(BATCH);
    let mut executions = Vec::new();
    let mut gather = false;
    loop {
        if gather && !recorder.shutdown.is_cancelled() {
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = recorder.shutdown.cancelled() => {}
            }
        }
        let received = rx.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            break;
        }
        for item in batch.drain(..) {
            match item {
                Recorded::Attempt(a) => attempts.push(a),
                Recorded::Execution(e) => executions.push(e),
            }
        }
        let moved = recorder.commit(&attempts, &executions).await;
        // A batch of plain successes and final failures makes nothing due:
        // at low rates, waking the dispatcher for it cost a claim and a
        // due-time query that found nothing, for every event. (Freed slots
        // wake it from the attempt, `attempt.rs`.)
        let retries = attempts
            .iter()
            .any(|a| matches!(a.next, DeliveryNext::RetryAt { .. }));
        if retries || moved.released > 0 {
            recorder.wake.notify_one();
        }
        gather = moved.released == 0 && received < BATCH;
        attempts.clear();
        executions.clear();
    }
}

impl Recorder {
    /// Commits one batch, retrying until it lands. Results are never dropped: a
    /// delivery whose success was not recorded would be sent again, and its log
    /// row would be missing. While the database refuses (a full disk, PostgreSQL
    /// restarting), the channel fills and attempts wait to hand in their results,
    /// so the dispatcher stops starting new ones: backpressure, not loss. Only at
    /// shutdown, once the drain timeout has passed, does it give up; the leases
    /// then bring those deliveries back after the restart, logged as interrupted.
    async fn commit(
        &self,
        attempts: &[AttemptResult],
        executions: &[ExecutionRecord],
    ) -> RecordOutcome {
        let mut delay = Duration::from_millis(100);
        let mut failed_since = None;
        loop {
            let started = std::time::Instant::now();
            let err = match self.store.record(attempts, executions).await {
                Ok(moved) => {
                    metrics::histogram!("provisio_record_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("provisio_record_batch_size")
                        .record((attempts.len() + executions.len()) as f64);
                    count_superseded(moved.superseded);
                    if failed_since.is_some() {
                        tracing::info!(
                            attempts = attempts.len(),
                            "recorded results after the database came back"
                        );
                    }
                    return moved;
                }
                Err(err) => err,
            };
            let since = *failed_since.get_or_insert_with(tokio::time::Instant::now);
            if self.shutdown.is_cancelled() && since.elapsed() > self.drain_timeout {
                tracing::error!(error = %err, attempts = attempts.len(), "shutting down with results unrecorded; their deliveries will be sent again");
                return RecordOutcome::default();
            }
            tracing::error!(error = %err, attempts = attempts.len(), "could not record results; keeping them and retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Counts deliveries conflated away (by a finished delivery's release, a
/// skip, or a handler's backlog conflated at once).
pub(crate) fn count_superseded(n: u64) {
    if n > 0 {
        metrics::counter!("provisio_deliveries_superseded_total").increment(n);
    }
}
