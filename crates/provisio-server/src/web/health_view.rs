//! A handler's health and queue as the pages word them: the state badge,
//! how long ago it last failed, and its queue in one line ("12 waiting ·
//! oldest 3 h").

use crate::board::{Health, Queue};

/// What the handlers table and the overview's cards show of a handler's
/// figures.
pub(super) struct Shown {
    /// `ok`, `failing` or `idle` (also the badge's CSS class).
    pub(super) state: &'static str,
    /// "12 min ago", when it ever failed.
    pub(super) last_failure: Option<String>,
    /// After stage: deliveries; before stage: calls that allowed the action.
    pub(super) succeeded: u64,
    /// Before-stage calls that forbade the action (never shown as successes).
    pub(super) forbidden: u64,
    pub(super) failed: u64,
    /// "3 pending · 12 waiting · oldest 3 h", or empty when nothing is queued.
    pub(super) queue: String,
}

impl Shown {
    pub(super) fn new(health: &Health, queue: &Queue, now_ms: i64) -> Self {
        Shown {
            state: health.state.as_str(),
            last_failure: health
                .last_failure_ms
                .map(|t| format!("{} ago", age(now_ms - t))),
            succeeded: health.succeeded - health.forbidden,
            forbidden: health.forbidden,
            failed: health.failed,
            queue: queue_line(queue, now_ms),
        }
    }
}

/// The non-zero counts, then the oldest's age; empty for an empty queue.
pub(super) fn queue_line(q: &Queue, now_ms: i64) -> String {
    let mut parts: Vec<String> = [
        (q.pending, "pending"),
        (q.waiting, "waiting"),
        (q.held, "held"),
        (q.blocked, "blocked"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if let Some(oldest) = q.oldest_ms.filter(|_| !parts.is_empty()) {
        parts.push(format!("oldest {}", age(now_ms - oldest)));
    }
    parts.join(" · ")
}

/// A duration as an operator reads it at a glance: "40 s", "12 min", "3 h",
/// "2 d" (rounded down to its largest unit).
pub(super) fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_round_down_to_their_largest_unit() {
        assert_eq!(age(-5), "0 s");
        assert_eq!(age(59_999), "59 s");
        assert_eq!(age(60_000), "1 min");
        assert_eq!(age(3 * 3_600_000 + 59 * 60_000), "3 h");
        assert_eq!(age(2 * 86_400_000), "2 d");
    }

    #[test]
    fn a_queue_line_names_what_is_there_and_the_oldest() {
        let now = 10 * 3_600_000;
        let q = Queue {
            pending: 1,
            waiting: 12,
            held: 0,
            blocked: 2,
            oldest_ms: Some(now - 3 * 3_600_000),
        };
        assert_eq!(
            queue_line(&q, now),
            "1 pending · 12 waiting · 2 blocked · oldest 3 h"
        );
        assert_eq!(queue_line(&Queue::default(), now), "");
    }
}
