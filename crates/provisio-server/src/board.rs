//! The handlers' health and queue figures, read through one snapshot that
//! the handler API, the web section (overview and handlers table) and
//! `/metrics` share.
//!
//! A snapshot is [`Store::handler_figures`](provisio_store::Store::handler_figures):
//! grouped counts that indexes answer, but that still read one index entry
//! per unfinished delivery and per outcome in the window. So the board
//! decides how fresh a read must be from how much the last snapshot counted:
//!
//! - **small** (under [`LARGE`] deliveries and outcomes counted): every read
//!   sees every change committed before it arrived. A read refreshes, unless
//!   a refresh that started after it arrived is already there; concurrent
//!   reads share one refresh.
//! - **large** (a big queue or a busy day): a snapshot serves reads for
//!   `max(1 s, 10 × what it cost)` after it started, so refreshing takes at
//!   most a tenth of one database connection's time however often pages
//!   and scrapers ask. A read that finds it older starts a refresh in the
//!   background and waits for it at most its own bound (the API and pages
//!   longer than `/metrics`); if the refresh is not done by then, it is
//!   answered from the older snapshot (`as_of_ms` says how old).
//!
//! The size, not the time a refresh took, picks the rule: a first refresh on
//! cold connections, or one on a busy machine, is slow without the data
//! being large, and must not make small reads stale.
//!
//! Nothing refreshes while nobody reads: an idle server makes no query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisio_core::handler::Handler;
use provisio_engine::Clock;
use provisio_store::{Figures, HandlerFigures, Store, StoreResult};
use serde::Serialize;
use tokio::sync::{Mutex, watch};

/// Counting fewer rows than this (unfinished deliveries plus outcomes in
/// the window) is cheap enough to do for every read: a few milliseconds.
pub const LARGE: u64 = 50_000;
/// A large snapshot serves reads for at least this long.
const MIN_REUSE: Duration = Duration::from_secs(1);
/// ... and for at least this many times what it cost.
const REUSE_FACTOR: u32 = 10;
/// The window of the counts: the last 24 hours.
pub const WINDOW_MS: i64 = 24 * HOUR_MS;
/// The overview's bars are hours.
pub const HOUR_MS: i64 = 3_600_000;

/// How long a page or API read waits for a refresh it started.
pub const PAGE_WAIT: Duration = Duration::from_millis(50);
/// How long a `/metrics` scrape waits for one.
pub const SCRAPE_WAIT: Duration = Duration::from_millis(20);

/// Every handler's figures at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub figures: Figures,
    /// The clock's time when the refresh started (Unix ms).
    pub as_of_ms: i64,
    /// Counts are of outcomes since this instant (`as_of_ms` − 24 h).
    pub since_ms: i64,
    started: Instant,
    took: Duration,
}

impl Snapshot {
    /// How long after it started this snapshot may answer a read.
    fn reuse_for(&self) -> Duration {
        if self.large() {
            MIN_REUSE.max(self.took * REUSE_FACTOR)
        } else {
            Duration::ZERO
        }
    }

    /// Whether a read that arrived at `arrival` may be answered from it.
    fn serves(&self, arrival: Instant) -> bool {
        self.started + self.reuse_for() >= arrival
    }

    /// Whether it counted [`LARGE`] rows or more.
    fn large(&self) -> bool {
        let counted: u64 = self
            .figures
            .values()
            .map(|f| f.open.total() + f.succeeded() + f.failed())
            .sum();
        counted >= LARGE
    }

    /// The handler's figures (a handler created after the snapshot has none yet).
    pub fn of(&self, id: i64) -> Option<&HandlerFigures> {
        self.figures.get(&id)
    }

    /// Handler `h`'s health and queue.
    pub fn view(&self, h: &Handler) -> (Health, Queue) {
        view(h.pause.is_some(), self.of(h.id), self.since_ms)
    }

    /// The queue over every handler, each paused one's pending deliveries
    /// counted as held.
    pub fn total_queue(&self) -> Queue {
        let mut total = Queue::default();
        for f in self.figures.values() {
            total.add(&Queue::of(f, f.paused));
        }
        total
    }
}

