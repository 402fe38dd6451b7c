//! The Execution Logs: the filtered table (with rows that refresh on their
//! own) and one execution's details with its event's deliveries. A script's
//! call is shown in script terms (command, arguments, exit code, output);
//! a before-stage call by its verdict. The delivery and event pages, and
//! the actions on a delivery, are in `deliveries.rs`.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_engine::ExecutionSearch;
use provisio_store::{DeliveryRecord, ExecutionRecord, LogCount, Page};
use serde::Deserialize;
use time::OffsetDateTime;

use super::session::{Operator, Session};
use super::{
    Chrome, EventGroup, NoticeQuery, PageError, PageResult, Pager, event_groups, render, with_query,
};
use crate::AppState;
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/executions", get(list))
        .route("/executions/rows", get(rows))
        .route("/executions/{id}", get(detail))
}

const PER_PAGE: u32 = 50;
/// How many of the deliveries a blocked one holds up its page lists.
const HELD_UP_SHOWN: u32 = 20;

/// The Advanced Search fields, as typed.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Search {
    handler_id: String,
    events_id: String,
    status: String,
    stage: String,
    object_id: String,
    delivery_id: String,
    event_id: String,
    data: String,
    error: String,
    response: String,
    verdict: String,
    from: String,
    to: String,
    replay_id: String,
    page: Option<u32>,
}

impl Search {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("handler_id", self.handler_id.clone()),
            ("events_id", self.events_id.clone()),
            ("status", self.status.clone()),
            ("stage", self.stage.clone()),
            ("object_id", self.object_id.clone()),
            ("delivery_id", self.delivery_id.clone()),
            ("event_id", self.event_id.clone()),
            ("data", self.data.clone()),
            ("error", self.error.clone()),
            ("response", self.response.clone()),
            ("verdict", self.verdict.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("replay_id", self.replay_id.clone()),
        ]
    }

    fn url(&self, path: &str, page: Option<u32>) -> String {
        let mut pairs = self.pairs();
        if let Some(p) = page {
            pairs.push(("page", p.to_string()));
        }
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        with_query(path, &refs)
    }

    /// "Replay these to …": the replay form with the filters a replay
    /// shares (a log filtered by `fail` replays the failed ones).
    fn replay_url(&self) -> String {
        let status = if self.status == "fail" { "failed" } else { "" };
        with_query(
            "/replays/new",
            &[
                ("handler_id", &self.handler_id),
                ("events_id", &self.events_id),
                ("object_id", &self.object_id),
                ("from", &self.from),
                ("to", &self.to),
                ("status", status),
            ],
        )
    }

    /// The same filters the API takes, parsed the same way.
    fn to_search(&self) -> ExecutionSearch {
        let text = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        ExecutionSearch {
            handler_id: self.handler_id.trim().parse().ok(),
            events_id: text(&self.events_id),
            status: self.status.parse().ok(),
            stage: self.stage.parse().ok(),
            object_id: text(&self.object_id),
            delivery_id: text(&self.delivery_id),
            event_id: text(&self.event_id),
            data: text(&self.data),
            error: text(&self.error),
            response: text(&self.response),
            verdict: self.verdict.parse().ok(),
            from: text(&self.from),
            to: text(&self.to),
            replay_id: text(&self.replay_id),
        }
    }
}

pub(super) struct Row {
    pub(super) id: i64,
    /// The badge: a before-stage call's verdict (a forbidden call is
    /// "forbidden", never "success"), otherwise the call's status.
    pub(super) badge: &'static str,
    pub(super) date: String,
    pub(super) events_id: String,
    pub(super) stage: &'static str,
    pub(super) handler_id: i64,
    pub(super) handler_name: String,
    pub(super) object_id: String,
    pub(super) attempt: u32,
    /// When a failed attempt runs again; "no retry" when it was the last of
    /// its round; empty otherwise.
    pub(super) next_attempt: String,
    pub(super) response: String,
    pub(super) duration_ms: u32,
    /// A handler test's call.
    pub(super) test: bool,
}

pub(super) fn date(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(f)
        .unwrap_or_default()
}

