//! Query pieces both backends build the same way: the execution log's
//! multi-row insert and its filters, and the handler list's filters. They use only SQL the two databases share
//! (`QueryBuilder` writes each driver's own placeholders), so one generic
//! function serves both.

use sqlx::QueryBuilder;

use crate::shared::{Bind, Dialect};

use crate::rows::like_pattern;
use crate::{ExecutionFilter, ExecutionRecord, HandlerFilter};

/// The condition that the delivery state in `$column` keeps a (handler,
/// object) line open: a later ordered delivery of the object waits while one
/// of its line is `pending`, `waiting` or `blocked`. The partial index
/// `deliveries_open` has the same condition, and a statement meant to use it
/// must repeat it (SQLite uses a partial index only for a query whose `WHERE`
/// holds the index's condition).
///
/// Comparisons, not `IN (…)`: SQLite evaluates a constant `IN` list of more
/// than two values by building a temporary b-tree of it, and where the list
/// is a partial index's condition it builds one for each row written, before
/// and after the change: four per delivery updated, two per delivery
/// inserted (issue 15; ARCHITECTURE.md, "Storage").
macro_rules! open_states {
    ($column:literal) => {
        $crate::query::open_states!(@with one_of, $column)
    };
    // `$crate::query::$then!($args…, the open states…)`: the one list of them.
    (@with $then:ident, $($args:literal),*) => {
        $crate::query::$then!($($args,)* "pending", "waiting", "blocked")
    };
}
pub(crate) use open_states;

/// Whether the line of `$handler` and `$object` (SQL expressions) is open
/// ([`open_states!`]), as a probe of `deliveries_open` per open state. Not
/// one probe for them all: SQLite seeks the states' `OR` there as `state IN
/// (…)`, and builds the list as an ephemeral b-tree first, on each run.
macro_rules! line_open {
    ($handler:literal, $object:literal) => {
        $crate::query::open_states!(@with any_exists, $handler, $object)
    };
}
pub(crate) use line_open;

/// `(EXISTS (… o.state = 'a') OR EXISTS (… o.state = 'b') …)` over the
/// line's deliveries `o`, for [`line_open!`].
macro_rules! any_exists {
    ($handler:literal, $object:literal, $first:literal $(, $state:literal)*) => {
        concat!(
            "(EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = ", $handler,
            " AND o.object_key = ", $object, " AND o.state = '", $first, "')",
            $(" OR EXISTS (SELECT 1 FROM deliveries o WHERE o.handler_id = ", $handler,
              " AND o.object_key = ", $object, " AND o.state = '", $state, "')",)*
            ")"
        )
    };
}
pub(crate) use any_exists;

/// The condition that the delivery state in `$column` is final (until
/// redelivered by hand): retention deletes those (the partial index
/// `deliveries_finished`, with this condition). Comparisons, as in
/// [`open_states!`].
macro_rules! finished_states {
    ($column:literal) => {
        $crate::query::one_of!($column, "success", "failed", "superseded")
    };
}
pub(crate) use finished_states;

/// `($column = 'a' OR $column = 'b' …)` as a literal, for the state sets above.
macro_rules! one_of {
    ($column:literal, $first:literal $(, $value:literal)*) => {
        concat!("(", $column, " = '", $first, "'", $(" OR ", $column, " = '", $value, "'",)* ")")
    };
}
pub(crate) use one_of;

/// Rows per multi-row statement: well under both databases' bound-parameter
/// limits (SQLite 32,766; PostgreSQL 65,535) at 22 columns a row.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// `INSERT INTO executions … VALUES (…), (…)` for up to
/// [`ROWS_PER_STATEMENT`] rows.
pub(crate) fn insert_executions<DB: Dialect>(rows: &[&ExecutionRecord]) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new("");
    push_insert_executions(&mut q, rows);
    q
}