/// A handler's state, as the API and the pages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Its newest outcome is a success, or it has nothing to report but work queued.
    Ok,
    /// Its newest outcome is a failure: a delivery that failed for good, or a
    /// failed attempt (one that will be retried too) after its last success.
    Failing,
    /// Nothing ended in the last 24 hours and nothing is queued.
    Idle,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Failing => "failing",
            HealthState::Idle => "idle",
        }
    }
}

/// How a handler's deliveries (after stage) or calls (before stage) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    /// Deliveries that succeeded in the window, each once however many
    /// attempts it took (before stage: calls).
    pub succeeded: u64,
    /// Of the succeeded, before-stage calls that forbade the action.
    pub forbidden: u64,
    /// Deliveries that used up their attempts: failed in the window, or
    /// blocked now (before stage: failed calls).
    pub failed: u64,
}

/// A handler's unfinished deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queue {
    pub pending: u64,
    pub waiting: u64,
    /// Pending while the handler is paused.
    pub held: u64,
    pub blocked: u64,
    pub oldest_ms: Option<i64>,
}

impl Queue {
    fn of(f: &HandlerFigures, paused: bool) -> Self {
        let o = &f.open;
        Queue {
            pending: if paused { 0 } else { o.pending },
            held: if paused { o.pending } else { 0 },
            waiting: o.waiting,
            blocked: o.blocked,
            oldest_ms: o.oldest_created_ms,
        }
    }

    pub fn total(&self) -> u64 {
        self.pending + self.waiting + self.held + self.blocked
    }

