//! One attempt task: calls the handler for a claimed delivery, decides what
//! the outcome means for it (done, retried when, failed or blocked), tells
//! the breaker, frees its slot and hands the result to the recorder.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use provisio_core::handler::{Handler, HandlerKind, Stage, Status};
use provisio_core::retry::RetrySchedule;
use provisio_core::timefmt::{from_millis, to_millis};
use provisio_store::{AttemptResult, ClaimedDelivery, DeliveryNext};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::breaker::{Signal, Streaks};
use crate::executor::Executors;
use crate::outcome::{CallContext, CallOutcome, LoggedCall};
use crate::record::Recorded;
use crate::shares::{InFlight, Starved};

/// What an attempt that ended at `finished_at_ms` means for its delivery:
/// done, given up once its `round`-th attempt used up `max_attempts` or
/// failed for good (failed, or blocked when `blocks` says the handler holds the object's line), or due
/// again after the schedule's delay (or the receiver's longer `Retry-After`).
fn next_state(
    outcome: &CallOutcome,
    round: u32,
    max_attempts: u32,
    blocks: bool,
    finished_at_ms: i64,
    schedule: &RetrySchedule,
) -> DeliveryNext {
    if outcome.succeeded() {
        DeliveryNext::Succeeded
    } else if round >= max_attempts || outcome.permanent {
        if blocks {
            DeliveryNext::Blocked
        } else {
            DeliveryNext::Failed
        }
    } else {
        let delay = schedule.delay(round, outcome.retry_after);
        DeliveryNext::RetryAt {
            at_ms: finished_at_ms + delay.as_millis() as i64,
        }
    }
}

/// Everything an attempt task needs besides its delivery.
pub(crate) struct AttemptContext {
    pub(crate) executors: Executors,
    pub(crate) clock: Clock,
    pub(crate) retry_schedule: RetrySchedule,
    pub(crate) results: mpsc::Sender<Recorded>,
    pub(crate) in_flight: Arc<InFlight>,
    /// Each handler's run of failed attempts, for the automatic pause.
    pub(crate) streaks: Streaks,
    /// Handlers whose receiver asked to slow down, and until when (Unix ms):
    /// none of their deliveries is claimed before then, on this node.
    pub(crate) slowed: std::sync::Mutex<HashMap<i64, i64>>,
    pub(crate) breaker: mpsc::Sender<Signal>,
    /// Cancelled when the drain timeout runs out: attempts still running are
    /// abandoned unrecorded, and their leases bring them back after restart.
    pub(crate) abort: CancellationToken,
    /// Set while the dispatcher left due work unclaimed for want of slots
    /// or room; an attempt that gives those back wakes it (`wake`).
    pub(crate) starved: Arc<Starved>,
    pub(crate) wake: Arc<Notify>,
}

/// How long an HTTP receiver asked the handler to wait: a 429 or 503 with a
/// `Retry-After` (bounded by `MAX_RETRY_AFTER`).
fn slow_down(handler: &Handler, outcome: &CallOutcome) -> Option<Duration> {
    let asked = outcome.retry_after?;
    (handler.spec.kind == HandlerKind::Http && matches!(outcome.status, Some(429 | 503)))
        .then(|| asked.min(provisio_core::retry::MAX_RETRY_AFTER))
}

