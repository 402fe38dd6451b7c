//! provisio's storage: the [`Store`] trait every backend implements, the records
//! it takes and returns, and the two backends: embedded SQLite and PostgreSQL.
//!
//! # Layout
//!
//! - [`Store`] and its records (this file): the whole persistence surface. The
//!   engine and the server only ever see `Arc<dyn Store>`, so a backend is picked
//!   once at start-up from the database URL and nothing above it changes.
//! - `shared`: the store's core, written once for both SQL dialects: every
//!   statement that differs only in its placeholders (tokens, the catalog,
//!   handlers, the execution log, sessions, the queue's reads, settling
//!   interrupted attempts, replay jobs, queue statistics, retention), generic over the
//!   database, and the `impl_store!` that maps the trait onto it.
//! - [`sqlite`] and [`postgres`]: only what each database does its own way,
//!   in the same files: `mod.rs` (connecting, migrations under
//!   `migrations/<backend>`, the dialect: pragmas and write transactions on
//!   SQLite, the `LISTEN/NOTIFY` change feed on PostgreSQL), `queue.rs`
//!   (emit and record batches, claims, locks, a replay job's
//!   start and cancel under the locks) and `upkeep.rs`
//!   (p95 durations). SQLite serves one node per database; PostgreSQL any
//!   number, with changes announced to all ([`Store::watch`]).
//!   `postgres::scratch` (throwaway databases for tests) is built only with
//!   the `test-support` feature.
//! - `rows`, `query` and `plan`: row decoding, query pieces and emit-batch
//!   planning both backends share.
//!
//! Batching lives above this trait (the engine collects emits and attempt
//! results); each batch method here commits its whole slice in one transaction.

mod count;
mod health;
mod plan;
pub mod postgres;
mod query;
mod records;
mod rows;
mod shared;
pub mod sqlite;

pub use count::{LogCount, thousands};
pub use health::*;
pub use records::*;

/// A log list counts its matches up to this many: past it, the count says
/// "more than" instead of reading every matching row (at a million rows an
/// exact count of a broad filter costs a scan).
pub const LOG_COUNT_LIMIT: u64 = 1_000;

/// A text search of the log (`data`, `error`, `response`) reads only this
/// many executions (by id), back from the newest or from the newest up to the
/// filter's `to`: a substring search has no index, and a bounded scan answers
/// in tens of milliseconds at any log size. Answers say so.
pub const LOG_TEXT_WINDOW: u64 = 100_000;

use async_trait::async_trait;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit; the message names what clashed.
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite refused, on the queue's write thread (`sqlite/direct.rs`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value no longer parses: a bug or a hand-edited database.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database could not be reached or dropped the connection
    /// (rather than refusing the request): worth retrying shortly, and a 503
    /// to an API caller, not a 500.
    pub fn is_unavailable(&self) -> bool {
        let err = match self {
            StoreError::Database(err) => err,
            // A full disk, an I/O error, a file that cannot be opened, or
            // a lock held past the busy timeout: none is the request's fault.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                use rusqlite::ErrorCode::*;
                return matches!(
                    failure.code,
                    DiskFull | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked
                );
            }
            _ => return false,
        };
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL reports a terminated or starting-up server with an
            // error of its own: class 08 (connection exception), 57P01-57P03
            // (admin or crash shutdown, cannot connect now), 53300 (too many
            // connections).
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }
}

/// A change another node (or this one) made that this node must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// Handlers or the event catalog changed: reload the routing table.
    Routes,
    /// New deliveries became due: wake the dispatcher.
    Work,
    /// The change feed was (re)connected and may have missed changes: reload
    /// everything and look for work.
    Resync,
}

