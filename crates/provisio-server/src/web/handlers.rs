//! The Handlers table (with each handler's health and queue), its Advanced
//! Search, the status switch, pause and resume, and delete; the New/Edit
//! pages are in `handler_edit`.

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_core::handler::{Handler, HandlerKind, Stage};
use provisio_engine::OpError;
use provisio_store::{HandlerFilter, Page};
use serde::Deserialize;

use super::handler_edit::{create, edit_form, new_form, update};
use super::health_view::Shown;
use super::session::{CsrfForm, Operator, Posted, Session};
use super::{
    Chrome, EventGroup, PageError, PageResult, Pager, event_groups, render, see_other, with_query,
};
use crate::AppState;
use crate::board::{PAGE_WAIT, Snapshot};
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/handlers", get(list).post(create))
        .route("/handlers/new", get(new_form))
        .route("/handlers/{id}", axum::routing::post(update))
        .route("/handlers/{id}/edit", get(edit_form))
        .route("/handlers/{id}/toggle", axum::routing::post(toggle))
        .route("/handlers/{id}/pause", axum::routing::post(pause))
        .route("/handlers/{id}/resume", axum::routing::post(resume))
        .route("/handlers/{id}/delete", get(confirm_delete).post(delete))
}

const PER_PAGE: u32 = 25;

/// The Advanced Search fields, as typed (kept in the URL for bookmarks).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Search {
    events_id: String,
    kind: String,
    status: String,
    q: String,
    page: Option<u32>,
    notice: Option<String>,
}

/// The switch sits in a row of the table; `back` is that table's URL.
#[derive(Deserialize)]
struct ToggleForm {
    #[serde(default)]
    back: String,
}

struct Row {
    id: i64,
    priority: i32,
    name: String,
    events_id: String,
    stage: &'static str,
    kind_label: &'static str,
    target: String,
    status: &'static str,
    /// After-stage handlers may be paused; before-stage ones queue nothing.
    pausable: bool,
    paused: Option<Paused>,
    /// Deliveries held while paused.
    held: u64,
    /// Its state badge, last failure and queue line.
    shown: Shown,
}

/// A paused handler's pause, as the pages show it.
pub(super) struct Paused {
    /// `operator`, or the automatic pause's reason.
    pub(super) reason: String,
    pub(super) automatic: bool,
}

impl Paused {
    pub(super) fn of(h: &Handler) -> Option<Self> {
        h.pause.as_ref().map(|p| Paused {
            reason: p.reason.clone(),
            automatic: p.is_automatic(),
        })
    }
}

#[derive(Template)]
#[template(path = "handlers.html")]
struct ListPage {
    chrome: Chrome,
    filter: Search,
    event_groups: Vec<EventGroup>,
    rows: Vec<Row>,
    total: u64,
    pager: Pager,
    /// This page's URL, for forms that come back here.
    back: String,
}

async fn list(Operator { state, session }: Operator, Query(search): Query<Search>) -> PageResult {
    let filter = HandlerFilter {
        events_id: Some(search.events_id.clone()).filter(|s| !s.is_empty()),
        kind: search.kind.parse().ok(),
        status: search.status.parse().ok(),
        include_archived: false,
        stage: None,
        q: Some(search.q.clone()).filter(|s| !s.is_empty()),
    };
    let page = search.page.unwrap_or(1).max(1);
    let per_page = PER_PAGE;
    let (handlers, total) = state
        .store()
        .list_handlers(&filter, Page { page, per_page })
        .await?;
    let groups = event_groups(&state).await?;
    let page_url = |p: u32| {
        let p = p.to_string();
        with_query(
            "/handlers",
            &[
                ("events_id", &search.events_id),
                ("kind", &search.kind),
                ("status", &search.status),
                ("q", &search.q),
                ("page", &p),
            ],
        )
    };
    let back = page_url(page);
    let pager = Pager::new(page, total, PER_PAGE, page_url);
    let snapshot = state.board().read(PAGE_WAIT).await?;
    let rows = handlers.iter().map(|h| row(h, &snapshot)).collect();
    let chrome = Chrome::new(&session, "handlers", search.notice.as_deref());
    Ok(render(
        StatusCode::OK,
        &ListPage {
            chrome,
            filter: search,
            event_groups: groups,
            rows,
            total,
            pager,
            back,
        },
    ))
}

