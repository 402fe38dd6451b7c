//! Fair shares of the dispatcher's in-flight slots. A handler whose receiver
//! hangs holds its attempts until their timeout; a quarter of the slots is
//! kept for handlers that answer, so a dead target costs only its own
//! handler (ARCHITECTURE.md, "Fair shares of the in-flight slots").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The most deliveries one claim leases.
pub(crate) const CLAIM_BATCH: u32 = 256;

/// When no more than this fraction of the in-flight slots is free, the rest
/// (the reserve) goes to handlers that are answering. Handlers that stop
/// answering keep their slots until their timeout; the reserve keeps a quarter
/// of the slots for the others.
const RESERVE_DIVISOR: usize = 4;

/// In-flight attempts a handler that is not known to answer may have while
/// the reserve is in use: a newcomer can show it answers, but a run of newly
/// hung handlers cannot empty the reserve.
const RESERVED_SHARE: usize = 8;

/// A handler counts as answering while it finished an attempt this recently.
const ANSWERING: Duration = Duration::from_secs(1);

/// Attempts in flight per handler, and when each last finished one: the
/// dispatcher's view of who is answering, for fair shares of the slots.
#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashMap<i64, Activity>>);

#[derive(Default)]
struct Activity {
    running: usize,
    last_finished: Option<Instant>,
}

impl Activity {
    fn answering(&self, now: Instant) -> bool {
        self.last_finished
            .is_some_and(|at| now.saturating_duration_since(at) < ANSWERING)
    }
}

/// How much the next claim may lease: in all, and per handler.
pub(crate) struct Shares {
    pub(crate) limit: u32,
    /// (handler, room) for every handler with room: the claim looks at no
    /// other.
    pub(crate) handlers: Vec<(i64, u32)>,
}

impl InFlight {
    /// The next claim's shares for `handlers`, given `free` of `total` slots.
    /// While more than the reserve is free, every handler may fill up to
    /// `per_handler`, but only the slots above the reserve are handed out.
    /// Within the reserve, handlers that answer may still fill up to
    /// `per_handler`, others only up to [`RESERVED_SHARE`]. So hung handlers
    /// hold at most three quarters of the slots plus a few each, and a handler
    /// that answers always finds room. `None` when nothing may be claimed.
    pub(crate) fn shares(
        &self,
        handlers: impl Iterator<Item = i64>,
        free: usize,
        total: usize,
        per_handler: usize,
        now: Instant,
    ) -> Option<Shares> {
        let reserve = total / RESERVE_DIVISOR;
        let within_reserve = free <= reserve;
        let limit = if within_reserve { free } else { free - reserve };
        if limit == 0 {
            return None;
        }
        let newcomer = if within_reserve {
            RESERVED_SHARE.min(per_handler)
        } else {
            per_handler
        };
        let mut map = self.0.lock().expect("in-flight lock poisoned");
        map.retain(|_, a| a.running > 0 || a.answering(now));
        let handlers = handlers
            .filter_map(|id| {
                let (cap, running) = match map.get(&id) {
                    Some(a) if a.answering(now) => (per_handler, a.running),
                    Some(a) => (newcomer, a.running),
                    None => (newcomer, 0),
                };
                let room = cap.saturating_sub(running).min(limit) as u32;
                (room > 0).then_some((id, room))
            })
            .collect();
        Some(Shares {
            limit: (limit as u32).min(CLAIM_BATCH),
            handlers,
        })
    }

    /// Attempts of `handler_id` in flight now.
    pub(crate) fn running(&self, handler_id: i64) -> usize {
        let map = self.0.lock().expect("in-flight lock poisoned");
        map.get(&handler_id).map_or(0, |a| a.running)
    }

    pub(crate) fn start(&self, handler_id: i64) {
        self.0
            .lock()
            .expect("in-flight lock poisoned")
            .entry(handler_id)
            .or_default()
            .running += 1;
    }

    /// An attempt ended; `answered_at` when the handler answered it in time
    /// (any status), rather than timing out or failing to connect.
    pub(crate) fn finish(&self, handler_id: i64, answered_at: Option<Instant>) {
        let mut map = self.0.lock().expect("in-flight lock poisoned");
        if let Some(a) = map.get_mut(&handler_id) {
            a.running = a.running.saturating_sub(1);
            if answered_at.is_some() {
                a.last_finished = answered_at;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(shares: &Shares) -> HashMap<i64, u32> {
        shares.handlers.iter().copied().collect()
    }

    #[test]
    fn above_the_reserve_every_handler_may_fill_its_cap_from_the_slots_above_it() {
        let in_flight = InFlight::default();
        let now = Instant::now();
        // 1,024 slots: the reserve is 256.
        let shares = in_flight
            .shares([1, 2].into_iter(), 1024, 1024, 128, now)
            .unwrap();
        assert_eq!(shares.limit, CLAIM_BATCH);
        assert_eq!(rooms(&shares), HashMap::from([(1, 128), (2, 128)]));
        // Only the 44 slots above the reserve are handed out.
        let shares = in_flight
            .shares([1].into_iter(), 300, 1024, 128, now)
            .unwrap();
        assert_eq!((shares.limit, rooms(&shares)[&1]), (44, 44));
    }

    #[test]
    fn within_the_reserve_newcomers_get_eight_and_answering_handlers_their_cap() {
        let in_flight = InFlight::default();
        let start = Instant::now();
        for _ in 0..3 {
            in_flight.start(7);
        }
        in_flight.finish(7, Some(start));
        // Handler 7 answered: two still running, room up to its cap.
        let shares = in_flight
            .shares([7, 8].into_iter(), 200, 1024, 128, start)
            .unwrap();
        assert_eq!(shares.limit, 200);
        assert_eq!(rooms(&shares), HashMap::from([(7, 126), (8, 8)]));
        // Exactly at the reserve counts as within it.
        let shares = in_flight
            .shares([8].into_iter(), 256, 1024, 128, start)
            .unwrap();
        assert_eq!(rooms(&shares)[&8], 8);
        // No free slot: nothing to claim.
        assert!(
            in_flight
                .shares([8].into_iter(), 0, 1024, 128, start)
                .is_none()
        );
    }

    #[test]
    fn a_handler_stops_counting_as_answering_one_second_after_its_last_answer() {
        let in_flight = InFlight::default();
        let start = Instant::now();
        in_flight.start(7);
        in_flight.start(7);
        in_flight.finish(7, Some(start));
        let room = |at| {
            rooms(
                &in_flight
                    .shares([7].into_iter(), 200, 1024, 128, at)
                    .unwrap(),
            )
        };
        assert_eq!(room(start + Duration::from_millis(999))[&7], 127);
        assert_eq!(room(start + ANSWERING)[&7], 7);
        // A timed-out attempt does not count as an answer.
        in_flight.start(7);
        in_flight.finish(7, None);
        assert_eq!(room(start + ANSWERING)[&7], 7);
    }
}