pub(crate) async fn attempt(
    ctx: Arc<AttemptContext>,
    delivery: ClaimedDelivery,
    handler: Option<Arc<Handler>>,
    permit: OwnedSemaphorePermit,
) {
    let handler_id = delivery.handler_id;
    let as_attempted = handler.clone();
    let result = tokio::select! {
        result = run_attempt(&ctx, delivery, handler) => Some(result),
        () = ctx.abort.cancelled() => None,
    };
    // Free the slot before reporting: the recorder wakes the dispatcher once
    // the result is committed, and by then the slot must be free to reuse.
    let answered = result
        .as_ref()
        .and_then(|r| r.execution.as_ref())
        .is_some_and(|e| e.response_status.is_some());
    ctx.in_flight
        .finish(handler_id, answered.then(Instant::now));
    drop(permit);
    // Slots and room are the dispatcher's own count, not the database's: a
    // dispatcher waiting for them may claim at once, before the result is
    // recorded (which may wait for the next batch, see `record.rs`).
    if ctx.starved.eased_by(std::iter::once(handler_id)) {
        ctx.wake.notify_one();
    }
    if let Some(result) = &result
        && result.spare_round
        && let DeliveryNext::RetryAt { at_ms } = result.next
    {
        let mut slowed = ctx.slowed.lock().expect("slowed lock poisoned");
        let until = slowed.entry(handler_id).or_insert(at_ms);
        *until = (*until).max(at_ms);
    }
    // A receiver asking to slow down is alive: not a failure for the breaker.
    if let (Some(result), Some(handler)) = (&result, &as_attempted)
        && !result.spare_round
        && let Some(execution) = &result.execution
    {
        let error = execution.error.as_deref();
        if let Some(signal) = ctx.streaks.observe(handler, error, result.finished_at_ms) {
            // The breaker task stops only at shutdown; a lost signal is
            // signalled again by the next failure or probe.
            let _ = ctx.breaker.send(signal).await;
        }
    }
    if let Some(result) = result {
        // The recorder only stops after every sender is gone, so this fails
        // only if it crashed; the lease then brings the delivery back.
        let _ = ctx.results.send(Recorded::Attempt(result)).await;
    }
}

async fn run_attempt(
    ctx: &AttemptContext,
    delivery: ClaimedDelivery,
    handler: Option<Arc<Handler>>,
) -> AttemptResult {
    let object_key = delivery.event.object_id.key();
    let attempts = delivery.attempts + 1;
    let handler = match handler {
        Some(h) if h.spec.status == Status::Enabled && h.spec.stage == Stage::After => h,
        other => {
            let why = match other {
                None => "the handler was deleted".to_owned(),
                Some(h) if h.spec.stage != Stage::After => {
                    "the handler was moved to the before stage".to_owned()
                }
                Some(h) => format!("the handler is {}", h.spec.status),
            };
            return AttemptResult {
                delivery_seq: delivery.seq,
                handler_id: delivery.handler_id,
                object_key,
                attempts: delivery.attempts,
                next: DeliveryNext::Failed,
                conflate: false,
                spare_round: false,
                finished_at_ms: ctx.clock.now_ms(),
                last_error: Some(format!("not sent: {why}")),
                execution: None,
            };
        }
    };

    let started_at = ctx.clock.now();
    let timeout = Duration::from_millis(handler.spec.timeout_ms.into());
    let payload = delivery.event.payload();
    let call = CallContext {
        msg_id: &delivery.id,
        event_id: &delivery.event.id,
        events_id: &delivery.event.events_id,
        object_id: &object_key,
        stage: Stage::After,
    };
    let mut outcome = ctx.executors.call(&handler, &call, payload, timeout).await;
    let finished_at = started_at + outcome.duration;

    // A receiver that asks to slow down (429, or 503 with Retry-After) is
    // not failing: the attempt does not use up the round, and the whole
    // handler waits (see `AttemptContext::slowed`).
    let slow_down = slow_down(&handler, &outcome);
    if slow_down.is_some() {
        metrics::counter!("provisio_handler_slowed_total", "handler" => handler.id.to_string())
            .increment(1);
    }
    let next = match slow_down {
        Some(wait) => DeliveryNext::RetryAt {
            at_ms: to_millis(finished_at) + wait.as_millis() as i64,
        },
        None => next_state(
            &outcome,
            attempts.saturating_sub(delivery.round_start),
            handler.spec.max_attempts,
            handler.spec.blocks_when_exhausted(),
            to_millis(finished_at),
            &ctx.retry_schedule,
        ),
    };

    let handler_label = handler.id.to_string();
    metrics::histogram!("provisio_attempt_duration_seconds", "handler" => handler_label.clone())
        .record(outcome.duration.as_secs_f64());
    if !matches!(next, DeliveryNext::RetryAt { .. }) {
        let label = match next {
            DeliveryNext::Succeeded => "success",
            DeliveryNext::Blocked => "blocked",
            _ => "failed",
        };
        metrics::counter!("provisio_deliveries_finished_total", "handler" => handler_label, "outcome" => label)
            .increment(1);
    }

    // One copy for the log row, one for the delivery.
    let last_error = outcome.error.take();
    let execution = LoggedCall {
        handler: &handler,
        delivery_id: Some(delivery.id.clone()),
        event_id: delivery.event.id.clone(),
        events_id: delivery.event.events_id.clone(),
        object_id: delivery.event.object_id.clone(),
        stage: Stage::After,
        attempt: attempts,
        started_at,
        next_attempt_at: match next {
            DeliveryNext::RetryAt { at_ms } => Some(from_millis(at_ms)),
            _ => None,
        },
        data_after: None,
        test: false,
        verdict: None,
    }
    .record(outcome, last_error.clone());
    AttemptResult {
        delivery_seq: delivery.seq,
        handler_id: handler.id,
        object_key,
        attempts,
        next,
        conflate: handler.spec.conflate,
        spare_round: slow_down.is_some(),
        finished_at_ms: to_millis(finished_at),
        last_error,
        execution: Some(execution),
    }
}

