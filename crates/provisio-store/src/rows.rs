//! Turning stored rows into records, shared by both backends.
//!
//! The two schemas have the same tables and columns; only the column types'
//! spellings differ (SQLite `INTEGER` flags, PostgreSQL `BOOLEAN`), and both
//! drivers decode them into the same Rust types. [`Columns`] is the handful of
//! typed reads the decoders need, implemented once per driver's row type, so
//! each record is decoded by one function instead of one per backend.

use provisio_core::catalog::{EventPattern, EventType};
use provisio_core::event::{DeliveryState, Event, ObjectId};
use provisio_core::filter::Filter;
use provisio_core::handler::{AutoPause, Handler, HandlerSpec, Pause};
use provisio_core::request::RequestTemplate;
use provisio_core::signing::SigningSecret;
use provisio_core::timefmt::{self, from_millis};

use crate::*;

/// The typed column reads the decoders use.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, column: &str) -> StoreResult<bool>;
    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>>;

    /// A count or other small unsigned number: stored as a 64-bit integer
    /// (PostgreSQL has no unsigned types), used as `u32`.
    fn count(&self, column: &str) -> StoreResult<u32> {
        let n = self.int(column)?;
        u32::try_from(n).map_err(|_| corrupt(column, format!("{n} is out of range")))
    }
}

macro_rules! impl_columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> StoreResult<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn int(&self, column: &str) -> StoreResult<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn flag(&self, column: &str) -> StoreResult<bool> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}

impl_columns!(sqlx::sqlite::SqliteRow);
impl_columns!(sqlx::postgres::PgRow);

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

pub(crate) fn token(row: &impl Columns) -> StoreResult<TokenRecord> {
    let hash: [u8; 32] = row
        .bytes("hash")?
        .try_into()
        .map_err(|_| corrupt("token hash", "not 32 bytes"))?;
    Ok(TokenRecord {
        id: row.int("id")?,
        name: row.text("name")?,
        hash: TokenHash(hash),
        created_at: from_millis(row.int("created_at")?),
        revoked_at: row.opt_int("revoked_at")?.map(from_millis),
    })
}

pub(crate) fn event_type(row: &impl Columns) -> StoreResult<EventType> {
    Ok(EventType {
        id: row.text("id")?,
        group: row.text("group_name")?,
        description: row.text("description")?,
        empty_data: row.flag("empty_data")?,
        builtin: row.flag("builtin")?,
        example: row.opt_text("example")?,
    })
}

/// `SELECT` of every handler column, for [`handler`].
pub(crate) const HANDLER_COLUMNS: &str = "id, name, events_id, stage, status, priority, kind, target, args, headers, \
     timeout_ms, max_attempts, ordered, on_failure, event_filter, request_template, on_exhausted, conflate, \
     secret, created_at, updated_at, \
     paused_reason, paused_at, probe_at, auto_pause_failures, auto_pause_after_ms, auto_pause_probe_ms, \
     max_in_flight, rate_limit_per_second";

