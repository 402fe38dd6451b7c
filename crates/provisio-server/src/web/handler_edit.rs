//! The New and Edit handler pages: the form (with Preview and Dry run), and
//! on a stored handler's page its pause, its signing secret (reveal, copy,
//! rotate after a confirmation), and links to its logs and to delete it.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use provisio_core::FieldErrors;
use provisio_core::handler::{Handler, Stage};
use provisio_engine::OpError;
use provisio_engine::{DryRun, TestCall, TestEvent, TestReport, TestRequest};
use serde::Deserialize;

use super::handler_form::{FIELD_ORDER, HandlerForm};
use super::handlers::{Paused, find, gone};
use super::session::{CsrfForm, Operator, Posted, Session};
use super::{
    Chrome, EventGroup, PageError, PageResult, Sample, event_groups_and_samples, render, see_other,
};
use crate::AppState;
use crate::board::PAGE_WAIT;
use crate::extract::ApiPath;

/// The secret's routes; the form's own are in `handlers::router` beside the
/// table's, as they share its paths.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/handlers/{id}/secret/rotate",
        get(confirm_rotate).post(rotate),
    )
}

#[derive(Template)]
#[template(path = "handler_form.html")]
struct FormPage {
    chrome: Chrome,
    heading: String,
    action: String,
    form: HandlerForm,
    errors: BTreeMap<String, String>,
    /// The first field in error in the form's order: it takes the focus.
    first_error: &'static str,
    event_groups: Vec<EventGroup>,
    samples: Vec<Sample>,
    tried: Option<Tried>,
    /// A stored after-stage handler: its pause and held deliveries, shown
    /// with a Pause/Resume button above the form.
    pause: Option<PauseBox>,
    /// A stored handler: its links and its signing secret.
    stored: Option<StoredBox>,
}

impl FormPage {
    /// The attributes of a field the server refused: outlined (style.css
    /// reads `aria-invalid`), and the first one takes the focus (htmx and
    /// the browser both honour `autofocus` on a new page).
    fn invalid(&self, field: &str) -> &'static str {
        match (self.errors.contains_key(field), self.first_error == field) {
            (true, true) => r#"aria-invalid="true" autofocus"#,
            (true, false) => r#"aria-invalid="true""#,
            _ => "",
        }
    }
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

/// What a stored handler's page shows above its form.
struct StoredBox {
    id: i64,
    /// The signing secret, only once the operator asked to see it.
    secret: Option<String>,
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
        // The same figures as the handlers table and the overview.
        let (_, queue) = state.board().read(PAGE_WAIT).await?.view(h);
        Ok(Some(PauseBox {
            id: h.id,
            paused: Paused::of(h),
            held: queue.held,
        }))
    }

    fn stored_box(&self, reveal: bool) -> Option<StoredBox> {
        let Editing::Stored(h) = self else {
            return None;
        };
        Some(StoredBox {
            id: h.id,
            secret: reveal.then(|| h.secret.expose()),
        })
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

/// How the form page is shown, beyond the form's own values.
#[derive(Default)]
struct View {
    errors: FieldErrors,
    tried: Option<Tried>,
    /// Show the stored handler's signing secret.
    reveal: bool,
    notice: Option<&'static str>,
}

/// The handler form, blank or as the operator filled it in, with a message
/// next to each field that needs one.
async fn form_page(
    state: &AppState,
    session: &Session,
    editing: &Editing,
    form: HandlerForm,
    view: View,
) -> PageResult {
    let (mut groups, samples) = event_groups_and_samples(state).await?;
    // A pattern typed through the API that the lists do not offer is kept.
    if !form.events_id.is_empty() && !groups.iter().any(|g| g.types.contains(&form.events_id)) {
        groups.push(EventGroup {
            name: "Current".into(),
            types: vec![form.events_id.clone()],
        });
    }
    let status = if view.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let errors: BTreeMap<String, String> = view
        .errors
        .iter()
        .map(|(k, v)| (k.split('.').next().unwrap_or(k).to_owned(), v.to_owned()))
        .collect();
    let first_error = FIELD_ORDER
        .iter()
        .find(|f| errors.contains_key(**f))
        .copied()
        .unwrap_or("");
    let mut chrome = Chrome::new(session, "handlers", None);
    chrome.notice = view.notice.map(str::to_owned);
    let pause = editing.pause_box(state).await?;
    Ok(render(
        status,
        &FormPage {
            chrome,
            heading: editing.heading(),
            action: editing.action(),
            form,
            errors,
            first_error,
            event_groups: groups,
            samples,
            tried: view.tried,
            pause,
            stored: editing.stored_box(view.reveal),
        },
    ))
}

pub(super) async fn new_form(Operator { state, session }: Operator) -> PageResult {
    let blank = HandlerForm::blank();
    form_page(&state, &session, &Editing::New, blank, View::default()).await
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
    let view = match done {
        Ok(Done::Saved(notice)) => return Ok(see_other(&format!("/handlers?notice={notice}"))),
        Ok(Done::Previewed(report)) => View {
            tried: Some(Tried::Preview((*report).into())),
            ..View::default()
        },
        Ok(Done::DryRun(run)) => View {
            tried: Some(Tried::DryRun(run)),
            ..View::default()
        },
        Err(OpError::Invalid(errors)) => View {
            errors,
            ..View::default()
        },
        Err(err) => return Err(gone(session, err)),
    };
    form_page(state, session, &editing, form, view).await
}

pub(super) async fn create(
    Operator { state, session }: Operator,
    Posted(form): Posted<HandlerForm>,
) -> PageResult {
    save(&state, &session, Editing::New, form).await
}

/// The Edit page's query: `reveal` shows the signing secret (the Reveal
/// link asks for it; the page after a rotation shows the new one).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct EditQuery {
    reveal: Option<String>,
    rotated: Option<String>,
}

pub(super) async fn edit_form(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Query(query): Query<EditQuery>,
) -> PageResult {
    let handler = find(&state, &session, id).await?;
    let form = HandlerForm::from_spec(&handler.spec);
    let editing = Editing::Stored(Box::new(handler));
    let view = View {
        reveal: query.reveal.is_some() || query.rotated.is_some(),
        notice: query.rotated.is_some().then_some(
            "The handler has a new signing secret, used from its next call on: give it to the receiver.",
        ),
        ..View::default()
    };
    form_page(&state, &session, &editing, form, view).await
}

pub(super) async fn update(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(form): Posted<HandlerForm>,
) -> PageResult {
    let editing = Editing::stored(&state, &session, id).await?;
    save(&state, &session, editing, form).await
}

#[derive(Template)]
#[template(path = "confirm_rotate.html")]
struct ConfirmRotatePage {
    chrome: Chrome,
    id: i64,
    name: String,
}

/// Rotating breaks every receiver that verifies signatures until it is given
/// the new secret, so it is asked for on a page of its own first.
async fn confirm_rotate(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
) -> PageResult {
    let name = find(&state, &session, id).await?.spec.name;
    let chrome = Chrome::new(&session, "handlers", None);
    Ok(render(
        StatusCode::OK,
        &ConfirmRotatePage { chrome, id, name },
    ))
}

/// Gives the handler a new signing secret (the engine's use case, as the
/// API's rotate), then shows it on the Edit page.
async fn rotate(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<i64>,
    Posted(CsrfForm {}): Posted<CsrfForm>,
) -> PageResult {
    state
        .engine()
        .rotate_secret(id)
        .await
        .map_err(|err| gone(&session, err))?;
    Ok(see_other(&format!("/handlers/{id}/edit?rotated=1")))
}
