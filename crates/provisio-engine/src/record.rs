//! The recorder: commits attempt results and before-stage executions in
//! batches, then wakes the dispatcher for whatever became due.

use std::time::Duration;

use provisio_store::{AttemptResult, ExecutionRecord};
use tokio::sync::mpsc;

use crate::Engine;

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

/// Runs until every sender is gone (the dispatcher has drained and the engine
/// has dropped its own), committing what arrives.
pub(crate) async fn run(engine: Engine, mut rx: mpsc::Receiver<Recorded>) {
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
        let mut tries = 0;
        loop {
            match engine.0.store.record(&attempts, &executions).await {
                Ok(_) => break,
                Err(err) if tries < 10 => {
                    tries += 1;
                    tracing::error!(error = %err, attempts = attempts.len(), "could not record results; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(err) => {
                    // The deliveries stay leased; when the leases lapse they are
                    // attempted again (at-least-once), so no delivery is lost.
                    tracing::error!(error = %err, attempts = attempts.len(), "giving up recording results");
                    break;
                }
            }
        }
        attempts.clear();
        executions.clear();
        engine.0.wake.notify_one();
    }
}