pub(crate) fn handler(row: &impl Columns) -> StoreResult<Handler> {
    let priority = row.int("priority")?;
    let max_in_flight = row
        .opt_int("max_in_flight")?
        .map(|n| u32::try_from(n).map_err(|_| corrupt("handler max_in_flight", n)))
        .transpose()?;
    let rate_limit = row
        .opt_int("rate_limit_per_second")?
        .map(|n| u32::try_from(n).map_err(|_| corrupt("handler rate_limit", n)))
        .transpose()?;
    let spec = HandlerSpec {
        max_in_flight,
        rate_limit,
        name: row.text("name")?,
        events_id: EventPattern::parse(&row.text("events_id")?)
            .map_err(|e| corrupt("handler events_id", e))?,
        stage: row
            .text("stage")?
            .parse()
            .map_err(|e| corrupt("handler stage", e))?,
        status: row
            .text("status")?
            .parse()
            .map_err(|e| corrupt("handler status", e))?,
        priority: i32::try_from(priority)
            .map_err(|_| corrupt("handler priority", format!("{priority} is out of range")))?,
        kind: row
            .text("kind")?
            .parse()
            .map_err(|e| corrupt("handler kind", e))?,
        target: row.text("target")?,
        args: serde_json::from_str(&row.text("args")?).map_err(|e| corrupt("handler args", e))?,
        headers: serde_json::from_str(&row.text("headers")?)
            .map_err(|e| corrupt("handler headers", e))?,
        timeout_ms: row.count("timeout_ms")?,
        max_attempts: row.count("max_attempts")?,
        ordered: row.flag("ordered")?,
        on_failure: row
            .text("on_failure")?
            .parse()
            .map_err(|e| corrupt("handler on_failure", e))?,
        filter: row
            .opt_text("event_filter")?
            .map(|f| Filter::parse(&f))
            .transpose()
            .map_err(|e| corrupt("handler event_filter", e))?,
        request: match row.opt_text("request_template")? {
            None => None,
            Some(json) => {
                let spec = serde_json::from_str(&json)
                    .map_err(|e| corrupt("handler request_template", e))?;
                Some(RequestTemplate::compile(spec).map_err(|(field, e)| {
                    corrupt("handler request_template", format!("{field}: {e}"))
                })?)
            }
        },
        on_exhausted: row
            .text("on_exhausted")?
            .parse()
            .map_err(|e| corrupt("handler on_exhausted", e))?,
        conflate: row.flag("conflate")?,
        auto_pause: match row.opt_int("auto_pause_failures")? {
            None => None,
            Some(_) => Some(AutoPause {
                failures: row.count("auto_pause_failures")?,
                after: millis(row.int("auto_pause_after_ms")?),
                probe_every: millis(row.int("auto_pause_probe_ms")?),
            }),
        },
    };
    let pause = match row.opt_text("paused_reason")? {
        None => None,
        Some(reason) => Some(Pause {
            reason,
            at: from_millis(row.opt_int("paused_at")?.unwrap_or_default()),
            probe_at_ms: row.opt_int("probe_at")?,
        }),
    };
    Ok(Handler {
        id: row.int("id")?,
        spec,
        pause,
        secret: SigningSecret::parse(&row.text("secret")?)
            .map_err(|e| corrupt("handler secret", e))?,
        created_at: from_millis(row.int("created_at")?),
        updated_at: from_millis(row.int("updated_at")?),
    })
}

/// A stored span of milliseconds (never negative when provisio wrote it).
fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.max(0) as u64)
}

/// An event from columns `event_id, events_id, object_id, dt, data`.
pub(crate) fn event(row: &impl Columns) -> StoreResult<Event> {
    Ok(Event {
        id: row.text("event_id")?,
        events_id: row.text("events_id")?,
        object_id: ObjectId::from_json_text(&row.text("object_id")?)
            .map_err(|e| corrupt("event object_id", e))?,
        dt: timefmt::parse(&row.text("dt")?).map_err(|e| corrupt("event dt", e))?,
        data: row.text("data")?,
    })
}

/// A leased delivery with its event's columns (see [`event`]).
pub(crate) fn claimed(row: &impl Columns) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        seq: row.int("seq")?,
        id: row.text("id")?,
        handler_id: row.int("handler_id")?,
        attempts: row.count("attempts")?,
        round_start: row.count("round_start")?,
        event: event(row)?,
    })
}

/// Columns of `deliveries` (selected `FROM deliveries`, unaliased), in the
/// order [`delivery`] reads them. A pending delivery of a paused handler reads
/// as `held`: derived here, never stored, so pausing and resuming rewrite no
/// delivery. `blocked_by` is computed too: for a waiting delivery, the blocked
/// one that holds its line (a seek of `deliveries_open`).
pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, handler_id, \
     CASE WHEN state = 'pending' AND EXISTS (SELECT 1 FROM handlers h WHERE h.id = deliveries.handler_id \
     AND h.paused_reason IS NOT NULL) THEN 'held' ELSE state END AS state, \
     attempts, next_attempt_at, lease_until, last_error, created_at, finished_at, superseded_by, \
     (SELECT b.id FROM deliveries b WHERE deliveries.state = 'waiting' AND b.handler_id = deliveries.handler_id \
      AND b.object_key = deliveries.object_key AND b.state = 'blocked' ORDER BY b.seq LIMIT 1) AS blocked_by";

pub(crate) fn delivery(row: &impl Columns) -> StoreResult<DeliveryRecord> {
    let state: DeliveryState = row
        .text("state")?
        .parse()
        .map_err(|e| corrupt("delivery state", e))?;
    let leased = row.opt_int("lease_until")?.is_some();
    Ok(DeliveryRecord {
        id: row.text("id")?,
        event_id: row.text("event_id")?,
        handler_id: row.int("handler_id")?,
        state,
        attempts: row.count("attempts")?,
        // A leased delivery's next_attempt_at is its lease end, not a schedule.
        next_attempt_at: row
            .opt_int("next_attempt_at")?
            .filter(|_| state == DeliveryState::Pending && !leased)
            .map(from_millis),
        last_error: row.opt_text("last_error")?,
        created_at: from_millis(row.int("created_at")?),
        finished_at: row.opt_int("finished_at")?.map(from_millis),
        superseded_by: row.opt_text("superseded_by")?,
        blocked_by: row.opt_text("blocked_by")?,
    })
}

