//! The Handlers table (with each handler's health and queue), its Advanced
//! Search, and the New/Edit handler form.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_core::FieldErrors;
use provisio_core::handler::{Handler, HandlerKind, Stage};
use provisio_engine::OpError;
use provisio_engine::{DryRun, TestCall, TestEvent, TestReport, TestRequest};
use provisio_store::{HandlerFilter, Page};
use serde::Deserialize;

use super::handler_form::HandlerForm;
use super::health_view::Shown;
use super::session::{CsrfForm, Operator, Posted, Session};
use super::{
    Chrome, EventGroup, PageError, PageResult, Pager, Sample, event_groups,
    event_groups_and_samples, render, see_other, with_query,
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

#[derive(Template)]
#[template(path = "handler_form.html")]
struct FormPage {
    chrome: Chrome,
    heading: String,
    action: String,
    form: HandlerForm,
    errors: BTreeMap<String, String>,
    event_groups: Vec<EventGroup>,
    samples: Vec<Sample>,
    tried: Option<Tried>,
    /// A stored after-stage handler: its pause and held deliveries, shown
    /// with a Pause/Resume button above the form.
    pause: Option<PauseBox>,
}

/// What the form's Preview or Dry run button found.
enum Tried {
    Preview(Preview),
    DryRun(DryRun),
}

/// What the form's handler would send for a sample event.
struct Preview {
    events_id: String,
    passed_filter: bool,
    filter_error: Option<String>,
    request: Option<TestCall>,
    error: Option<String>,
}

impl From<TestReport> for Preview {
    fn from(r: TestReport) -> Self {
        let request = r.request.map(|mut call| {
            // JSON bodies indented, as the log shows them.
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&call.body) {
                call.body = serde_json::to_string_pretty(&value).unwrap_or(call.body);
            }
            call
        });
        Self {
            events_id: r.event.events_id,
            passed_filter: r.passed_filter,
            filter_error: r.filter_error,
            request,
            error: r.error,
        }
    }
}

/// The Pause/Resume box of a stored handler's page.
struct PauseBox {
    id: i64,
    paused: Option<Paused>,
    held: u64,
}

/// Which handler a form is about: a new one, or a stored one.
enum Editing {
    New,
    Stored(Box<Handler>),
}

impl Editing {
    async fn stored(state: &AppState, session: &Session, id: i64) -> Result<Self, PageError> {
        let handler = find(state, session, id).await?;
        Ok(Editing::Stored(Box::new(handler)))
    }

    /// The Pause/Resume box of a stored after-stage handler.
    async fn pause_box(&self, state: &AppState) -> Result<Option<PauseBox>, PageError> {
        let Editing::Stored(h) = self else {
            return Ok(None);
        };
        if h.spec.stage != Stage::After {
            return Ok(None);
        }
        let counts = state.store().queue_counts(&[h.id]).await?;
        Ok(Some(PauseBox {
            id: h.id,
            paused: Paused::of(h),
            held: counts.get(&h.id).map_or(0, |c| c.held),
        }))
    }

    fn heading(&self) -> String {
        match self {
            Editing::New => "New Handler".into(),
            Editing::Stored(h) => format!("Edit handler {}", h.spec.name),
        }
    }

    fn action(&self) -> String {
        match self {
            Editing::New => "/handlers".into(),
            Editing::Stored(h) => format!("/handlers/{}", h.id),
        }
    }
}

