//! The records the [`crate::Store`] takes and returns. They are storage's view,
//! separate from the API's wire types, so neither format leaks into the other.

use std::collections::BTreeMap;

use provisio_core::event::{DeliveryState, Event, ExecutionStatus, ObjectId, Verdict};
use provisio_core::handler::{HandlerKind, Stage, Status};
use time::OffsetDateTime;

mod replays;
pub use replays::*;

/// SHA-256 of an API token: tokens are only ever stored hashed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Compares in constant time, so response timing says nothing about how
    /// much of a guessed token matched.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub hash: TokenHash,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Which token to revoke. A name may be all digits, so a bare "3" could mean
/// the token with id 3 or the one named "3": callers say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRef<'a> {
    Id(i64),
    Name(&'a str),
}

/// A 1-based page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    pub const DEFAULT_PER_PAGE: u32 = 50;
    pub const MAX_PER_PAGE: u32 = 500;

    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.per_page)
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: Self::DEFAULT_PER_PAGE,
        }
    }
}

/// The handler list's filters (the web section's Advanced Search).
#[derive(Debug, Clone, Default)]
pub struct HandlerFilter {
    /// Handlers that fire for this event type (exact, `prefix.*` or `*`), or whose
    /// pattern is exactly this text (so `clients.*` finds the prefix handlers).
    pub events_id: Option<String>,
    pub kind: Option<HandlerKind>,
    /// When `None`, archived handlers are included only if `include_archived`.
    pub status: Option<Status>,
    pub include_archived: bool,
    pub stage: Option<Stage>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
}

/// One accepted emit: the event, its deliveries, and its idempotency key.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub idempotency: Option<Idempotency>,
    pub deliveries: Vec<NewDelivery>,
    /// The handlers whose filter the event did not pass: no delivery.
    pub filtered_out: Vec<FilteredOut>,
    pub created_at_ms: i64,
}

/// A handler whose filter an event did not pass, kept with the event so its
/// detail can say why that handler was not called.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilteredOut {
    pub handler_id: i64,
    /// Why the filter could not be evaluated (a missing key, a type
    /// mismatch); `None` when it was simply false.
    pub error: Option<String>,
}

impl NewEvent {
    /// [`NewEvent::filtered_out`] as stored: JSON, or NULL for none.
    pub(crate) fn filtered_out_json(&self) -> Option<String> {
        (!self.filtered_out.is_empty())
            .then(|| serde_json::to_string(&self.filtered_out).expect("plain fields serialize"))
    }
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is a conflict.
    pub body_hash: [u8; 32],
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub handler_id: i64,
    pub ordered: bool,
}

/// What became of one event of an [`crate::Store::emit`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitOutcome {
    Stored,
    /// The key was seen with the same body: the first answer, nothing stored.
    Replayed {
        event_id: String,
        deliveries: u32,
    },
    /// The key was seen with another body.
    KeyReused,
}

/// A request to lease due deliveries.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub now_ms: i64,
    pub lease_until_ms: i64,
    /// The most deliveries leased in all, oldest due first.
    pub limit: u32,
    /// The handlers whose due deliveries may be leased, each with how many
    /// (its room: the dispatcher's fair share of its in-flight slots). A
    /// handler not listed is not looked at, so one with no room costs nothing.
    pub handlers: &'a [(i64, u32)],
}

/// What an emit batch stored, and what the claim made in its transaction
/// leased.
#[derive(Debug, Clone, Default)]
pub struct Emitted {
    /// Per event, in the batch's order.
    pub outcomes: Vec<EmitOutcome>,
    /// `None` when no claim was asked for.
    pub claimed: Option<Claimed>,
}

/// What a claim leased, and when work is next due after it.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// Oldest due first.
    pub deliveries: Vec<ClaimedDelivery>,
    /// After the claim, when the next pending delivery of a running handler
    /// becomes due or its lease lapses ([`Store::next_due_ms`](crate::Store::next_due_ms));
    /// `None` when nothing is pending, or when the claim took its whole
    /// limit (more may be due at once: claim again).
    pub next_due_ms: Option<i64>,
}

