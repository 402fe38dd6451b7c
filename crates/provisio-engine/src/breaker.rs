//! The automatic pause (circuit breaker): counts each handler's consecutive
//! failed attempts as their results arrive, trips when a handler's
//! `auto_pause` says so, and tells a probe's success from its failure. The
//! pause itself (store, reload, event) is the engine's use case
//! (`service.rs`), run by the breaker task this module also holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use provisio_core::handler::Handler;
use provisio_core::retry::format_duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Engine;

/// Signals queued for the breaker task; attempts wait when it is full.
pub(crate) const QUEUE_DEPTH: usize = 256;

/// The longest stretch of the last error a pause's reason quotes.
const REASON_ERROR_CHARS: usize = 200;

/// What an attempt's result means for its handler's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Pause handler `.0` with reason `.1`.
    Trip(i64, String),
    /// A probe of automatically paused handler `.0` succeeded: resume it.
    Recovered(i64),
}

/// One handler's run of failed attempts.
struct Streak {
    failures: u32,
    /// When the first failure of the run ended (Unix ms).
    since_ms: i64,
}

/// Each handler's current run of failures, on this node. Several nodes each
/// count their own attempts, so a handler on N nodes trips after about
/// `failures` failures on the busiest one; a success anywhere resets only
/// that node's count.
#[derive(Default)]
pub(crate) struct Streaks(Mutex<HashMap<i64, Streak>>);

impl Streaks {
    /// Counts an attempt of `handler` (as the routing table had it when the
    /// attempt started) that ended at `at_ms`, with `error` when it failed.
    /// An attempt made while the handler was paused automatically is its
    /// probe.
    pub(crate) fn observe(
        &self,
        handler: &Handler,
        error: Option<&str>,
        at_ms: i64,
    ) -> Option<Signal> {
        let mut streaks = self.0.lock().expect("streaks lock poisoned");
        if handler.pause.as_ref().is_some_and(|p| p.is_automatic()) {
            streaks.remove(&handler.id);
            return error.is_none().then_some(Signal::Recovered(handler.id));
        }
        let (Some(settings), Some(error)) = (handler.spec.auto_pause, error) else {
            streaks.remove(&handler.id);
            return None;
        };
        let streak = streaks.entry(handler.id).or_insert(Streak {
            failures: 0,
            since_ms: at_ms,
        });
        streak.failures += 1;
        let span = Duration::from_millis((at_ms - streak.since_ms).max(0) as u64);
        if streak.failures < settings.failures || span < settings.after {
            return None;
        }
        let failures = streak.failures;
        streaks.remove(&handler.id);
        let last: String = error.chars().take(REASON_ERROR_CHARS).collect();
        Some(Signal::Trip(
            handler.id,
            format!(
                "{failures} consecutive failure{} over {}; last: {last}",
                if failures == 1 { "" } else { "s" },
                format_duration(Duration::from_secs(span.as_secs()))
            ),
        ))
    }
}

/// The breaker task: carries out what attempts signalled, one at a time,
/// through the engine's use cases, until shutdown.
pub(crate) async fn run(
    engine: Engine,
    mut signals: mpsc::Receiver<Signal>,
    shutdown: CancellationToken,
) {
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            () = shutdown.cancelled() => return,
        };
        let Some(signal) = signal else { return };
        let done = match &signal {
            Signal::Trip(id, reason) => engine.pause_automatically(*id, reason).await,
            Signal::Recovered(id) => engine.resume_after_probe(*id).await,
        };
        if let Err(err) = done {
            // The next failure (or probe) signals again.
            tracing::error!(error = %err, ?signal, "could not change a handler's automatic pause");
        }
    }
}

#[cfg(test)]
mod tests {
    use provisio_core::handler::{AutoPause, Pause};

    use super::*;

    fn handler(auto_pause: Option<AutoPause>, pause: Option<&str>) -> Handler {
        let spec = provisio_core::handler::HandlerSpec {
            name: "h".into(),
            events_id: provisio_core::catalog::EventPattern::All,
            stage: provisio_core::handler::Stage::After,
            status: provisio_core::handler::Status::Enabled,
            priority: 0,
            kind: provisio_core::handler::HandlerKind::Http,
            target: "http://127.0.0.1/".into(),
            args: vec![],
            headers: Default::default(),
            timeout_ms: 1000,
            max_attempts: 3,
            ordered: true,
            on_failure: provisio_core::handler::OnFailure::Forbid,
            filter: None,
            request: None,
            on_exhausted: provisio_core::handler::OnExhausted::Block,
            conflate: false,
            auto_pause,
            max_in_flight: None,
            rate_limit: None,
        };
        Handler {
            id: 7,
            spec,
            pause: pause.map(|reason| Pause {
                reason: reason.into(),
                at: time::OffsetDateTime::UNIX_EPOCH,
                probe_at_ms: None,
            }),
            secret: provisio_core::signing::SigningSecret::generate(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    const THREE_OVER_10S: AutoPause = AutoPause {
        failures: 3,
        after: Duration::from_secs(10),
        probe_every: Duration::from_secs(60),
    };

    #[test]
    fn trips_only_after_enough_failures_spanning_enough_time() {
        let streaks = Streaks::default();
        let h = handler(Some(THREE_OVER_10S), None);
        assert_eq!(streaks.observe(&h, Some("refused"), 0), None);
        assert_eq!(streaks.observe(&h, Some("refused"), 1_000), None);
        // Three failures, but within 2 s: not yet.
        assert_eq!(streaks.observe(&h, Some("refused"), 2_000), None);
        let trip = streaks.observe(&h, Some("connection refused"), 12_000);
        assert_eq!(
            trip,
            Some(Signal::Trip(
                7,
                "4 consecutive failures over 12s; last: connection refused".into()
            ))
        );
        // The run starts over after a trip.
        assert_eq!(streaks.observe(&h, Some("refused"), 13_000), None);
    }

    #[test]
    fn a_success_resets_the_run_and_handlers_without_the_setting_never_trip() {
        let streaks = Streaks::default();
        let h = handler(Some(THREE_OVER_10S), None);
        streaks.observe(&h, Some("x"), 0);
        streaks.observe(&h, Some("x"), 5_000);
        assert_eq!(streaks.observe(&h, None, 6_000), None);
        assert_eq!(streaks.observe(&h, Some("x"), 20_000), None, "a new run");
        let off = handler(None, None);
        for at in 0..100 {
            assert_eq!(streaks.observe(&off, Some("x"), at * 60_000), None);
        }
    }

    #[test]
    fn a_probes_success_resumes_and_its_failure_keeps_the_pause() {
        let streaks = Streaks::default();
        let paused = handler(Some(THREE_OVER_10S), Some("3 consecutive failures"));
        assert_eq!(streaks.observe(&paused, Some("x"), 0), None);
        assert_eq!(
            streaks.observe(&paused, None, 1),
            Some(Signal::Recovered(7))
        );
        // An operator's pause is never resumed by an attempt.
        let operator = handler(Some(THREE_OVER_10S), Some("operator"));
        assert_eq!(streaks.observe(&operator, None, 2), None);
    }
}
