//! The recorder: commits attempt results and before-stage executions in
//! batches, then wakes the dispatcher for whatever became due.

use std::sync::Arc;
use std::time::Duration;

use provisio_store::{AttemptResult, DeliveryNext, ExecutionRecord, RecordOutcome, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::shares::Starved;

pub(crate) const QUEUE_DEPTH: usize = 8192;
/// The most items one transaction records.
const BATCH: usize = 1024;

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
    /// retry (its timer must be set again), an ordered successor released,
    /// or freed slots while it is `starved`.
    pub(crate) wake: Arc<Notify>,
    /// Set by the dispatcher while it left due work unclaimed for want of
    /// slots or room, so only finished attempts (anyone's, or a given
    /// handler's) can let it go on.
    pub(crate) starved: Arc<Starved>,
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
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for item in batch.drain(..) {
            match item {
                Recorded::Attempt(a) => attempts.push(a),
                Recorded::Execution(e) => executions.push(e),
            }
        }
        // A finished attempt has given back its slot and its handler's room
        // already: a dispatcher waiting for those need not wait for the
        // commit (which on SQLite may wait for the next emit's).
        let finished = || attempts.iter().map(|a| a.handler_id);
        if !attempts.is_empty() && recorder.starved.eased_by(finished()) {
            recorder.wake.notify_one();
        }
        let moved = recorder.commit(&attempts, &executions).await;
        // A batch of plain successes and final failures makes nothing due:
        // at low rates, waking the dispatcher for it cost a claim and a
        // due-time query that found nothing, for every event.
        let retries = attempts
            .iter()
            .any(|a| matches!(a.next, DeliveryNext::RetryAt { .. }));
        if retries || moved.released > 0 || recorder.starved.eased_by(finished()) {
            recorder.wake.notify_one();
        }
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
