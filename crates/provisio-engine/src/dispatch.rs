//! The delivery loop. The dispatcher leases due deliveries from storage in
//! batches and starts one attempt task per delivery; attempt results flow to the
//! recorder, which commits them in batches and wakes the dispatcher for whatever
//! became due (a retry, an ordered successor). Nothing polls: the dispatcher
//! sleeps until woken, until an emit arrives, or until the next delivery's due
//! time.
//!
//! The dispatcher also commits emits: whatever has queued when it is about to
//! claim is stored in the claim's transaction (`Store::emit`), so a lone
//! event's delivery is leased by the commit that accepts it — one commit and,
//! on SQLite, one call to the write thread fewer per event than an emit
//! writer of its own followed by a claim.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use provisio_core::handler::Handler;
use provisio_core::retry::RetrySchedule;
use provisio_store::{Claim, Store};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attempt::{AttemptContext, attempt};
use crate::breaker::{Signal, Streaks};
use crate::emit::{self, Pending};
use crate::executor::Executors;
use crate::pace::Pacer;
use crate::record::Recorded;
use crate::shares::{InFlight, Starved};
use crate::{Clock, Routes};

/// When a claim made at `now_ms` leases its deliveries until: long enough for
/// the slowest handler's attempt plus the margin to record its result.
fn lease_until(now_ms: i64, longest_timeout: Duration, margin: Duration) -> i64 {
    now_ms + (longest_timeout + margin).as_millis() as i64
}

/// What the dispatcher uses.
pub(crate) struct Dispatcher {
    pub(crate) store: Arc<dyn Store>,
    /// Which handlers may be claimed for, their timeouts, and their settings
    /// at the time of the attempt.
    pub(crate) routes: Routes,
    pub(crate) executors: Executors,
    /// Emits waiting to be committed.
    pub(crate) emits: mpsc::Receiver<Pending>,
    /// Where attempt results go (the recorder).
    pub(crate) results: mpsc::Sender<Recorded>,
    /// Woken by records, reloads and redelivers: work may be due.
    pub(crate) wake: Arc<Notify>,
    /// Set while due work may be left unclaimed for want of slots or a
    /// handler's room: the recorder then wakes it after every batch.
    pub(crate) starved: Arc<Starved>,
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

pub(crate) async fn run_dispatcher(dispatcher: Dispatcher) {
    let Dispatcher {
        store,
        routes,
        executors,
        mut emits,
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
        starved: starved.clone(),
        wake: wake.clone(),
    });
    let mut last_settle: Option<Instant> = None;
    // When this node last took (or saw taken) each paused handler's probe:
    // the next is due `probe_every` later. The routing table's `probe_at`
    // lags behind until the next reload.
    let mut probes: HashMap<i64, i64> = HashMap::new();
    let mut pacer = Pacer::default();
    let mut queued: Vec<Pending> = Vec::with_capacity(emit::MAX_BATCH);

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
        // Handlers left out of this claim by their pace alone: the pacer
        // wakes the dispatcher for them, a finished attempt cannot.
        let mut paced = Vec::new();
        if let Some(shares) = shares.as_mut() {
            // A handler's own cap (its receiver takes only so many calls at
            // once): the rest of its due work waits, costing nobody else.
            shares.handlers.retain_mut(|(id, room)| {
                if let Some(cap) = routes.get(*id).and_then(|h| h.spec.max_in_flight) {
                    let free = (cap as usize).saturating_sub(ctx.in_flight.running(*id));
                    *room = (*room).min(free as u32);
                }
                if *room > 0
                    && let Some(rate) = routes.get(*id).and_then(|h| h.spec.rate_limit)
                {
                    *room = (*room).min(pacer.room(*id, rate, now * 1000));
                    if *room == 0 {
                        paced.push(*id);
                    }
                }
                *room > 0
            });
        }
        // A running handler left out of the claim (no free slot, or no room
        // of its own) may have due work that only a finished attempt lets go.
        match &shares {
            None => starved.set(true, HashSet::new()),
            Some(shares) => {
                let claimed: HashSet<i64> = shares
                    .handlers
                    .iter()
                    .map(|(id, _)| *id)
                    .chain(paced)
                    .collect();
                let left_out: HashSet<i64> = running
                    .iter()
                    .copied()
                    .filter(|id| !claimed.contains(id))
                    .collect();
                let anyone = shares.reserve_in_use && !left_out.is_empty();
                starved.set(anyone, if anyone { HashSet::new() } else { left_out });
            }
        }
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
        // Emits queued meanwhile are committed with the claim.
        while queued.len() < emit::MAX_BATCH
            && let Ok(pending) = emits.try_recv()
        {
            queued.push(pending);
        }
        let claim = shares.as_ref().map(|shares| Claim {
            now_ms: now,
            lease_until_ms: lease_until(now, routes.max_timeout(), lease_margin),
            limit: shares.limit,
            handlers: &shares.handlers,
        });
        let claimed = if !queued.is_empty() {
            emit::commit(store.as_ref(), &mut queued, claim.as_ref()).await
        } else if let Some(claim) = &claim {
            let started = Instant::now();
            let claimed = store.claim_due(claim).await;
            metrics::histogram!("provisio_claim_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            Some(claimed)
        } else {
            None
        };
        if let (Some(shares), Some(claimed)) = (&shares, claimed) {
            match claimed {
                Ok(claimed) => {
                    metrics::histogram!("provisio_claim_batch_size")
                        .record(claimed.deliveries.len() as f64);
                    // Claim again at once if the claim was cut short: by its
                    // limit, or by a handler's room (that handler has more due
                    // work, and may have room again by then).
                    let mut again = claimed.deliveries.len() as u32 == shares.limit;
                    let mut taken: HashMap<i64, u32> = HashMap::new();
                    for delivery in claimed.deliveries {
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
                    // A due time in the past belongs to a handler at its
                    // limit: a finishing attempt will wake us.
                    wait_until = claimed.next_due_ms.filter(|due| *due > now);
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not claim deliveries; retrying in 1 s");
                    wait_until = Some(now + 1000);
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
            received = emits.recv_many(&mut queued, emit::MAX_BATCH) => {
                if received == 0 {
                    break; // every sender is gone: so is the engine
                }
            }
        }
    }

    // Emits accepted before the shutdown are committed; later ones are refused.
    emits.close();
    loop {
        if !queued.is_empty() {
            emit::commit(store.as_ref(), &mut queued, None).await;
        }
        if emits.recv_many(&mut queued, emit::MAX_BATCH).await == 0 {
            break;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clock;

    const SEC: i64 = 1000;

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
