//! The retry schedule: how long to wait before the next attempt of a delivery.
//! Pure data and arithmetic, so the worker stays free of policy and tests can
//! check it without waiting.

use std::time::Duration;

use rand::Rng;

/// The longest `Retry-After` provisio honours; a receiver asking for more is
/// retried after this, so one bad header cannot park a delivery for weeks.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Delays between attempts: the first entry is the wait after the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// About 5 s, 30 s, 2 m, 10 m, 30 m, 1 h, 3 h, 6 h, 12 h (DESIGN §5).
    fn default() -> Self {
        let secs = [5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600];
        Self(secs.into_iter().map(Duration::from_secs).collect())
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Result<Self, String> {
        if delays.is_empty() {
            return Err("needs at least one delay".into());
        }
        Ok(Self(delays))
    }

    /// Parses `5s,30s,2m,1h` (units `ms`, `s`, `m`, `h`, `d`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(delays)
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The wait after `failed_attempts` failures (1 after the first), with ±20 %
    /// jitter so receivers recovering from an outage are not hit in lockstep. A
    /// `Retry-After` longer than the schedule wins, up to [`MAX_RETRY_AFTER`].
    pub fn delay(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let index = (failed_attempts.max(1) as usize - 1).min(self.0.len() - 1);
        let base = self.0[index];
        let jittered = base.mul_f64(rand::rng().random_range(0.8..=1.2));
        match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// Parses one duration such as `500ms`, `5s`, `2m`, `1h` or `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5s, 2m or 1h"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} is not a duration such as 5s, 2m or 1h")),
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest unit
/// that divides it (`30s`, `2m`, `30d`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_schedule() {
        let s = RetrySchedule::parse("500ms, 5s,2m,1h,1d").unwrap();
        assert_eq!(
            s.delays(),
            &[
                Duration::from_millis(500),
                Duration::from_secs(5),
                Duration::from_secs(120),
                Duration::from_secs(3600),
                Duration::from_secs(86400)
            ]
        );
        for bad in ["", "5", "5x", "s", "5s,,", "-5s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_format_as_they_parse() {
        for text in ["5s", "2m", "1h", "30d", "1500ms", "90s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn delays_follow_the_schedule_with_bounded_jitter() {
        let s = RetrySchedule::default();
        for _ in 0..100 {
            let d = s.delay(1, None);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
            let last = s.delay(99, None);
            assert!(last >= Duration::from_secs(12 * 3600 * 8 / 10));
        }
    }

    #[test]
    fn retry_after_wins_but_is_bounded() {
        let s = RetrySchedule::parse("1s").unwrap();
        assert_eq!(
            s.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            s.delay(1, Some(Duration::from_secs(10 * 86400))),
            MAX_RETRY_AFTER
        );
    }
}
