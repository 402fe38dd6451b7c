//! Pace per handler: a handler's `rate_limit` spreads its calls evenly, one
//! every 1/N s, with at most a tenth of a second's worth at once after a
//! quiet spell. Its deliveries beyond that wait in the queue, due, costing
//! nobody else (the claim simply gives the handler less room).

use std::collections::HashMap;

/// Each rate-limited handler's next free call time, on this node.
#[derive(Default)]
pub(crate) struct Pacer(HashMap<i64, Slot>);

struct Slot {
    /// When the handler may start its next call (Unix µs).
    next_us: i64,
    /// More is probably due: the last claim took all it was given, or the
    /// handler was left out of a claim for its pace. The dispatcher wakes at
    /// `next_us` for it, since no finishing attempt may be left to.
    backlog: bool,
}

fn interval_us(per_second: u32) -> i64 {
    1_000_000 / i64::from(per_second.max(1))
}

impl Pacer {
    /// How many calls a handler limited to `per_second` may start at `now_us`.
    /// A handler held back now is looked at again once it may call.
    pub(crate) fn room(&mut self, id: i64, per_second: u32, now_us: i64) -> u32 {
        let burst = (per_second / 10).max(1);
        match self.0.get_mut(&id) {
            None => burst,
            Some(slot) if now_us < slot.next_us => {
                slot.backlog = true;
                0
            }
            Some(slot) => {
                let owed = 1 + (now_us - slot.next_us) / interval_us(per_second);
                burst.min(owed.min(i64::from(u32::MAX)) as u32)
            }
        }
    }

    /// A claim at `now_us` started `taken` of the `room` calls it was given.
    pub(crate) fn took(&mut self, id: i64, per_second: u32, now_us: i64, taken: u32, room: u32) {
        let slot = self.0.entry(id).or_insert(Slot {
            next_us: now_us,
            backlog: false,
        });
        slot.next_us = slot.next_us.max(now_us) + i64::from(taken) * interval_us(per_second);
        slot.backlog = taken >= room;
    }

    /// When a handler held back by its pace may call again (Unix ms).
    pub(crate) fn next_wake_ms(&self) -> Option<i64> {
        self.0
            .values()
            .filter(|s| s.backlog)
            .map(|s| (s.next_us + 999) / 1000)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spread_one_interval_apart_after_a_small_burst() {
        let mut pacer = Pacer::default();
        // 20/s: one every 50 ms, at most 2 at once.
        assert_eq!(pacer.room(1, 20, 0), 2);
        pacer.took(1, 20, 0, 2, 2);
        assert_eq!(pacer.room(1, 20, 99_999), 0);
        assert_eq!(pacer.next_wake_ms(), Some(100));
        assert_eq!(pacer.room(1, 20, 100_000), 1);
        pacer.took(1, 20, 100_000, 1, 1);
        assert_eq!(pacer.room(1, 20, 120_000), 0);
        // After a quiet spell, no more than the burst.
        assert_eq!(pacer.room(1, 20, 10_000_000), 2);
        // Nothing left to send: no wake-up for it.
        pacer.took(1, 20, 10_000_000, 0, 2);
        assert_eq!(pacer.next_wake_ms(), None);
    }

    #[test]
    fn a_handler_held_back_by_its_pace_is_woken_for_once_it_may_call() {
        let mut pacer = Pacer::default();
        // The claim found one due of the two it could start: nothing more
        // was due, so no wake-up.
        pacer.took(1, 20, 0, 1, 2);
        assert_eq!(pacer.next_wake_ms(), None);
        // An emit arrives before the next call is allowed: the handler is
        // left out of this claim, and its next free time is a wake-up (its
        // one attempt may have finished already, and nothing else would).
        assert_eq!(pacer.room(1, 20, 10_000), 0);
        assert_eq!(pacer.next_wake_ms(), Some(50));
        assert_eq!(pacer.room(1, 20, 50_000), 1);
    }
}