/// The first 80 characters of a body, trimmed, with "…" when cut.
fn short(body: Option<&str>) -> String {
    let body = body.unwrap_or("").trim();
    let short: String = body.chars().take(80).collect();
    let more = if body.chars().count() > 80 { "…" } else { "" };
    format!("{short}{more}")
}

/// The badge of an execution: its verdict when it has one, else its status.
pub(super) fn badge(e: &ExecutionRecord) -> &'static str {
    e.verdict.map_or(e.status.as_str(), |v| v.as_str())
}

pub(super) fn row(e: &ExecutionRecord) -> Row {
    let response = match (&e.error, e.response_status) {
        (Some(err), None) => err.clone(),
        (_, Some(code)) if e.is_script() => {
            format!("exit {code} {}", short(e.response_body.as_deref()))
        }
        (_, Some(status)) => format!("{status} {}", short(e.response_body.as_deref())),
        (_, None) => short(e.response_body.as_deref()),
    };
    let failed = e.status != provisio_core::event::ExecutionStatus::Success;
    let next_attempt = match e.next_attempt_at {
        Some(at) => date(at),
        None if failed && e.delivery_id.is_some() => "no retry".into(),
        None => String::new(),
    };
    Row {
        id: e.id,
        badge: badge(e),
        date: date(e.started_at),
        events_id: e.events_id.clone(),
        stage: e.stage.as_str(),
        handler_id: e.handler_id,
        handler_name: e.handler_name.clone(),
        object_id: e.object_id.key(),
        attempt: e.attempt,
        next_attempt,
        response,
        duration_ms: e.duration_ms,
        test: e.test,
    }
}

/// A handler in the Advanced Search's drop-down.
struct HandlerChoice {
    id: i64,
    name: String,
}

#[derive(Template)]
#[template(path = "executions.html")]
struct ListPage {
    chrome: Chrome,
    filter: Search,
    filter_error: Option<String>,
    handler_name: Option<String>,
    event_groups: Vec<EventGroup>,
    handlers: Vec<HandlerChoice>,
    rows: Vec<Row>,
    total: u64,
    /// "more than" when counting stopped at the limit.
    total_exact: bool,
    /// What bounded the count or the search, when anything did.
    bound_note: Option<String>,
    pager: Pager,
    rows_url: String,
    /// The replay form, filled with these filters.
    replay_url: String,
}

#[derive(Template)]
#[template(path = "execution_rows.html")]
struct RowsFragment {
    rows: Vec<Row>,
}

/// One page of the log as the filters select it.
struct Found {
    rows: Vec<Row>,
    count: LogCount,
    /// Why the filters do not parse (then there are no rows).
    filter_error: Option<String>,
}

async fn search(state: &AppState, search: &Search, page: u32) -> Result<Found, PageError> {
    let filter = match search.to_search().to_filter() {
        Ok(filter) => filter,
        Err(refused) => {
            return Ok(Found {
                rows: Vec::new(),
                count: LogCount::new(0, &Default::default()),
                filter_error: Some(refused.to_string()),
            });
        }
    };
    let per_page = PER_PAGE;
    let (records, counted) = state
        .store()
        .list_executions(&filter, Page { page, per_page })
        .await?;
    Ok(Found {
        rows: records.iter().map(row).collect(),
        count: LogCount::new(counted, &filter),
        filter_error: None,
    })
}

async fn list(Operator { state, session }: Operator, Query(filter): Query<Search>) -> PageResult {
    let page = filter.page.unwrap_or(1).max(1);
    let found = search(&state, &filter, page).await?;
    let groups = event_groups(&state).await?;
    let handler_name = match filter.handler_id.trim().parse::<i64>() {
        Ok(id) => state.engine().handler(id).await.ok().map(|h| h.spec.name),
        Err(_) => None,
    };
    let mut handlers: Vec<HandlerChoice> = state
        .store()
        .all_handlers()
        .await?
        .into_iter()
        .map(|h| HandlerChoice {
            id: h.id,
            name: h.spec.name,
        })
        .collect();
    handlers.sort_by_key(|h| h.id);
    let pager = Pager::new(page, found.count.total, PER_PAGE, |p| {
        filter.url("/executions", Some(p))
    });
    let rows_url = filter.url("/executions/rows", None);
    let replay_url = filter.replay_url();
    let chrome = Chrome::new(&session, "executions", None);
    Ok(render(
        StatusCode::OK,
        &ListPage {
            chrome,
            filter,
            filter_error: found.filter_error,
            handler_name,
            event_groups: groups,
            handlers,
            rows: found.rows,
            total: found.count.total,
            total_exact: found.count.exact,
            bound_note: found.count.note(),
            pager,
            rows_url,
            replay_url,
        },
    ))
}