/// A replay job with the progress counts of `shared::replays`' select. Its
/// state is `cancelled` once cancelled, otherwise `running` while any of its
/// deliveries is unfinished and `done` after.
pub(crate) fn replay(row: &impl Columns) -> StoreResult<ReplayRecord> {
    use provisio_core::replay::ReplayState;
    let count = |column: &str| -> StoreResult<u64> {
        let n = row.int(column)?;
        u64::try_from(n).map_err(|_| corrupt(column, format!("{n} is out of range")))
    };
    let remaining = count("remaining")?;
    let cancelled = row.text("state")? == ReplayState::Cancelled.as_str();
    let created_at = from_millis(row.int("created_at")?);
    let (state, finished_at) = if cancelled {
        (
            ReplayState::Cancelled,
            row.opt_int("finished_at")?.map(from_millis),
        )
    } else if remaining == 0 {
        let last = row
            .opt_int("last_finished")?
            .or(row.opt_int("finished_at")?);
        (
            ReplayState::Done,
            Some(last.map_or(created_at, from_millis)),
        )
    } else {
        (ReplayState::Running, None)
    };
    let cancelled_count = count("cancelled")?;
    Ok(ReplayRecord {
        id: row.text("id")?,
        handler_id: row.int("handler_id")?,
        events_id: row.opt_text("events_id")?,
        object_id: row.opt_text("object_id")?,
        from: row.opt_int("from_at")?.map(from_millis),
        to: row.opt_int("to_at")?.map(from_millis),
        status: row
            .text("status")?
            .parse()
            .map_err(|e| corrupt("replay status", e))?,
        latest_per_object: row.flag("latest_per_object")?,
        state,
        matched: count("matched")?,
        queued: count("queued")?,
        sent: count("sent")?,
        failed: count("ended_failed")?.saturating_sub(cancelled_count),
        cancelled: cancelled_count,
        remaining,
        created_by: row.text("created_by")?,
        created_at,
        finished_at,
    })
}

/// `SELECT` of every execution column, for [`execution`].
pub(crate) const EXECUTION_SELECT: &str = "SELECT id, delivery_id, handler_id, handler_name, event_id, events_id, object_id, stage, \
     attempt, status, started_at, duration_ms, request_target, request_headers, request_body, response_status, \
     response_body, response_truncated, error, next_attempt_at, data_after, test, verdict FROM executions";

pub(crate) fn execution(row: &impl Columns) -> StoreResult<ExecutionRecord> {
    let response_status = row
        .opt_int("response_status")?
        .map(|s| u16::try_from(s).map_err(|_| corrupt("execution response_status", s)))
        .transpose()?;
    Ok(ExecutionRecord {
        id: row.int("id")?,
        delivery_id: row.opt_text("delivery_id")?,
        handler_id: row.int("handler_id")?,
        handler_name: row.text("handler_name")?,
        event_id: row.opt_text("event_id")?,
        events_id: row.text("events_id")?,
        object_id: ObjectId::from_json_text(&row.text("object_id")?)
            .map_err(|e| corrupt("execution object_id", e))?,
        stage: row
            .text("stage")?
            .parse()
            .map_err(|e| corrupt("execution stage", e))?,
        attempt: row.count("attempt")?,
        status: row
            .text("status")?
            .parse()
            .map_err(|e| corrupt("execution status", e))?,
        started_at: from_millis(row.int("started_at")?),
        duration_ms: row.count("duration_ms")?,
        request: RequestRecord {
            // Masked on write too; this covers rows written before that,
            // and any written by SQL that copies a handler's target.
            target: provisio_core::handler::masked_target(&row.text("request_target")?)
                .into_owned(),
            headers: serde_json::from_str(&row.text("request_headers")?)
                .map_err(|e| corrupt("execution request headers", e))?,
            body: row.text("request_body")?,
        },
        response_status,
        response_body: row.opt_text("response_body")?,
        response_truncated: row.flag("response_truncated")?,
        error: row.opt_text("error")?,
        next_attempt_at: row.opt_int("next_attempt_at")?.map(from_millis),
        data_after: row.opt_text("data_after")?,
        test: row.flag("test")?,
        verdict: row
            .opt_text("verdict")?
            .map(|v| v.parse().map_err(|e| corrupt("execution verdict", e)))
            .transpose()?,
    })
}

/// `%text%` with LIKE's wildcards in `text` escaped (with `\`, which both
/// backends' queries name in `ESCAPE`).
pub(crate) fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// JSON text of plain data (handler args and headers, request headers).
pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}
