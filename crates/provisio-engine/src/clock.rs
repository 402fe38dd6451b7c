//! The engine's wall clock: where leases, due times and log timestamps come
//! from. Production reads the system time; tests set the time by hand, so
//! leases, retry times and their expiry are checked without sleeping.
//! Deadlines and elapsed times use tokio's `Instant`, which tests can pause.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use provisio_core::timefmt::{from_millis, to_millis};
use time::OffsetDateTime;

/// Wall-clock time in Unix milliseconds, the unit storage keeps instants in.
#[derive(Debug, Clone, Default)]
pub struct Clock(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    /// The system's time: one read per call, as before there was a clock.
    #[default]
    System,
    /// A time that moves only when told to (tests).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The system's time.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands at `now_ms` until [`Clock::advance`] moves it.
    pub fn manual(now_ms: i64) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(now_ms))))
    }

    /// Moves a manual clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(ms) = &self.0 {
            ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Source::System => to_millis(OffsetDateTime::now_utc()),
            Source::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> OffsetDateTime {
        match &self.0 {
            Source::System => OffsetDateTime::now_utc(),
            Source::Manual(ms) => from_millis(ms.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.clone().advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(to_millis(clock.now()), 1_250);
    }
}
