//! Replays: the jobs with their progress and a cancel button, and the form
//! "Replay these to …" that the Execution Logs open with their filters.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use provisio_core::FieldErrors;
use provisio_core::handler::{Stage, Status};
use provisio_engine::{OpError, ReplayRequest};
use provisio_store::{HandlerFilter, Page, ReplayRecord};
use serde::Deserialize;

use super::session::{Operator, Posted, Session};
use super::{Chrome, NoticeQuery, PageResult, Pager, render, see_other};
use crate::AppState;
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/replays", get(list).post(start))
        .route("/replays/new", get(new))
        .route("/replays/{id}/cancel", post(cancel))
}

const PER_PAGE: u32 = 50;

/// The name of the token the operator logged in with, for the job's record.
async fn operator_name(state: &AppState, session: &Session) -> Result<String, OpError> {
    let tokens = state.store().list_tokens().await.map_err(OpError::from)?;
    Ok(tokens
        .into_iter()
        .find(|t| t.id == session.token_id)
        .map_or_else(|| format!("token {}", session.token_id), |t| t.name))
}

struct Row {
    id: String,
    handler_id: i64,
    filter: String,
    state: &'static str,
    matched: u64,
    queued: u64,
    sent: u64,
    failed: u64,
    cancelled: u64,
    remaining: u64,
    /// Finished deliveries out of those queued, in percent.
    percent: u64,
    started: String,
    by: String,
}

fn row(r: ReplayRecord) -> Row {
    let mut filter = Vec::new();
    if let Some(p) = &r.events_id {
        filter.push(p.clone());
    }
    if let Some(o) = &r.object_id {
        filter.push(format!("object {o}"));
    }
    if let Some(t) = r.from {
        filter.push(format!("from {}", super::executions::date(t)));
    }
    if let Some(t) = r.to {
        filter.push(format!("to {}", super::executions::date(t)));
    }
    filter.push(format!("status {}", r.status));
    if r.latest_per_object {
        filter.push("latest per object".into());
    }
    Row {
        percent: (r.queued - r.remaining) * 100 / r.queued.max(1),
        id: r.id,
        handler_id: r.handler_id,
        filter: filter.join(", "),
        state: r.state.as_str(),
        matched: r.matched,
        queued: r.queued,
        sent: r.sent,
        failed: r.failed,
        cancelled: r.cancelled,
        remaining: r.remaining,
        started: super::executions::date(r.created_at),
        by: r.created_by,
    }
}

#[derive(Template)]
#[template(path = "replays.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    total: u64,
    pager: Pager,
    /// This page again, for the live refresh of running jobs.
    pager_url: String,
    /// Whether any job on the page runs (only then the rows refresh).
    running: bool,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    page: Option<u32>,
    notice: Option<String>,
}

async fn list(Operator { state, session }: Operator, Query(q): Query<ListQuery>) -> PageResult {
    list_page(
        &state,
        &session,
        q.page.unwrap_or(1).max(1),
        q.notice.as_deref(),
        None,
    )
    .await
}

async fn list_page(
    state: &AppState,
    session: &Session,
    page: u32,
    notice: Option<&str>,
    error: Option<String>,
) -> PageResult {
    let (jobs, total) = state
        .engine()
        .replays(Page {
            page,
            per_page: PER_PAGE,
        })
        .await?;
    let url = |p: u32| format!("/replays?page={p}");
    let pager = Pager::new(page, total, PER_PAGE, url);
    let rows: Vec<Row> = jobs.into_iter().map(row).collect();
    Ok(render(
        StatusCode::OK,
        &ListPage {
            chrome: Chrome::new(session, "replays", notice),
            running: rows.iter().any(|r| r.state == "running"),
            rows,
            total,
            pager,
            pager_url: url(page),
            error,
        },
    ))
}

/// The form's fields as typed; the Execution Logs link fills the filter.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct ReplayForm {
    handler_id: String,
    events_id: String,
    object_id: String,
    from: String,
    to: String,
    status: String,
    /// A checkbox: present when ticked.
    latest_per_object: Option<String>,
}

impl ReplayForm {
    fn to_request(&self) -> Result<ReplayRequest, FieldErrors> {
        let text = |s: &String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let mut errors = FieldErrors::new();
        let handler_id = self.handler_id.trim().parse().unwrap_or_else(|_| {
            errors.add("handler_id", "choose a handler");
            0
        });
        let status = match self.status.as_str() {
            "" => None,
            s => s.parse().map(Some).unwrap_or_else(|message: String| {
                errors.add("status", message);
                None
            }),
        };
        errors.into_result()?;
        Ok(ReplayRequest {
            handler_id,
            events_id: text(&self.events_id),
            object_id: text(&self.object_id),
            from: text(&self.from),
            to: text(&self.to),
            status,
            latest_per_object: self.latest_per_object.is_some(),
        })
    }
}

struct HandlerChoice {
    id: i64,
    name: String,
    events_id: String,
}

#[derive(Template)]
#[template(path = "replay_form.html")]
struct FormPage {
    chrome: Chrome,
    form: ReplayForm,
    handlers: Vec<HandlerChoice>,
    errors: FieldErrors,
}

async fn form_page(
    state: &AppState,
    session: &Session,
    form: ReplayForm,
    errors: FieldErrors,
) -> PageResult {
    // The handlers a replay may go to: enabled, after stage.
    let filter = HandlerFilter {
        status: Some(Status::Enabled),
        stage: Some(Stage::After),
        ..HandlerFilter::default()
    };
    let (handlers, _) = state
        .store()
        .list_handlers(
            &filter,
            Page {
                page: 1,
                per_page: Page::MAX_PER_PAGE,
            },
        )
        .await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(render(
        status,
        &FormPage {
            chrome: Chrome::new(session, "replays", None),
            form,
            handlers: handlers
                .into_iter()
                .map(|h| HandlerChoice {
                    id: h.id,
                    name: h.spec.name,
                    events_id: h.spec.events_id.to_string(),
                })
                .collect(),
            errors,
        },
    ))
}

async fn new(Operator { state, session }: Operator, Query(form): Query<ReplayForm>) -> PageResult {
    form_page(&state, &session, form, FieldErrors::new()).await
}

async fn start(
    Operator { state, session }: Operator,
    Posted(form): Posted<ReplayForm>,
) -> PageResult {
    let request = match form.to_request() {
        Ok(request) => request,
        Err(errors) => return form_page(&state, &session, form, errors).await,
    };
    let by = operator_name(&state, &session).await?;
    match state.engine().start_replay(&request, &by).await {
        Ok(_) => Ok(see_other("/replays?notice=replay-started")),
        Err(OpError::Invalid(errors)) => form_page(&state, &session, form, errors).await,
        Err(err) => Err(err.into()),
    }
}

async fn cancel(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Posted(_): Posted<NoticeQuery>,
) -> PageResult {
    let by = operator_name(&state, &session).await?;
    match state.engine().cancel_replay(&id, &by).await {
        Ok(_) => Ok(see_other("/replays?notice=replay-cancelled")),
        Err(OpError::Conflict(message)) => {
            list_page(&state, &session, 1, None, Some(message)).await
        }
        Err(err) => Err(session.not_found(
            err,
            "Replay not found",
            "There is no replay job with that id.",
        )),
    }
}