/// Appends the `INSERT` of `rows` to `q`, for a statement list.
pub(crate) fn push_insert_executions(q: &mut impl Sql, rows: &[&ExecutionRecord]) {
    q.sql(
        "INSERT INTO executions (delivery_id, handler_id, handler_name, event_id, events_id, object_id,
            object_key, stage, attempt, status, started_at, duration_ms, request_target, request_headers,
            request_body, response_status, response_body, response_truncated, error, next_attempt_at,
            data_after, test, verdict) ",
    );
    values(q, rows, |row, e| {
        row.arg(e.delivery_id.clone())
            .arg(e.handler_id)
            .arg(e.handler_name.clone())
            .arg(e.event_id.clone())
            .arg(e.events_id.clone())
            .arg(e.object_id.to_json())
            .arg(e.object_id.key())
            .arg(e.stage.as_str())
            .arg(i64::from(e.attempt))
            .arg(e.status.as_str())
            .arg(provisio_core::timefmt::to_millis(e.started_at))
            .arg(i64::from(e.duration_ms))
            // The last guard for every writer of the log: a URL's password
            // is never stored (`http://user:***@host/`).
            .arg(provisio_core::handler::masked_target(&e.request.target).into_owned())
            .arg(crate::rows::json(&e.request.headers))
            // And no NUL (PostgreSQL refuses it in text): a request template
            // can render one from an event's data.
            .arg(provisio_core::without_nul(&e.request.body).into_owned())
            .arg(e.response_status.map(i64::from))
            .arg(e.response_body.clone())
            .arg(e.response_truncated)
            .arg(e.error.clone())
            .arg(e.next_attempt_at.map(provisio_core::timefmt::to_millis))
            .arg(e.data_after.clone())
            .arg(e.test)
            .arg(e.verdict.map(|v| v.as_str().to_owned()));
    });
}

/// A statement being written by a builder that both drivers run: sqlx's
/// `QueryBuilder` (either database), and SQLite's write thread's
/// statements (`sqlite::direct::Stmt`).
pub(crate) trait Sql {
    /// Appends SQL text.
    fn sql(&mut self, text: &str) -> &mut Self;
    /// Appends a placeholder bound to `value`.
    fn arg(&mut self, value: impl Arg) -> &mut Self;
}

impl<DB: Dialect> Sql for QueryBuilder<DB> {
    fn sql(&mut self, text: &str) -> &mut Self {
        self.push(text)
    }

    fn arg(&mut self, value: impl Arg) -> &mut Self {
        value.bind_to(self);
        self
    }
}

/// A value a [`Sql`] builder binds: the types [`Dialect`] binds.
pub(crate) trait Arg {
    fn bind_to<DB: Dialect>(self, q: &mut QueryBuilder<DB>);
    fn value(self) -> rusqlite::types::Value;
}

macro_rules! impl_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn bind_to<DB: Dialect>(self, q: &mut QueryBuilder<DB>) {
                q.bind(self);
            }
            fn value(self) -> rusqlite::types::Value {
                self.into()
            }
        }
    )*};
}
impl_arg!(i64, Option<i64>, bool, String, Option<String>, Vec<u8>);

impl Arg for &'static str {
    fn bind_to<DB: Dialect>(self, q: &mut QueryBuilder<DB>) {
        q.bind(self);
    }
    fn value(self) -> rusqlite::types::Value {
        self.to_owned().into()
    }
}

/// `VALUES (…), (…)`: a row per item, written by `row`, each value an
/// [`Sql::arg`] separated by commas (the `push_values` of `QueryBuilder`,
/// for any [`Sql`]).
pub(crate) fn values<Q: Sql, T>(
    q: &mut Q,
    items: impl IntoIterator<Item = T>,
    mut row: impl FnMut(&mut Values<'_, Q>, T),
) {
    q.sql("VALUES ");
    for (i, item) in items.into_iter().enumerate() {
        q.sql(if i == 0 { "(" } else { ", (" });
        row(
            &mut Values {
                q: &mut *q,
                first: true,
            },
            item,
        );
        q.sql(")");
    }
}

/// One row of [`values`]: separates its values with commas.
pub(crate) struct Values<'q, Q> {
    q: &'q mut Q,
    first: bool,
}