    fn add(&mut self, other: &Queue) {
        self.pending += other.pending;
        self.waiting += other.waiting;
        self.held += other.held;
        self.blocked += other.blocked;
        self.oldest_ms = match (self.oldest_ms, other.oldest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The state rule: idle when nothing ended in the window and nothing is
/// queued; failing when the newest failure is newer than the newest
/// success (or there was never one); ok otherwise.
pub fn view(paused: bool, figures: Option<&HandlerFigures>, since_ms: i64) -> (Health, Queue) {
    let none = HandlerFigures::default();
    let f = figures.unwrap_or(&none);
    let queue = Queue::of(f, paused);
    let succeeded = f.succeeded();
    // A blocked delivery used up its attempts as a failed one did; it
    // counts while it blocks its line.
    let failed = f.failed() + f.open.blocked;
    let failed_lately = f.last_failure_ms.is_some_and(|t| t >= since_ms);
    let state = if succeeded == 0 && failed == 0 && !failed_lately && queue.total() == 0 {
        HealthState::Idle
    } else if f.last_failure_ms > f.last_success_ms {
        HealthState::Failing
    } else {
        HealthState::Ok
    };
    let health = Health {
        state,
        last_success_ms: f.last_success_ms,
        last_failure_ms: f.last_failure_ms,
        succeeded,
        forbidden: f.forbidden(),
        failed,
    };
    (health, queue)
}

/// The shared snapshot and how to refresh it; cheap to clone.
#[derive(Clone)]
pub struct Board(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    clock: Clock,
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    /// Held while a refresh runs: one at a time.
    refreshing: Arc<Mutex<()>>,
}

impl Board {
    /// Takes the first snapshot in the background when a runtime is there,
    /// so the first page after a start does not wait for a large count.
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        let board = Board(Arc::new(Inner {
            store,
            clock,
            latest: watch::Sender::new(None),
            refreshing: Arc::new(Mutex::new(())),
        }));
        if tokio::runtime::Handle::try_current().is_ok() {
            board.refresh_in_background();
        }
        board
    }

    /// A snapshot that may answer a read arriving now (see the module's
    /// rules), waiting at most `wait` for a refresh when the last one was
    /// large.
    pub async fn read(&self, wait: Duration) -> StoreResult<Arc<Snapshot>> {
        let arrival = Instant::now();
        let current = self.0.latest.borrow().clone();
        match current {
            Some(s) if s.serves(arrival) => Ok(s),
            Some(stale) if stale.large() => {
                self.refresh_in_background();
                let mut rx = self.0.latest.subscribe();
                let fresh = tokio::time::timeout(
                    wait,
                    rx.wait_for(|s| s.as_ref().is_some_and(|s| s.serves(arrival))),
                )
                .await;
                Ok(match fresh {
                    Ok(Ok(s)) => s.clone().unwrap_or(stale),
                    _ => stale,
                })
            }
            _ => self.refresh(arrival).await,
        }
    }

    /// Refreshes unless a refresh that serves `arrival` lands while this one
    /// waits for its turn.
    async fn refresh(&self, arrival: Instant) -> StoreResult<Arc<Snapshot>> {
        let _turn = self.0.refreshing.lock().await;
        if let Some(s) = self.0.latest.borrow().clone().filter(|s| s.serves(arrival)) {
            return Ok(s);
        }
        self.0.take().await
    }

    fn refresh_in_background(&self) {
        let Ok(turn) = self.0.refreshing.clone().try_lock_owned() else {
            return; // one is running; the reader waits for it
        };
        let inner = self.0.clone();
        tokio::spawn(async move {
            let _turn = turn;
            if let Err(err) = inner.take().await {
                tracing::warn!(error = %err, "the handlers' figures could not be refreshed");
            }
        });
    }
}

impl Inner {
    /// Reads the figures and publishes them.
    async fn take(&self) -> StoreResult<Arc<Snapshot>> {
        let started = Instant::now();
        let as_of_ms = self.clock.now_ms();
        let since_ms = as_of_ms - WINDOW_MS;
        let figures = self.store.handler_figures(since_ms, HOUR_MS).await?;
        let snapshot = Arc::new(Snapshot {
            figures,
            as_of_ms,
            since_ms,
            started,
            took: started.elapsed(),
        });
        tracing::debug!(
            took_ms = snapshot.took.as_millis() as u64,
            "handler figures refreshed"
        );
        self.latest.send_replace(Some(snapshot.clone()));
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisio_store::{OpenCounts, OutcomeBucket};

    fn figures(
        open: OpenCounts,
        ended: (u64, u64),
        last: (Option<i64>, Option<i64>),
    ) -> HandlerFigures {
        HandlerFigures {
            open,
            buckets: vec![OutcomeBucket {
                start_ms: 0,
                succeeded: ended.0,
                forbidden: 0,
                failed: ended.1,
            }],
            last_success_ms: last.0,
            last_failure_ms: last.1,
            paused: false,
        }
    }

    #[test]
    fn the_newest_outcome_decides_between_ok_and_failing() {
        let ok = figures(OpenCounts::default(), (3, 1), (Some(200), Some(100)));
        assert_eq!(view(false, Some(&ok), 0).0.state, HealthState::Ok);
        let failing = figures(OpenCounts::default(), (3, 1), (Some(100), Some(200)));
        assert_eq!(view(false, Some(&failing), 0).0.state, HealthState::Failing);
        // A retried attempt failed (nothing finished yet): failing, and its
        // delivery still queued.
        let retrying = figures(
            OpenCounts {
                pending: 1,
                ..OpenCounts::default()
            },
            (0, 0),
            (None, Some(50)),
        );
        let (health, queue) = view(false, Some(&retrying), 0);
        assert_eq!(
            (health.state, health.failed, queue.pending),
            (HealthState::Failing, 0, 1)
        );
    }

    #[test]
    fn idle_is_nothing_ended_lately_and_nothing_queued() {
        assert_eq!(view(false, None, 0).0.state, HealthState::Idle);
        // It failed long ago, nothing since: idle, not failing.
        let old = figures(OpenCounts::default(), (0, 0), (None, Some(10)));
        assert_eq!(view(false, Some(&old), 1_000).0.state, HealthState::Idle);
        // Queued but never tried (paused): not idle.
        let queued = figures(
            OpenCounts {
                pending: 2,
                ..OpenCounts::default()
            },
            (0, 0),
            (None, None),
        );
        let (health, queue) = view(true, Some(&queued), 0);
        assert_eq!(
            (health.state, queue.held, queue.pending),
            (HealthState::Ok, 2, 0)
        );
    }

    #[test]
    fn a_blocked_delivery_counts_as_failed_while_it_blocks() {
        let blocked = figures(
            OpenCounts {
                blocked: 1,
                waiting: 4,
                ..OpenCounts::default()
            },
            (2, 1),
            (Some(10), Some(20)),
        );
        let (health, queue) = view(false, Some(&blocked), 0);
        assert_eq!((health.failed, queue.blocked, queue.waiting), (2, 1, 4));
    }
}
