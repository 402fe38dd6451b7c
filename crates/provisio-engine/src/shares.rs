//! Fair shares of the dispatcher's in-flight slots. A handler whose receiver
//! hangs holds its attempts until their timeout; a quarter of the slots is
//! kept for handlers that answer, so a dead target costs only its own
//! handler (ARCHITECTURE.md, "Fair shares of the in-flight slots").

use std::collections::{HashMap, HashSet};
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
    /// No more than the reserve was free: who may claim depends on how
    /// many slots are, so any finished attempt may let another in.
    pub(crate) reserve_in_use: bool,
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
            reserve_in_use: within_reserve,
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

/// Whose finished attempts may let the dispatcher claim what it left out
/// of its last claim: anyone's, when slots ran short (none free, or the
/// reserve in use); a handler's own, when its own cap alone held it back.
/// A handler held back by its pace is not here: the pacer wakes the
/// dispatcher for it.
#[derive(Default)]
pub(crate) struct Starved(Mutex<LeftOut>);

#[derive(Default)]
struct LeftOut {
    anyone: bool,
    handlers: HashSet<i64>,
}

impl Starved {
    pub(crate) fn set(&self, anyone: bool, handlers: HashSet<i64>) {
        *self.0.lock().expect("starved lock poisoned") = LeftOut { anyone, handlers };
    }

    /// Whether attempts of these handlers finishing may let it claim more.
    pub(crate) fn eased_by(&self, mut finished: impl Iterator<Item = i64>) -> bool {
        let left = self.0.lock().expect("starved lock poisoned");
        left.anyone || (!left.handlers.is_empty() && finished.any(|id| left.handlers.contains(&id)))
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
        assert!(!shares.reserve_in_use);
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
        assert!(shares.reserve_in_use);
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

    #[test]
    fn only_the_finishes_that_can_ease_a_starved_dispatcher_wake_it() {
        let starved = Starved::default();
        assert!(!starved.eased_by([1].into_iter()), "nothing left out");
        // Handler 1 held back by its own cap: only its own attempts matter.
        starved.set(false, HashSet::from([1]));
        assert!(!starved.eased_by([2, 3].into_iter()));
        assert!(starved.eased_by([2, 1].into_iter()));
        // Slots ran short: any finish may let someone in.
        starved.set(true, HashSet::new());
        assert!(starved.eased_by([2].into_iter()));
        starved.set(false, HashSet::new());
        assert!(!starved.eased_by([2].into_iter()));
    }
}
