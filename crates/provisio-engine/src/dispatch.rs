//! The delivery loop. The dispatcher leases due deliveries from storage in
//! batches and starts one attempt task per delivery; attempt results flow to the
//! recorder, which commits them in batches and wakes the dispatcher for whatever
//! became due (a retry, an ordered successor). Nothing polls: the dispatcher
//! sleeps until woken or until the next delivery's due time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use provisio_core::handler::{Handler, HandlerKind, Stage, Status};
use provisio_core::retry::RetrySchedule;
use provisio_core::timefmt::{from_millis, to_millis};
use provisio_store::{AttemptResult, Claim, ClaimedDelivery, DeliveryNext, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Signal, Streaks};
use crate::executor::Executors;
use crate::outcome::{CallContext, CallOutcome, LoggedCall};
use crate::pace::Pacer;
use crate::record::Recorded;
use crate::shares::InFlight;
use crate::{Clock, Routes};

/// When a claim made at `now_ms` leases its deliveries until: long enough for
/// the slowest handler's attempt plus the margin to record its result.
fn lease_until(now_ms: i64, longest_timeout: Duration, margin: Duration) -> i64 {
    now_ms + (longest_timeout + margin).as_millis() as i64
}

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

/// What the dispatcher uses.
pub(crate) struct Dispatcher {
    pub(crate) store: Arc<dyn Store>,
    /// Which handlers may be claimed for, their timeouts, and their settings
    /// at the time of the attempt.
    pub(crate) routes: Routes,
    pub(crate) executors: Executors,
    /// Where attempt results go (the recorder).
    pub(crate) results: mpsc::Sender<Recorded>,
    /// Woken by commits, reloads and redelivers: work may be due.
    pub(crate) wake: Arc<Notify>,
    /// Set while due work may be left unclaimed for want of slots or a
    /// handler's room: the recorder then wakes it after every batch.
    pub(crate) starved: Arc<AtomicBool>,
    /// Stops claiming; attempts in flight then drain.
    pub(crate) shutdown: CancellationToken,
    pub(crate) clock: Clock,
    pub(crate) retry_schedule: RetrySchedule,
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_per_handler: usize,
    pub(crate) lease_margin: Duration,
    pub(crate) drain_timeout: Duration,
    /// On a database shared with other nodes, how often to settle lapsed
    /// leases and look for due work unannounced; `None` on a single node.
    pub(crate) shared_recheck: Option<Duration>,
    /// Where attempts report that a handler's automatic pause tripped or its
    /// probe succeeded (the breaker task).
    pub(crate) breaker: mpsc::Sender<Signal>,
}

/// Everything an attempt task needs besides its delivery.
struct AttemptContext {
    executors: Executors,
    clock: Clock,
    retry_schedule: RetrySchedule,
    results: mpsc::Sender<Recorded>,
    in_flight: Arc<InFlight>,
    /// Each handler's run of failed attempts, for the automatic pause.
    streaks: Streaks,
    /// Handlers whose receiver asked to slow down, and until when (Unix ms):
    /// none of their deliveries is claimed before then, on this node.
    slowed: std::sync::Mutex<HashMap<i64, i64>>,
    breaker: mpsc::Sender<Signal>,
    /// Cancelled when the drain timeout runs out: attempts still running are
    /// abandoned unrecorded, and their leases bring them back after restart.
    abort: CancellationToken,
}