impl<Q: Sql> Values<'_, Q> {
    pub(crate) fn arg(&mut self, value: impl Arg) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.q.sql(", ");
        }
        self.q.arg(value);
        self
    }
}

/// The execution log's `WHERE` clause. `like` is the backend's
/// case-insensitive match (SQLite's `LIKE` ignores ASCII case; PostgreSQL's
/// `ILIKE` is the same search).
pub(crate) fn push_execution_filter<DB: Dialect>(
    q: &mut QueryBuilder<DB>,
    f: &ExecutionFilter,
    like: &'static str,
) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = f.handler_id {
        q.push(" AND handler_id = ").bind(v);
    }
    if let Some(v) = &f.events_id {
        q.push(" AND events_id = ").bind(v.clone());
    }
    if let Some(v) = f.status {
        q.push(" AND status = ").bind(v.as_str());
    }
    if let Some(v) = f.stage {
        // A literal (the stage is one of two words), so the partial index
        // `executions_stage_before` matches the condition.
        q.push(" AND stage = '").push(v.as_str()).push("'");
    }
    if let Some(v) = &f.object_id {
        q.push(" AND object_key = ").bind(v.clone());
    }
    if let Some(v) = &f.delivery_id {
        q.push(" AND delivery_id = ").bind(v.clone());
    }
    if let Some(v) = &f.event_id {
        q.push(" AND event_id = ").bind(v.clone());
    }
    for (column, text) in [
        ("request_body", &f.data),
        ("error", &f.error),
        ("response_body", &f.response),
    ] {
        if let Some(v) = text.as_deref().filter(|v| !v.is_empty()) {
            q.push(" AND ")
                .push(column)
                .push(" ")
                .push(like)
                .push(" ")
                .bind(like_pattern(v))
                .push(" ESCAPE '\\'");
        }
    }
    if f.searches_text() {
        // The bounded scan: a substring has no index, so only a window of
        // rows is read (a range of the primary key) that ends at the newest
        // row, or at the newest up to `to`, so an earlier `to` looks further
        // back.
        // Bounded above too: a page read newest first then starts at the
        // window's top instead of walking down from the newest row.
        let window_top = |q: &mut QueryBuilder<DB>| {
            q.push("COALESCE((SELECT id FROM executions");
            match f.to_ms {
                Some(to) => q
                    .push(" WHERE started_at <= ")
                    .bind(to)
                    .push(" ORDER BY started_at DESC"),
                None => q.push(" ORDER BY id DESC"),
            };
            q.push(" LIMIT 1), 0)");
        };
        q.push(" AND id <= ");
        window_top(q);
        q.push(" AND id > ");
        window_top(q);
        q.push(" - ").bind(crate::LOG_TEXT_WINDOW as i64);
    }
    if let Some(v) = f.verdict {
        q.push(" AND verdict = ").bind(v.as_str());
    }
    if let Some(v) = &f.replay_id {
        q.push(" AND delivery_id IN (SELECT id FROM deliveries WHERE replay_id = ")
            .bind(v.clone())
            .push(")");
    }
    // A text search reads its window by id: the unary plus keeps SQLite from
    // walking the date index instead (every row up to `to`, not a window).
    let started = if f.searches_text() {
        " AND +started_at "
    } else {
        " AND started_at "
    };
    if let Some(v) = f.from_ms {
        q.push(started).push(">= ").bind(v);
    }
    if let Some(v) = f.to_ms {
        q.push(started).push("<= ").bind(v);
    }
}