/// The handler form, blank or as the operator filled it in, with a message
/// next to each field that needs one.
async fn form_page(
    state: &AppState,
    session: &Session,
    editing: &Editing,
    form: HandlerForm,
    errors: FieldErrors,
    tried: Option<Tried>,
) -> PageResult {
    let (mut groups, samples) = event_groups_and_samples(state).await?;
    // A pattern typed through the API that the lists do not offer is kept.
    if !form.events_id.is_empty() && !groups.iter().any(|g| g.types.contains(&form.events_id)) {
        groups.push(EventGroup {
            name: "Current".into(),
            types: vec![form.events_id.clone()],
        });
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let errors = errors
        .iter()
        .map(|(k, v)| (k.split('.').next().unwrap_or(k).to_owned(), v.to_owned()))
        .collect();
    let chrome = Chrome::new(session, "handlers", None);
    let pause = editing.pause_box(state).await?;
    Ok(render(
        status,
        &FormPage {
            chrome,
            heading: editing.heading(),
            action: editing.action(),
            form,
            errors,
            event_groups: groups,
            samples,
            tried,
            pause,
        },
    ))
}

async fn new_form(Operator { state, session }: Operator) -> PageResult {
    let blank = HandlerForm::blank();
    form_page(
        &state,
        &session,
        &Editing::New,
        blank,
        FieldErrors::new(),
        None,
    )
    .await
}

/// What a posted form led to.
enum Done {
    Saved(&'static str),
    Previewed(Box<TestReport>),
    DryRun(DryRun),
}

/// How many logged events the form's Dry run looks at.
const DRY_RUN_EVENTS: u32 = 100;

/// Saves a posted form through the engine, which validates it the way the API
/// validates JSON; a form with errors is shown again with the operator's input.
/// The Preview button saves nothing: the form comes back with what its
/// handler, as typed, would send for the chosen event type's sample.
async fn save(
    state: &AppState,
    session: &Session,
    editing: Editing,
    form: HandlerForm,
) -> PageResult {
    let engine = state.engine();
    let draft = form.to_draft(engine).map_err(OpError::Invalid);
    let done = match (draft, &editing) {
        (Err(refused), _) => Err(refused),
        (Ok(draft), _) if !form.dry_run.is_empty() => engine
            .dry_run_draft(draft, DRY_RUN_EVENTS)
            .await
            .map(Done::DryRun),
        (Ok(draft), _) if !form.preview.is_empty() => {
            let test = TestRequest {
                event: TestEvent::Given {
                    events_id: Some(form.preview_events_id.clone()).filter(|e| !e.is_empty()),
                    object_id: None,
                    data: None,
                },
                send: false,
            };
            engine
                .test_draft(draft, test)
                .await
                .map(|r| Done::Previewed(Box::new(r)))
        }
        (Ok(draft), Editing::New) => engine
            .create_handler(draft)
            .await
            .map(|_| Done::Saved("created")),
        (Ok(draft), Editing::Stored(h)) => engine
            .update_handler(h.id, draft)
            .await
            .map(|_| Done::Saved("updated")),
    };
    match done {
        Ok(Done::Saved(notice)) => Ok(see_other(&format!("/handlers?notice={notice}"))),
        Ok(Done::Previewed(report)) => {
            let preview = Some(Tried::Preview((*report).into()));
            form_page(state, session, &editing, form, FieldErrors::new(), preview).await
        }
        Ok(Done::DryRun(run)) => {
            let tried = Some(Tried::DryRun(run));
            form_page(state, session, &editing, form, FieldErrors::new(), tried).await
        }
        Err(OpError::Invalid(errors)) => {
            form_page(state, session, &editing, form, errors, None).await
        }
        Err(err) => Err(gone(session, err)),
    }
}

async fn create(
    Operator { state, session }: Operator,
    Posted(form): Posted<HandlerForm>,
) -> PageResult {
    save(&state, &session, Editing::New, form).await
}

/// `err` as a page, where "not found" means the handler is gone.
fn gone(session: &Session, err: OpError) -> PageError {
    session.not_found(err, "Handler not found", "It may have been deleted.")
}

async fn find(state: &AppState, session: &Session, id: i64) -> Result<Handler, PageError> {
    state
        .engine()
        .handler(id)
        .await
        .map_err(|e| gone(session, e))
}

async fn edit_form(Operator { state, session }: Operator, ApiPath(id): ApiPath<i64>) -> PageResult {
    let handler = find(&state, &session, id).await?;
    let form = HandlerForm::from_spec(&handler.spec);
    let editing = Editing::Stored(Box::new(handler));
    form_page(&state, &session, &editing, form, FieldErrors::new(), None).await
}

async fn update(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(form): Posted<HandlerForm>,
) -> PageResult {
    let editing = Editing::stored(&state, &session, id).await?;
    save(&state, &session, editing, form).await
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