/// Everything provisio keeps. Implementations commit each call atomically.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// True when this process is the only one using the database (SQLite,
    /// guarded by the data directory's lock). Only then may start-up treat
    /// every lease as abandoned ([`Store::settle_interrupted`]); on a shared
    /// database other nodes hold live leases.
    fn single_node(&self) -> bool;

    /// A feed of changes made through other connections, for backends shared
    /// by several nodes. `None` (the default) when this process makes every
    /// change itself and so already knows of it. The feed starts with
    /// [`StoreChange::Resync`] and repeats it after every reconnection; it
    /// ends when the receiver is dropped.
    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<StoreChange>> {
        None
    }

    // --- API tokens -------------------------------------------------------

    /// Stores a new token under a name that no live token has.
    async fn create_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord>;
    /// Sets the token called `name` to `hash`, replacing a live one of that name:
    /// how `PROVISIO_ADMIN_TOKEN` is applied on every start.
    async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord>;
    /// The live token with this hash, if any.
    async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes the one live token with this id, or with this name; false when
    /// there is none.
    async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool>;

    // --- Event catalog ----------------------------------------------------

    /// Adds the types that are missing; existing rows are left as they are.
    async fn seed_event_types(
        &self,
        types: &[provisio_core::catalog::EventType],
    ) -> StoreResult<()>;
    async fn list_event_types(&self) -> StoreResult<Vec<provisio_core::catalog::EventType>>;
    /// Adds one type; [`StoreError::Conflict`] when the id exists.
    async fn insert_event_type(
        &self,
        event_type: &provisio_core::catalog::EventType,
    ) -> StoreResult<()>;

    // --- Handlers ---------------------------------------------------------

    async fn insert_handler(
        &self,
        spec: &provisio_core::handler::HandlerSpec,
    ) -> StoreResult<provisio_core::handler::Handler>;
    async fn get_handler(&self, id: i64) -> StoreResult<Option<provisio_core::handler::Handler>>;
    /// Replaces the settings of handler `id`; [`StoreError::NotFound`] if gone.
    async fn update_handler(
        &self,
        id: i64,
        spec: &provisio_core::handler::HandlerSpec,
    ) -> StoreResult<provisio_core::handler::Handler>;
    async fn rotate_handler_secret(&self, id: i64) -> StoreResult<provisio_core::handler::Handler>;
    /// Deletes the handler and fails its unfinished deliveries (nothing would
    /// ever send them); its executions stay. False when there was no such handler.
    async fn delete_handler(&self, id: i64) -> StoreResult<bool>;
    async fn list_handlers(
        &self,
        filter: &HandlerFilter,
        page: Page,
    ) -> StoreResult<(Vec<provisio_core::handler::Handler>, u64)>;
    /// Every handler, for the engine's routing table.
    async fn all_handlers(&self) -> StoreResult<Vec<provisio_core::handler::Handler>>;
    /// Pauses or resumes handler `id` (its settings stay as they are). The
    /// handler as it now is, or `None` when it does not exist or the
    /// change's condition did not hold (an automatic change after the
    /// operator's).
    async fn change_pause(
        &self,
        id: i64,
        change: PauseChange<'_>,
    ) -> StoreResult<Option<provisio_core::handler::Handler>>;
    /// Takes the probe of an automatically paused handler that is due at
    /// `now_ms`, moving the next one to `next_ms`. True for exactly one
    /// caller, whichever node asks, so a probe is made once per interval.
    async fn take_probe(&self, id: i64, now_ms: i64, next_ms: i64) -> StoreResult<bool>;

    // --- Events and deliveries ---------------------------------------------

    /// Stores a batch of events with their deliveries in one transaction and
    /// reports, per event, whether it was stored or answered from its
    /// idempotency key. Given a claim, leases due deliveries in the same
    /// transaction, as [`Store::claim_due`] would after its commit: a lone
    /// event then costs one commit before its attempt starts, not two.
    async fn emit(&self, batch: &[NewEvent], claim: Option<&Claim<'_>>) -> StoreResult<Emitted>;
    /// Leases up to `limit` due deliveries (oldest due first) until
    /// `lease_until_ms`, no more per handler than its room. A delivery whose
    /// lease lapsed is not due until [`Store::settle_interrupted`] has logged
    /// the attempt that lease covered. Reads the next due time after it
    /// (the dispatcher's timer), in the same round trip where the backend
    /// can.
    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Claimed>;
    /// When the next pending delivery of a running (not paused) handler
    /// becomes due or its lease lapses.
    async fn next_due_ms(&self) -> StoreResult<Option<i64>>;
    /// Settles attempts whose leases end before `leases_ending_before`: their
    /// node stopped (or lost the database) before recording an outcome, so
    /// each gets an execution row with status `unknown` (it may have reached
    /// the receiver) and its delivery is due again at `now_ms`. The interrupted
    /// attempt keeps its number but does not use up the delivery's attempts.
    /// A single node settles every lease at start-up (nothing of its own is in
    /// flight then); nodes of a shared database settle lapsed ones as they
    /// find them. Returns how many were settled.
    async fn settle_interrupted(&self, now_ms: i64, leases_ending_before: i64) -> StoreResult<u64>;
    /// Records a batch in one transaction: attempt results (their execution
    /// rows, delivery states, and the release of the next delivery of each
    /// finished ordered (handler, object) queue, with conflation on handlers
    /// that conflate) and executions that belong to no delivery (before-stage
    /// calls). A `blocked` result releases nothing. Returns how many
    /// deliveries became due and how many were superseded.
    async fn record(
        &self,
        attempts: &[AttemptResult],
        executions: &[ExecutionRecord],
    ) -> StoreResult<RecordOutcome>;
    async fn get_event(
        &self,
        id: &str,
    ) -> StoreResult<Option<(provisio_core::event::Event, Vec<DeliveryRecord>)>>;
    /// The newest `limit` logged events whose type `pattern` matches, newest
    /// first.
    async fn recent_events(
        &self,
        pattern: &provisio_core::catalog::EventPattern,
        limit: u32,
    ) -> StoreResult<Vec<provisio_core::event::Event>>;
    /// The handlers whose filter the event did not pass (empty for an
    /// unknown event).
    async fn filtered_out(&self, event_id: &str) -> StoreResult<Vec<FilteredOut>>;
    /// The `waiting` deliveries of the line (handler, object) of delivery
    /// `delivery_id`, oldest first, at most `limit`: what a blocked delivery
    /// holds up.
    async fn waiting_behind(
        &self,
        delivery_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// How many deliveries are unfinished, and the age of the oldest.
    async fn queue_stats(&self) -> StoreResult<QueueStats>;
    /// "Retry now": queues a finished or blocked delivery for a fresh round
    /// of attempts (a blocked one is due at once: it heads its line), makes
    /// a pending one due now, and for a waiting one makes its line's head due
    /// now (it never overtakes). Returns the delivery as it stands and what
    /// was done. [`StoreError::NotFound`] for no such delivery.
    async fn redeliver(
        &self,
        delivery_id: &str,
        now_ms: i64,
    ) -> StoreResult<(DeliveryRecord, Redelivery)>;
    /// One delivery, as [`Store::get_event`] lists them.
    async fn get_delivery(&self, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>>;
    /// Fails a `blocked` delivery with "skipped by `who`" and moves its line
    /// on (the next waiting delivery becomes due, conflated on a conflating
    /// handler). [`StoreError::NotFound`] for no such delivery,
    /// [`StoreError::Conflict`] when it is not blocked.
    async fn skip_blocked(
        &self,
        delivery_id: &str,
        who: &str,
        now_ms: i64,
    ) -> StoreResult<(DeliveryRecord, RecordOutcome)>;
    /// For a conflating handler (a no-op for others): supersedes every
    /// unleased, never-attempted pending or waiting delivery that has a newer
    /// pending or waiting one of the same object (`superseded_by` the newest),
    /// and makes a waiting one pending where nothing open precedes it.
    /// Returns how many were superseded.
    async fn conflate_lines(&self, handler_id: i64, now_ms: i64) -> StoreResult<u64>;

    // --- Replay jobs --------------------------------------------------------

    /// Stores a replay job and, in the same transaction, queues one delivery
    /// per matching event (in emit order) that has no unfinished delivery to
    /// the handler from a running replay. [`StoreError::NotFound`] when the
    /// handler is gone.
    async fn start_replay(&self, job: &NewReplay) -> StoreResult<ReplayRecord>;
    async fn get_replay(&self, id: &str) -> StoreResult<Option<ReplayRecord>>;
    /// Newest first.
    async fn list_replays(&self, page: Page) -> StoreResult<(Vec<ReplayRecord>, u64)>;
    /// Fails the job's deliveries not yet sent (those no attempt holds) and
    /// lets the lines they held move on; returns the job and how many
    /// deliveries became due. [`StoreError::NotFound`] for an unknown job,
    /// [`StoreError::Conflict`] for one with nothing left to send.
    async fn cancel_replay(&self, id: &str, now_ms: i64) -> StoreResult<(ReplayRecord, u64)>;

    // --- Execution log ----------------------------------------------------

    /// A page of the log, newest first, and how many rows match, counted up
    /// to [`LOG_COUNT_LIMIT`] + 1 (more than the limit: "more than 1,000").
    /// A text filter reads only [`LOG_TEXT_WINDOW`] rows.
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> StoreResult<(Vec<ExecutionRecord>, u64)>;
    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>>;
    /// Every handler's figures for the operator views: its unfinished
    /// deliveries by state (and the oldest's age), what ended since
    /// `since_ms` in buckets of `bucket_ms` (deliveries, each once however
    /// many attempts it took; before-stage calls), and when it last
    /// succeeded and failed. Read from indexes only.
    async fn handler_figures(&self, since_ms: i64, bucket_ms: i64) -> StoreResult<Figures>;
    /// The p95 duration of each handler's newest `sample` calls since
    /// `since_ms` (absent: no call).
    async fn call_p95(
        &self,
        handler_ids: &[i64],
        since_ms: i64,
        sample: u32,
    ) -> StoreResult<std::collections::HashMap<i64, u32>>;

    /// Deletes up to `batch` rows of each kind older than `before_ms`:
    /// executions, finished deliveries, events left without deliveries,
    /// expired idempotency keys and sessions. Unfinished work is never touched.
    /// Returns how many rows went, so the caller can loop until nothing does.
    async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;

    // --- Web sessions -----------------------------------------------------

    async fn create_session(&self, id_hash: &[u8; 32], session: &SessionRecord) -> StoreResult<()>;
    /// The session with this id whose token is still live, expired or not
    /// (the caller tells an expired session from an unknown one).
    async fn find_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>>;
    /// Ends a session, and drops every expired one.
    async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()>;
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`] with `message`.
fn conflict_on_unique(err: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(err),
    }
}

fn now_ms() -> i64 {
    provisio_core::timefmt::to_millis(time::OffsetDateTime::now_utc())
}
