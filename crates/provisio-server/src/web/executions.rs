//! The Execution Logs: the filtered table (with rows that refresh on their
//! own), one execution's details with its event's deliveries, redeliver, and
//! skip (of a blocked delivery).

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use provisio_engine::{ExecutionSearch, OpError};
use provisio_store::{DeliveryRecord, ExecutionRecord, Page};
use serde::Deserialize;
use time::OffsetDateTime;

use super::session::{Operator, Posted, Session};
use super::{
    Chrome, EventGroup, NoticeQuery, PageError, PageResult, Pager, event_groups, render, see_other,
    with_query,
};
use crate::AppState;
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/executions", get(list))
        .route("/executions/rows", get(rows))
        .route("/executions/{id}", get(detail))
        .route("/deliveries/{id}/redeliver", post(redeliver))
        .route("/deliveries/{id}/skip", post(skip))
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
    data: String,
    error: String,
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
            ("data", self.data.clone()),
            ("error", self.error.clone()),
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
            data: text(&self.data),
            error: text(&self.error),
            from: text(&self.from),
            to: text(&self.to),
            replay_id: text(&self.replay_id),
            ..ExecutionSearch::default()
        }
    }
}

struct Row {
    id: i64,
    status: &'static str,
    date: String,
    events_id: String,
    stage: &'static str,
    handler_id: i64,
    handler_name: String,
    object_id: String,
    response: String,
    duration_ms: u32,
    /// A handler test's call.
    test: bool,
}

pub(super) fn date(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(f)
        .unwrap_or_default()
}

fn row(e: &ExecutionRecord) -> Row {
    let response = match (&e.error, e.response_status, &e.response_body) {
        (Some(err), _, _) if e.response_status.is_none() => err.clone(),
        (_, status, body) => {
            let body = body.as_deref().unwrap_or("").trim();
            let short: String = body.chars().take(80).collect();
            let more = if body.chars().count() > 80 { "…" } else { "" };
            match status {
                Some(s) => format!("{s} {short}{more}"),
                None => format!("{short}{more}"),
            }
        }
    };
    Row {
        id: e.id,
        status: e.status.as_str(),
        date: date(e.started_at),
        events_id: e.events_id.clone(),
        stage: e.stage.as_str(),
        handler_id: e.handler_id,
        handler_name: e.handler_name.clone(),
        object_id: e.object_id.key(),
        response,
        duration_ms: e.duration_ms,
        test: e.test,
    }
}

#[derive(Template)]
#[template(path = "executions.html")]
struct ListPage {
    chrome: Chrome,
    filter: Search,
    filter_error: Option<String>,
    handler_name: Option<String>,
    event_groups: Vec<EventGroup>,
    rows: Vec<Row>,
    total: u64,
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
    total: u64,
    /// Why the filters do not parse (then there are no rows).
    filter_error: Option<String>,
}

async fn search(state: &AppState, search: &Search, page: u32) -> Result<Found, PageError> {
    let filter = match search.to_search().to_filter() {
        Ok(filter) => filter,
        Err(refused) => {
            return Ok(Found {
                rows: Vec::new(),
                total: 0,
                filter_error: Some(refused.to_string()),
            });
        }
    };
    let per_page = PER_PAGE;
    let (records, total) = state
        .store()
        .list_executions(&filter, Page { page, per_page })
        .await?;
    Ok(Found {
        rows: records.iter().map(row).collect(),
        total,
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
    let pager = Pager::new(page, found.total, PER_PAGE, |p| {
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
            rows: found.rows,
            total: found.total,
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
fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// A delivery of the execution's event as the detail page lists it.
struct DeliveryView {
    id: String,
    event_id: String,
    handler_id: i64,
    created_at: String,
    state: &'static str,
    attempts: u32,
    /// A waiting delivery: the blocked one its line waits behind.
    blocked_by: Option<String>,
    /// A superseded delivery: the one sent instead.
    superseded_by: Option<String>,
    last_error: Option<String>,
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
    action_error: Option<String>,
}

async fn detail(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    detail_page(&state, &session, id, q.notice.as_deref(), None).await
}

async fn detail_page(
    state: &AppState,
    session: &Session,
    id: i64,
    notice: Option<&str>,
    action_error: Option<String>,
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
            delivery_state,
            deliveries,
            held_up,
            date: date(e.started_at),
            next_attempt_at: e.next_attempt_at.map(date),
            request_body: pretty(&e.request.body),
            response_body: pretty(e.response_body.as_deref().unwrap_or("")),
            data_after: e.data_after.as_deref().map(pretty),
            e,
            action_error,
        },
    ))
}

/// Redeliver and skip are asked on an execution's page; the answer is that
/// page again.
#[derive(Deserialize)]
struct DeliveryActionForm {
    #[serde(default)]
    execution: i64,
}

async fn redeliver(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Posted(form): Posted<DeliveryActionForm>,
) -> PageResult {
    let done = state.engine().redeliver(&id).await;
    answer_action(&state, &session, done, form.execution, "redelivered").await
}

/// Skips a blocked delivery in the name of the session's token.
async fn skip(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Posted(form): Posted<DeliveryActionForm>,
) -> PageResult {
    let done = state.engine().skip_delivery(&id, &session.token_name).await;
    answer_action(&state, &session, done, form.execution, "skipped").await
}

/// The execution's page after an action on its delivery: with the notice
/// when it was done, with the refusal when it clashed with the delivery's
/// state.
async fn answer_action(
    state: &AppState,
    session: &Session,
    done: Result<DeliveryRecord, OpError>,
    execution: i64,
    notice: &str,
) -> PageResult {
    match done {
        Ok(_) => Ok(see_other(&format!(
            "/executions/{execution}?notice={notice}"
        ))),
        Err(OpError::Conflict(message)) => {
            detail_page(state, session, execution, None, Some(message)).await
        }
        Err(err) => Err(session.not_found(
            err,
            "Delivery not found",
            "There is no delivery with that id.",
        )),
    }
}
