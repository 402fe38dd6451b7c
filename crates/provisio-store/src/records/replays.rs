//! The records of replay jobs: what starts one, what filters the list, and
//! a job as read back.

use time::OffsetDateTime;

/// A replay job to start: one new delivery to `handler_id` per matching
/// event, in emit order, through the normal queue.
#[derive(Debug, Clone)]
pub struct NewReplay {
    /// A ULID; its first 21 characters also start each of its deliveries' ids.
    pub id: String,
    pub handler_id: i64,
    /// Whether the handler keeps per-object order (its deliveries then wait
    /// behind the object's open ones).
    pub ordered: bool,
    pub filter: ReplayFilter,
    /// Events created after this instant are not resent: they were routed
    /// to the handler (or not) when they were emitted, after the job began.
    pub until_ms: i64,
    /// Who started it: the API token's name.
    pub created_by: String,
    pub created_at_ms: i64,
}

/// Which stored events a replay resends.
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    /// The event type or pattern (`clients.*`); any when `None`.
    pub events_id: Option<provisio_core::catalog::EventPattern>,
    /// The object's key (its id as text); any when `None`.
    pub object_key: Option<String>,
    /// Events created at or after this instant.
    pub from_ms: Option<i64>,
    /// Events created at or before this instant.
    pub to_ms: Option<i64>,
    pub status: provisio_core::replay::ReplayStatus,
    /// For each object only its most recent matching event (a resync).
    pub latest_per_object: bool,
}

/// A replay job and its progress, counted from its deliveries.
#[derive(Debug, Clone)]
pub struct ReplayRecord {
    pub id: String,
    pub handler_id: i64,
    /// The filter as given (the pattern's text, the object's key).
    pub events_id: Option<String>,
    pub object_id: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub status: provisio_core::replay::ReplayStatus,
    pub latest_per_object: bool,
    pub state: provisio_core::replay::ReplayState,
    /// Events that matched the filter.
    pub matched: u64,
    /// Deliveries the job queued: the matched events but those that already
    /// had an unfinished delivery to the handler from a running replay.
    pub queued: u64,
    /// Its deliveries that succeeded.
    pub sent: u64,
    /// Its deliveries that failed after their last attempt.
    pub failed: u64,
    /// Its deliveries a cancel stopped before they were sent.
    pub cancelled: u64,
    /// Its deliveries not finished yet (waiting, due, or in flight).
    pub remaining: u64,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    /// When it was cancelled, or when its last delivery finished.
    pub finished_at: Option<OffsetDateTime>,
}