/// The first page's rows alone, for the live refresh.
async fn rows(Operator { state, .. }: Operator, Query(filter): Query<Search>) -> PageResult {
    let rows = search(&state, &filter, 1).await?.rows;
    Ok(render(StatusCode::OK, &RowsFragment { rows }))
}

/// JSON shown indented; anything else as it is.
pub(super) fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// A delivery of the execution's event as the detail page lists it.
pub(super) struct DeliveryView {
    pub(super) id: String,
    pub(super) event_id: String,
    pub(super) handler_id: i64,
    pub(super) created_at: String,
    pub(super) state: &'static str,
    pub(super) attempts: u32,
    /// When a pending delivery is tried next.
    pub(super) next_attempt_at: Option<String>,
    /// A waiting delivery: the blocked one its line waits behind.
    pub(super) blocked_by: Option<String>,
    /// A superseded delivery: the one sent instead.
    pub(super) superseded_by: Option<String>,
    pub(super) last_error: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            handler_id: d.handler_id,
            created_at: date(d.created_at),
            state: d.state.as_str(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(date),
            blocked_by: d.blocked_by,
            superseded_by: d.superseded_by,
            last_error: d.last_error,
        }
    }
}

/// One execution as stored, with its instants and bodies made readable, and
/// where its event's deliveries stand now.
#[derive(Template)]
#[template(path = "execution.html")]
struct DetailPage {
    chrome: Chrome,
    e: ExecutionRecord,
    /// Its verdict or status.
    badge: &'static str,
    /// A script's call: its arguments (shown with the command).
    script_args: Option<Vec<String>>,
    /// The event has a page (an after-stage event; a before-stage run is
    /// not stored as an event).
    event_page: bool,
    /// The state of the delivery this execution was an attempt of, now.
    delivery_state: Option<&'static str>,
    deliveries: Vec<DeliveryView>,
    /// A blocked delivery: the first of the deliveries its line holds up.
    held_up: Vec<DeliveryView>,
    date: String,
    next_attempt_at: Option<String>,
    request_body: String,
    response_body: String,
    data_after: Option<String>,
}

async fn detail(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    detail_page(&state, &session, id, q.notice.as_deref()).await
}

async fn detail_page(
    state: &AppState,
    session: &Session,
    id: i64,
    notice: Option<&str>,
) -> PageResult {
    let e = state.store().get_execution(id).await?.ok_or_else(|| {
        session.error(
            StatusCode::NOT_FOUND,
            "Execution not found",
            "There is no execution with that id.",
        )
    })?;
    let deliveries: Vec<DeliveryView> = match &e.event_id {
        Some(event_id) => state
            .store()
            .get_event(event_id)
            .await?
            .map(|(_, deliveries)| deliveries.into_iter().map(Into::into).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let delivery_state = deliveries
        .iter()
        .find(|d| e.delivery_id.as_deref() == Some(d.id.as_str()))
        .map(|d| d.state);
    let held_up = match (&e.delivery_id, delivery_state) {
        (Some(id), Some("blocked")) => state
            .store()
            .waiting_behind(id, HELD_UP_SHOWN)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
        _ => Vec::new(),
    };
    let chrome = Chrome::new(session, "executions", notice);
    Ok(render(
        StatusCode::OK,
        &DetailPage {
            chrome,
            badge: badge(&e),
            script_args: e.is_script().then(|| e.script_args()),
            event_page: e.stage == provisio_core::handler::Stage::After && e.event_id.is_some(),
            delivery_state,
            deliveries,
            held_up,
            date: date(e.started_at),
            next_attempt_at: e.next_attempt_at.map(date),
            request_body: pretty(&e.request.body),
            response_body: pretty(e.response_body.as_deref().unwrap_or("")),
            data_after: e.data_after.as_deref().map(pretty),
            e,
        },
    ))
}
