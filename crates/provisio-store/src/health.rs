//! The figures the operator views show per handler (its queue, and how its
//! deliveries or calls ended over a window), as read by
//! [`Store::handler_figures`](crate::Store::handler_figures). The queries are
//! in `shared/health.rs`; the server caches what they return.

use std::collections::HashMap;

/// A handler's unfinished deliveries by stored state. `held` is not stored:
/// it is the `pending` count of a paused handler, decided by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenCounts {
    pub pending: u64,
    pub waiting: u64,
    pub blocked: u64,
    /// When the oldest unfinished delivery (in emit order) was created.
    pub oldest_created_ms: Option<i64>,
}

impl OpenCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.waiting + self.blocked
    }
}

/// How many deliveries (after stage) or calls (before stage) ended in one
/// bucket of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeBucket {
    pub start_ms: i64,
    pub succeeded: u64,
    /// Of the succeeded, before-stage calls that forbade the action (they
    /// answered, so they succeeded as calls; the operator counts them apart).
    pub forbidden: u64,
    pub failed: u64,
}

/// One handler's figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandlerFigures {
    pub open: OpenCounts,
    /// Ended in the window, oldest bucket first, only buckets with outcomes:
    /// deliveries that finished (`success` or `failed`, each counted once
    /// however many attempts it took) and before-stage calls.
    pub buckets: Vec<OutcomeBucket>,
    /// The newest delivery that succeeded, or before-stage call.
    pub last_success_ms: Option<i64>,
    /// The newest failure: a delivery that failed for good, or any failed
    /// call (an attempt that will be retried too).
    pub last_failure_ms: Option<i64>,
    /// Paused when the figures were read (its pending deliveries are held).
    pub paused: bool,
}

impl HandlerFigures {
    pub fn succeeded(&self) -> u64 {
        self.buckets.iter().map(|b| b.succeeded).sum()
    }

    pub fn forbidden(&self) -> u64 {
        self.buckets.iter().map(|b| b.forbidden).sum()
    }

    pub fn failed(&self) -> u64 {
        self.buckets.iter().map(|b| b.failed).sum()
    }
}

/// Every handler's figures, by handler id.
pub type Figures = HashMap<i64, HandlerFigures>;
