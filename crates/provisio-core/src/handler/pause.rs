//! A handler's pause: the automatic pause's settings (a circuit breaker)
//! and their checks, and why and since when a handler is paused.

use std::time::Duration;

use time::OffsetDateTime;

use super::range_message;
use crate::FieldErrors;
use crate::retry::{format_duration, parse_duration};

/// Consecutive failed attempts before the automatic pause may trip.
pub const AUTO_PAUSE_FAILURES_RANGE: std::ops::RangeInclusive<i64> = 1..=100_000;
/// How long the failures must span: none at all, up to a week.
pub const AUTO_PAUSE_AFTER_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(7 * 86_400);
/// How often an automatically paused handler is probed: at least every day,
/// at most every second (a probe is a real call to the receiver).
pub const AUTO_PAUSE_PROBE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);

/// The `paused_reason` of a pause the operator made.
pub const OPERATOR_PAUSE: &str = "operator";

/// The automatic pause as a caller gives it: durations as text (`10m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPauseDraft {
    pub failures: i64,
    pub after: String,
    pub probe_every: String,
}

/// The automatic pause (circuit breaker), validated: after `failures`
/// consecutive failed attempts spanning at least `after`, the handler pauses
/// itself; then one delivery is tried every `probe_every`, and the first
/// success resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoPause {
    pub failures: u32,
    pub after: Duration,
    pub probe_every: Duration,
}

impl From<&AutoPause> for AutoPauseDraft {
    fn from(a: &AutoPause) -> Self {
        Self {
            failures: a.failures.into(),
            after: format_duration(a.after),
            probe_every: format_duration(a.probe_every),
        }
    }
}

/// Why and since when a handler is paused. Not a setting: changing a
/// handler's settings keeps its pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// [`OPERATOR_PAUSE`], or the automatic pause's reason.
    pub reason: String,
    pub at: OffsetDateTime,
    /// While paused automatically: when the next probe is due (Unix ms).
    pub probe_at_ms: Option<i64>,
}

impl Pause {
    /// True for a pause the circuit breaker made, which probes and resumes
    /// by itself; an operator's pause waits for the operator.
    pub fn is_automatic(&self) -> bool {
        self.reason != OPERATOR_PAUSE
    }
}

/// Checks the automatic pause's fields, each under `auto_pause.<field>`.
pub(super) fn validate_auto_pause(
    a: &AutoPauseDraft,
    errors: &mut FieldErrors,
) -> Option<AutoPause> {
    let mut ok = true;
    if !AUTO_PAUSE_FAILURES_RANGE.contains(&a.failures) {
        errors.add(
            "auto_pause.failures",
            range_message(&AUTO_PAUSE_FAILURES_RANGE),
        );
        ok = false;
    }
    let mut duration =
        |field: &str, text: &str, range: &std::ops::RangeInclusive<Duration>| match parse_duration(
            text.trim(),
        ) {
            Ok(d) if range.contains(&d) => Some(d),
            Ok(_) => {
                errors.add(
                    field,
                    format!(
                        "must be from {} to {}",
                        format_duration(*range.start()),
                        format_duration(*range.end())
                    ),
                );
                None
            }
            Err(e) => {
                errors.add(field, e);
                None
            }
        };
    let after = duration("auto_pause.after", &a.after, &AUTO_PAUSE_AFTER_RANGE);
    let probe_every = duration(
        "auto_pause.probe_every",
        &a.probe_every,
        &AUTO_PAUSE_PROBE_RANGE,
    );
    Some(AutoPause {
        failures: u32::try_from(a.failures).ok().filter(|_| ok)?,
        after: after?,
        probe_every: probe_every?,
    })
}