fn row(h: &Handler, snapshot: &Snapshot) -> Row {
    let (health, queue) = snapshot.view(h);
    Row {
        id: h.id,
        priority: h.spec.priority,
        name: h.spec.name.clone(),
        events_id: h.spec.events_id.to_string(),
        stage: h.spec.stage.as_str(),
        kind_label: match h.spec.kind {
            HandlerKind::Http => "HTTP",
            HandlerKind::Script => "Script",
        },
        target: h.spec.target.clone(),
        status: h.spec.status.as_str(),
        pausable: h.spec.stage == Stage::After,
        paused: Paused::of(h),
        held: queue.held,
        shown: Shown::new(&health, &queue, snapshot.as_of_ms),
    }
}

/// `err` as a page, where "not found" means the handler is gone.
pub(super) fn gone(session: &Session, err: OpError) -> PageError {
    session.not_found(err, "Handler not found", "It may have been deleted.")
}

pub(super) async fn find(
    state: &AppState,
    session: &Session,
    id: i64,
) -> Result<Handler, PageError> {
    state
        .engine()
        .handler(id)
        .await
        .map_err(|e| gone(session, e))
}

/// Switches enabled ↔ disabled. Archived handlers change only in the form.
async fn toggle(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(form): Posted<ToggleForm>,
) -> PageResult {
    let handler = match state.engine().toggle_handler(id).await {
        Ok(handler) => handler,
        Err(OpError::Conflict(_)) => {
            return Err(session.error(
                StatusCode::CONFLICT,
                "Handler archived",
                "An archived handler is changed in its edit form.",
            ));
        }
        Err(err) => return Err(gone(&session, err)),
    };
    Ok(back_to(&form.back, handler.spec.status.as_str()))
}

/// Back to the handlers table (or a handler's page) a switch was on, with a
/// notice; anywhere else leads to the table.
fn back_to(back: &str, notice: &str) -> axum::response::Response {
    let back = if back.starts_with("/handlers") {
        back
    } else {
        "/handlers"
    };
    let separator = if back.contains('?') { '&' } else { '?' };
    see_other(&format!("{back}{separator}notice={notice}"))
}

/// Pauses an after-stage handler: its deliveries are kept (held) until it
/// resumes.
async fn pause(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(form): Posted<ToggleForm>,
) -> PageResult {
    match state.engine().pause_handler(id).await {
        Ok(_) => Ok(back_to(&form.back, "paused")),
        Err(OpError::Conflict(message)) => {
            Err(session.error(StatusCode::CONFLICT, "Cannot pause", &message))
        }
        Err(err) => Err(gone(&session, err)),
    }
}

/// Resumes a paused handler: what it held is sent in per-object order.
async fn resume(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(form): Posted<ToggleForm>,
) -> PageResult {
    state
        .engine()
        .resume_handler(id)
        .await
        .map_err(|err| gone(&session, err))?;
    Ok(back_to(&form.back, "resumed"))
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmPage {
    chrome: Chrome,
    id: i64,
    name: String,
}

async fn confirm_delete(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
) -> PageResult {
    let name = find(&state, &session, id).await?.spec.name;
    let chrome = Chrome::new(&session, "handlers", None);
    Ok(render(StatusCode::OK, &ConfirmPage { chrome, id, name }))
}

async fn delete(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(CsrfForm {}): Posted<CsrfForm>,
) -> PageResult {
    state.engine().delete_handler(id).await.map_err(|err| {
        session.not_found(
            err,
            "Handler not found",
            "It may have been deleted already.",
        )
    })?;
    Ok(see_other("/handlers?notice=deleted"))
}