/// A leased delivery with everything needed to attempt it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Storage order; per-object ordering follows it.
    pub seq: i64,
    pub id: String,
    pub handler_id: i64,
    /// Attempts made so far, over the delivery's whole life.
    pub attempts: u32,
    /// `attempts` when the current round began (0, or the count at a redeliver).
    pub round_start: u32,
    pub event: Event,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    Succeeded,
    RetryAt {
        at_ms: i64,
    },
    Failed,
    /// Used up its attempts and holds its object's line (`blocked`): an
    /// ordered delivery of an `on_exhausted: block` handler. Its successors
    /// are not released.
    Blocked,
}

impl DeliveryNext {
    /// Whether the delivery is done, so the next of its line may go.
    pub fn closes_line(self) -> bool {
        matches!(self, DeliveryNext::Succeeded | DeliveryNext::Failed)
    }
}

/// What a [`crate::Store::record`] batch moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordOutcome {
    /// Waiting deliveries that became due because the one before finished.
    pub released: u64,
    /// Waiting deliveries of conflating handlers replaced by a newer one.
    pub superseded: u64,
}

/// One finished attempt (or a delivery given up without one).
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_seq: i64,
    pub handler_id: i64,
    pub object_key: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    pub next: DeliveryNext,
    /// The handler conflated when the attempt started: a finished delivery's
    /// release then supersedes the older waiting ones of its line (the store
    /// checks the handler's setting again; without this, a record batch
    /// skips the conflation step).
    pub conflate: bool,
    /// The receiver asked to slow down (429 or 503 with `Retry-After`): the
    /// attempt keeps its number but does not use up the delivery's round.
    pub spare_round: bool,
    pub finished_at_ms: i64,
    pub last_error: Option<String>,
    /// The execution-log row; `None` when no call was made (handler gone).
    pub execution: Option<ExecutionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub handler_id: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    /// A `superseded` delivery: the newer one of its object that was sent
    /// instead.
    pub superseded_by: Option<String>,
    /// A `waiting` delivery whose line is held by a `blocked` one: that one
    /// (computed on read).
    pub blocked_by: Option<String>,
}

/// What a redeliver did ("retry now").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// A finished (or blocked) delivery starts a new round of attempts: due
    /// now, or waiting behind its object's open deliveries.
    NewRound,
    /// A pending delivery is due now instead of at its retry time.
    DueNow,
    /// A waiting delivery cannot overtake its line: the line's head, this
    /// delivery, is due now (a blocked head is retried), and the waiting one
    /// follows it as usual.
    HeadDueNow(String),
    /// This delivery (or the head of its line) is being attempted at this
    /// moment: there is nothing to hurry.
    InFlight(String),
}

impl Redelivery {
    /// A word for the wire: `new_round`, `due_now`, `head_due_now`,
    /// `in_flight`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NewRound => "new_round",
            Self::DueNow => "due_now",
            Self::HeadDueNow(_) => "head_due_now",
            Self::InFlight(_) => "in_flight",
        }
    }

    /// The delivery that is due now because of it, if any: `id` itself or
    /// the head of its line.
    pub fn due_delivery<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        match self {
            Self::NewRound | Self::DueNow => Some(id),
            Self::HeadDueNow(head) => Some(head),
            Self::InFlight(_) => None,
        }
    }

    /// What was done, in a sentence, for delivery `id` now in `state`.
    pub fn describe(&self, state: DeliveryState) -> String {
        match (self, state) {
            (Self::NewRound, DeliveryState::Waiting) => "Queued again for a new round of attempts; it waits behind its object's earlier open deliveries.".into(),
            (Self::NewRound, _) => "Queued again for a new round of attempts, due now.".into(),
            (Self::DueNow, DeliveryState::Held) => "It is due now, and goes as soon as its handler is resumed.".into(),
            (Self::DueNow, _) => "It is due now instead of at its retry time.".into(),
            (Self::HeadDueNow(head), _) => format!(
                "It waits behind delivery {head} of the same object and may not overtake it: {head} is due now, and this one follows it."
            ),
            (Self::InFlight(head), _) => format!(
                "Delivery {head} is being attempted at this moment; nothing was changed."
            ),
        }
    }
}

