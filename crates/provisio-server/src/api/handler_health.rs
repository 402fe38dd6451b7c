//! A handler's queue and health as the API shows them: the wire form of the
//! board's snapshot (`crate::board`), part of every handler read.

use provisio_core::timefmt::from_millis;
use serde::Serialize;
use utoipa::ToSchema;

use super::ts;
use crate::board::{Health, HealthState, Queue};

/// A handler's unfinished deliveries: `pending` (due or being attempted),
/// `held` (pending while the handler is paused), `waiting` (behind an
/// earlier one of the same object), `blocked` (behind an exhausted one).
/// Like `health`, read from a snapshot shared by every reader: exact while
/// it counts fewer than 50,000 deliveries and outcomes; beyond, up to
/// max(1 s, 10 × what counting costs) old.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct QueueOut {
    pub pending: u64,
    pub held: u64,
    pub waiting: u64,
    pub blocked: u64,
    /// When the oldest of them was created; null when there is none.
    pub oldest_at: Option<String>,
}

impl From<Queue> for QueueOut {
    fn from(q: Queue) -> Self {
        Self {
            pending: q.pending,
            held: q.held,
            waiting: q.waiting,
            blocked: q.blocked,
            oldest_at: q.oldest_ms.map(at),
        }
    }
}

/// How a handler's deliveries ended in the last 24 hours, each counted once
/// however many attempts it took (a before-stage handler's: its calls).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// `failing` when its newest failure (a delivery that failed for good,
    /// or a failed attempt, even one that will be retried) is newer than its
    /// newest success; `idle` when nothing ended in 24 hours and nothing is
    /// queued; `ok` otherwise.
    pub state: HealthState,
    /// When a delivery (before stage: a call) last succeeded.
    pub last_success_at: Option<String>,
    /// When a call last failed, or a delivery failed for good.
    pub last_failure_at: Option<String>,
    /// Deliveries that succeeded in the last 24 hours (before stage: calls
    /// that answered, `forbidden_24h` of them refusing the action).
    pub succeeded_24h: u64,
    /// Before-stage calls in the last 24 hours that forbade the action
    /// (counted in `succeeded_24h` too: the call itself worked); 0 after.
    pub forbidden_24h: u64,
    /// Deliveries that used up their attempts: failed in the last 24 hours,
    /// or blocking their object's line now.
    pub failed_24h: u64,
}

impl From<Health> for HealthOut {
    fn from(h: Health) -> Self {
        Self {
            state: h.state,
            last_success_at: h.last_success_ms.map(at),
            last_failure_at: h.last_failure_ms.map(at),
            succeeded_24h: h.succeeded,
            forbidden_24h: h.forbidden,
            failed_24h: h.failed,
        }
    }
}

fn at(ms: i64) -> String {
    ts(from_millis(ms))
}