#[cfg(test)]
mod tests {
    use provisio_store::RequestRecord;

    use super::*;
    use crate::Clock;

    const SEC: i64 = 1000;

    fn failed(retry_after: Option<Duration>) -> CallOutcome {
        let mut outcome = CallOutcome::new(RequestRecord::default());
        outcome.error = Some("connection refused".into());
        outcome.retry_after = retry_after;
        outcome
    }

    /// The retry time an attempt result gets, in ms after `finished`.
    fn retry_in(next: DeliveryNext, finished: i64) -> i64 {
        match next {
            DeliveryNext::RetryAt { at_ms } => at_ms - finished,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_attempt_is_due_again_after_the_schedules_delay_from_its_end() {
        let schedule = RetrySchedule::parse("10s,60s").unwrap();
        let finished = Clock::manual(1_700_000_000_000).now_ms();
        // ±20 % jitter around the round's entry.
        let first = retry_in(
            next_state(&failed(None), 1, 5, false, finished, &schedule),
            finished,
        );
        assert!((8 * SEC..=12 * SEC).contains(&first), "{first}");
        let second = retry_in(
            next_state(&failed(None), 2, 5, false, finished, &schedule),
            finished,
        );
        assert!((48 * SEC..=72 * SEC).contains(&second), "{second}");
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_schedule() {
        let schedule = RetrySchedule::parse("10s").unwrap();
        let asked = Some(Duration::from_secs(120));
        let next = next_state(&failed(asked), 1, 5, false, 0, &schedule);
        assert_eq!(retry_in(next, 0), 120 * SEC);
        // A shorter one does not make the retry earlier.
        let next = next_state(
            &failed(Some(Duration::from_secs(1))),
            1,
            5,
            false,
            0,
            &schedule,
        );
        assert!(retry_in(next, 0) >= 8 * SEC);
    }

    #[test]
    fn the_last_attempt_of_a_round_fails_the_delivery_and_a_success_finishes_it() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            next_state(&failed(None), 3, 3, false, 0, &schedule),
            DeliveryNext::Failed
        );
        let ok = CallOutcome::new(RequestRecord::default());
        assert_eq!(
            next_state(&ok, 3, 3, true, 0, &schedule),
            DeliveryNext::Succeeded
        );
    }

    #[test]
    fn the_last_attempt_of_a_blocking_handler_blocks_and_earlier_ones_retry() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            next_state(&failed(None), 3, 3, true, 0, &schedule),
            DeliveryNext::Blocked
        );
        assert!(matches!(
            next_state(&failed(None), 2, 3, true, 0, &schedule),
            DeliveryNext::RetryAt { .. }
        ));
    }

    #[test]
    fn a_permanent_failure_fails_the_delivery_at_its_first_attempt() {
        let mut broken = failed(None);
        broken.permanent = true;
        let next = next_state(&broken, 1, 10, false, 0, &RetrySchedule::default());
        assert_eq!(next, DeliveryNext::Failed);
        // On a line that blocks, it blocks: the operator mends the template
        // and retries it.
        let next = next_state(&broken, 1, 10, true, 0, &RetrySchedule::default());
        assert_eq!(next, DeliveryNext::Blocked);
    }
}