/// What was sent: the URL (or script path and arguments), headers and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestRecord {
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// One row of the execution log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// Assigned by storage; ignored on insert.
    pub id: i64,
    pub delivery_id: Option<String>,
    pub handler_id: i64,
    /// The handler's name when it ran, kept after the handler is renamed or deleted.
    pub handler_name: String,
    pub event_id: Option<String>,
    pub events_id: String,
    pub object_id: ObjectId,
    pub stage: Stage,
    pub attempt: u32,
    pub status: ExecutionStatus,
    pub started_at: OffsetDateTime,
    pub duration_ms: u32,
    pub request: RequestRecord,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    /// True when the stored response body was cut at the cap.
    pub response_truncated: bool,
    pub error: Option<String>,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Before stage: the data as the handler left it, when it changed it.
    pub data_after: Option<String>,
    /// A call made by a handler test, not by a delivery or a before chain.
    pub test: bool,
    /// Before stage: what the call decided; `None` after the stage (and for
    /// rows logged before verdicts were kept).
    pub verdict: Option<Verdict>,
}

impl ExecutionRecord {
    /// A call to a script, not an HTTP request: HTTP targets are always
    /// `http(s)://` URLs, script targets paths inside the scripts directory.
    /// An interrupted attempt has no target and counts as neither.
    pub fn is_script(&self) -> bool {
        !self.request.target.is_empty() && !self.request.target.contains("://")
    }

    /// A script's arguments, as recorded with the call.
    pub fn script_args(&self) -> Vec<String> {
        self.request
            .headers
            .get("args")
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default()
    }
}

/// The execution log's filters.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub handler_id: Option<i64>,
    pub events_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub stage: Option<Stage>,
    pub object_id: Option<String>,
    pub delivery_id: Option<String>,
    pub event_id: Option<String>,
    /// Substring of the request body.
    pub data: Option<String>,
    /// Substring of the error text.
    pub error: Option<String>,
    /// Substring of the stored response body (a script's output).
    pub response: Option<String>,
    pub verdict: Option<Verdict>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Calls made for this replay job's deliveries.
    pub replay_id: Option<String>,
}

impl ExecutionFilter {
    /// A text search (`data`, `error`, `response`): it reads only
    /// [`LOG_TEXT_WINDOW`](crate::LOG_TEXT_WINDOW) executions, back from the
    /// newest or from `to_ms`.
    pub fn searches_text(&self) -> bool {
        [&self.data, &self.error, &self.response]
            .iter()
            .any(|v| v.as_deref().is_some_and(|t| !t.is_empty()))
    }
}

/// A web section session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_id: i64,
    /// The token's name: who acts in the web section (a skip records it).
    /// Read from the token; ignored when a session is created.
    pub token_name: String,
    /// The anti-CSRF token every form of this session carries.
    pub csrf: String,
    pub expires_at_ms: i64,
}

/// A change of a handler's pause. The automatic ones are conditional, so
/// they never undo what an operator did meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseChange<'a> {
    /// The operator pauses (reason `operator`), whatever the state; an
    /// automatic pause becomes the operator's, and probing stops.
    Operator { at_ms: i64 },
    /// The automatic pause trips: only a running handler.
    Automatic {
        reason: &'a str,
        at_ms: i64,
        /// When the first probe is due.
        probe_at_ms: i64,
    },
    /// The operator resumes, whatever the state.
    Resume,
    /// A probe succeeded: only a handler still paused automatically.
    SelfResume,
}

/// The queue's size, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Deliveries not yet finished (`pending`, `waiting` or `blocked`).
    pub unfinished: u64,
    /// When the oldest unfinished delivery was created.
    pub oldest_created_ms: Option<i64>,
}