/// The handler list's `WHERE` clause; `like` as in [`push_execution_filter`].
pub(crate) fn push_handler_filter<DB: Dialect>(
    q: &mut QueryBuilder<DB>,
    f: &HandlerFilter,
    like: &'static str,
) {
    q.push(" WHERE 1 = 1");
    if let Some(events_id) = &f.events_id {
        // The handler's own pattern, or a pattern that fires for this type:
        // `*`, or `prefix.*` where the type starts with `prefix.` (`.` and `*`
        // are not LIKE wildcards).
        q.push(" AND (events_id = ")
            .bind(events_id.clone())
            .push(" OR events_id = '*' OR (events_id LIKE '%.*' AND substr(")
            .bind(events_id.clone())
            .push(", 1, length(events_id) - 1) = substr(events_id, 1, length(events_id) - 1)))");
    }
    if let Some(kind) = f.kind {
        q.push(" AND kind = ").bind(kind.as_str());
    }
    match f.status {
        Some(status) => {
            q.push(" AND status = ").bind(status.as_str());
        }
        None if !f.include_archived => {
            q.push(" AND status <> 'archived'");
        }
        None => {}
    }
    if let Some(stage) = f.stage {
        q.push(" AND stage = ").bind(stage.as_str());
    }
    if let Some(text) = f.q.as_deref().filter(|t| !t.is_empty()) {
        q.push(" AND name ")
            .push(like)
            .push(" ")
            .bind(like_pattern(text))
            .push(" ESCAPE '\\'");
    }
}

/// What an interrupted attempt's execution row and its delivery say.
pub(crate) const INTERRUPTED: &str = "outcome unknown: the attempt was interrupted before its result \
was recorded (provisio stopped, or lost its database, while it ran); it may have reached the receiver";

/// Step one of settling interrupted attempts: make their deliveries due again,
/// counting the attempt in the log's numbering but not against the round
/// (the interruption was provisio's, not the receiver's). Returns their `seq`s.
pub(crate) fn settle_leases<DB: Dialect>(now_ms: i64, ending_before: i64) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new(
        "UPDATE deliveries SET attempts = attempts + 1, round_start = round_start + 1,
            lease_until = NULL, next_attempt_at = ",
    );
    q.bind(now_ms)
        .push(", last_error = ")
        .bind(INTERRUPTED)
        .push(" WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until < ")
        .bind(ending_before)
        .push(" AND ");
    DB::push_lapsed(&mut q, ending_before);
    q.push(" RETURNING seq");
    q
}

/// Step two: an execution row with status `unknown` for each settled delivery.
pub(crate) fn log_interrupted<DB: Dialect>(now_ms: i64, seqs: &[i64]) -> QueryBuilder<DB> {
    let mut q = QueryBuilder::<DB>::new(
        "INSERT INTO executions (delivery_id, handler_id, handler_name, event_id, events_id, object_id,
            object_key, stage, attempt, status, started_at, duration_ms, request_target, request_headers,
            request_body, response_status, response_body, response_truncated, error, next_attempt_at,
            data_after)
         SELECT d.id, d.handler_id, COALESCE(h.name, ''), e.id, e.events_id, e.object_id, d.object_key,
            'after', d.attempts, 'unknown', ",
    );
    q.bind(now_ms)
        // No request target: the handler's URL may hold a password, which is
        // masked in Rust before it is written, and no request was recorded.
        .push(", 0, '', '{}', '', NULL, NULL, ")
        .bind(false)
        .push(", ")
        .bind(INTERRUPTED)
        .push(", ")
        .bind(now_ms)
        .push(
            ", NULL FROM deliveries d JOIN events e ON e.id = d.event_id
             LEFT JOIN handlers h ON h.id = d.handler_id WHERE d.seq IN (",
        );
    let mut list = q.separated(", ");
    for seq in seqs {
        list.bind(*seq);
    }
    q.push(")");
    q
}

#[cfg(test)]
mod tests;