pub(crate) async fn run_dispatcher(dispatcher: Dispatcher) {
    let Dispatcher {
        store,
        routes,
        executors,
        results,
        wake,
        starved,
        shutdown,
        clock,
        retry_schedule,
        max_in_flight,
        max_in_flight_per_handler: per_handler,
        lease_margin,
        drain_timeout,
        shared_recheck,
        breaker,
    } = dispatcher;
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let ctx = Arc::new(AttemptContext {
        executors,
        clock: clock.clone(),
        retry_schedule,
        results,
        in_flight: Arc::new(InFlight::default()),
        streaks: Streaks::default(),
        slowed: std::sync::Mutex::new(HashMap::new()),
        breaker,
        abort: CancellationToken::new(),
    });
    let mut last_settle: Option<Instant> = None;
    // When this node last took (or saw taken) each paused handler's probe:
    // the next is due `probe_every` later. The routing table's `probe_at`
    // lags behind until the next reload.
    let mut probes: HashMap<i64, i64> = HashMap::new();
    let mut pacer = Pacer::default();

    while !shutdown.is_cancelled() {
        let mut wait_until = None;
        let now = clock.now_ms();
        if let Some(recheck) = shared_recheck
            && last_settle.is_none_or(|at| at.elapsed() >= recheck)
        {
            // Leases of nodes that died lapse unannounced: log their attempts
            // as interrupted, which makes the deliveries due again.
            last_settle = Some(Instant::now());
            match store.settle_interrupted(now, now).await {
                Ok(0) => {}
                Ok(settled) => tracing::warn!(
                    settled,
                    "took over attempts whose lease lapsed; logged with status unknown"
                ),
                Err(err) => {
                    tracing::error!(error = %err, "could not settle lapsed leases; retrying later")
                }
            }
        }
        let routes = routes.current();
        // A paused handler is not claimed for: its deliveries stay queued
        // (held) and cost nothing, except one probe per interval of a handler
        // paused automatically.
        let slowed = {
            let mut slowed = ctx.slowed.lock().expect("slowed lock poisoned");
            slowed.retain(|_, until| *until > now);
            slowed.clone()
        };
        let slowed_until = slowed.values().copied().min();
        let running: Vec<i64> = routes
            .handler_ids()
            .filter(|id| {
                routes.get(*id).is_some_and(|h| h.pause.is_none()) && !slowed.contains_key(id)
            })
            .collect();
        let mut shares = ctx.in_flight.shares(
            running.iter().copied(),
            slots.available_permits(),
            max_in_flight,
            per_handler,
            Instant::now(),
        );
        if let Some(shares) = shares.as_mut() {
            // A handler's own cap (its receiver takes only so many calls at
            // once): the rest of its due work waits, costing nobody else.
            shares.handlers.retain_mut(|(id, room)| {
                if let Some(cap) = routes.get(*id).and_then(|h| h.spec.max_in_flight) {
                    let free = (cap as usize).saturating_sub(ctx.in_flight.running(*id));
                    *room = (*room).min(free as u32);
                }
                if let Some(rate) = routes.get(*id).and_then(|h| h.spec.rate_limit) {
                    *room = (*room).min(pacer.room(*id, rate, now * 1000));
                }
                *room > 0
            });
        }
        // A running handler left out of the claim (no free slot, or no room
        // of its own) may have due work that only a finished attempt lets go.
        starved.store(
            shares
                .as_ref()
                .is_none_or(|s| s.handlers.len() < running.len()),
            Ordering::SeqCst,
        );
        probes.retain(|id, _| routes.get(*id).is_some_and(|h| h.pause.is_some()));
        let mut next_probe: Option<i64> = None;
        for (handler, every) in routes.probed() {
            let due = probe_due(&handler, &probes);
            let Some(shares) = shares.as_mut().filter(|_| due <= now) else {
                next_probe = Some(next_probe.map_or(due, |at| at.min(due)));
                continue;
            };
            let next = now + every.as_millis() as i64;
            probes.insert(handler.id, next);
            next_probe = Some(next_probe.map_or(next, |at| at.min(next)));
            match store.take_probe(handler.id, now, next).await {
                Ok(true) => shares.handlers.push((handler.id, 1)),
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(error = %err, handler = handler.id, "could not take a probe")
                }
            }
        }
        if let Some(shares) = shares {
            let claim = Claim {
                now_ms: now,
                lease_until_ms: lease_until(now, routes.max_timeout(), lease_margin),
                limit: shares.limit,
                handlers: &shares.handlers,
            };
            match store.claim_due(&claim).await {
                Ok(claimed) => {
                    // Claim again at once if the claim was cut short: by its
                    // limit, or by a handler's room (that handler has more due
                    // work, and may have room again by then).
                    let mut again = claimed.len() as u32 == shares.limit;
                    let mut taken: HashMap<i64, u32> = HashMap::new();
                    for delivery in claimed {
                        let permit = slots
                            .clone()
                            .try_acquire_owned()
                            .expect("claimed no more than the free slots");
                        *taken.entry(delivery.handler_id).or_default() += 1;
                        let handler = routes.get(delivery.handler_id).cloned();
                        ctx.in_flight.start(delivery.handler_id);
                        tokio::spawn(attempt(ctx.clone(), delivery, handler, permit));
                    }
                    again |= shares
                        .handlers
                        .iter()
                        .any(|(id, room)| taken.get(id).is_some_and(|n| n >= room));
                    for (id, room) in &shares.handlers {
                        if let Some(rate) = routes.get(*id).and_then(|h| h.spec.rate_limit) {
                            let took = taken.get(id).copied().unwrap_or(0);
                            pacer.took(*id, rate, now * 1000, took, *room);
                        }
                    }
                    if again {
                        continue;
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not claim deliveries; retrying in 1 s");
                    wait_until = Some(now + 1000);
                }
            }
            if wait_until.is_none() {
                match store.next_due_ms().await {
                    // A due time in the past belongs to a handler at its limit:
                    // a finishing attempt will wake us.
                    Ok(Some(due)) if due > now => wait_until = Some(due),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!(error = %err, "could not read the next due time; retrying in 1 s");
                        wait_until = Some(now + 1000);
                    }
                }
            }
        }
        if let Some(paced) = pacer.next_wake_ms() {
            wait_until = Some(wait_until.map_or(paced, |at| at.min(paced)));
        }
        if let Some(until) = slowed_until {
            wait_until = Some(wait_until.map_or(until, |at| at.min(until)));
        }
        if let Some(probe) = next_probe {
            wait_until = Some(wait_until.map_or(probe, |at| at.min(probe)));
        }
        if let Some(recheck) = shared_recheck {
            // Other nodes' leases lapse unannounced; look again in a while.
            let recheck = clock.now_ms() + recheck.as_millis() as i64;
            wait_until = Some(wait_until.map_or(recheck, |at| at.min(recheck)));
        }
        let sleep = async {
            match wait_until {
                Some(at) => {
                    let wait = at - clock.now_ms();
                    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = sleep => {}
            () = shutdown.cancelled() => {}
        }
    }

    // Drain: let attempts in flight finish, up to the drain timeout.
    let all = max_in_flight as u32;
    if tokio::time::timeout(drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "attempts still in flight at the drain timeout are abandoned; they run again after restart"
        );
        ctx.abort.cancel();
    }
}

/// How long an HTTP receiver asked the handler to wait: a 429 or 503 with a
/// `Retry-After` (bounded by `MAX_RETRY_AFTER`).
fn slow_down(handler: &Handler, outcome: &CallOutcome) -> Option<Duration> {
    let asked = outcome.retry_after?;
    (handler.spec.kind == HandlerKind::Http && matches!(outcome.status, Some(429 | 503)))
        .then(|| asked.min(provisio_core::retry::MAX_RETRY_AFTER))
}

/// When this node may next probe `handler` (paused automatically): the later
/// of the stored `probe_at` and the time after the probe it last took.
fn probe_due(handler: &Handler, probes: &HashMap<i64, i64>) -> i64 {
    let stored = handler
        .pause
        .as_ref()
        .and_then(|p| p.probe_at_ms)
        .unwrap_or_default();
    stored.max(probes.get(&handler.id).copied().unwrap_or_default())
}

async fn attempt(
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

    #[test]
    fn a_lease_ends_the_longest_timeout_plus_the_margin_after_the_claim() {
        let clock = Clock::manual(1_000_000);
        clock.advance(Duration::from_secs(5));
        let until = lease_until(
            clock.now_ms(),
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        assert_eq!(until, 1_005_000 + 60 * SEC);
        // A lease is over once the clock reaches its end, and not before.
        clock.advance(Duration::from_millis(59_999));
        assert!(clock.now_ms() < until);
        clock.advance(Duration::from_millis(1));
        assert!(clock.now_ms() >= until);
    }
}
