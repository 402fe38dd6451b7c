//! The web section (Integration > Provisioning API): server-rendered pages with
//! askama templates, a little htmx (served from the binary) for live rows and
//! boosted navigation, a session cookie, and anti-CSRF tokens on every form.
//!
//! - [`session`]: login, logout, the `Session` extractor and CSRF checks.
//! - [`handlers`]: the Handlers table (health and queue), Advanced Search,
//!   toggle, pause, delete; `handler_edit`: the New/Edit handler pages (with
//!   the Edit page's signing secret); `handler_form`: the form's fields as
//!   text and their conversion to a draft.
//! - [`executions`]: the Execution Logs and an execution's details.
//! - [`deliveries`]: a delivery's page (every attempt, Retry now, Skip) and
//!   an event's page (every handler it went to).
//! - [`overview`]: the queue, and per handler its state, queue and outcomes
//!   over the last 24 hours; `health_view`: how both pages word a handler's
//!   health and queue.
//! - [`replays`]: replay jobs with their progress and cancel, and the
//!   "Replay these to …" form the Execution Logs open.
//!
//! Every change goes through the engine's use cases (`provisio_engine::service`),
//! as the API's do; this section never imports the API. Page handlers return
//! [`PageResult`] and use `?`: a [`PageError`] is shown as an error page.

mod deliveries;
mod executions;
mod handler_edit;
mod handler_form;
mod handlers;
mod health_view;
mod overview;
mod replays;
pub mod session;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use provisio_engine::{EngineError, OpError};
use provisio_store::StoreError;

use crate::AppState;

/// Every page of the section, each answered `Cache-Control: no-store` unless
/// it says otherwise (the assets do): see [`session::no_store`].
pub fn router() -> Router<AppState> {
    pages().layer(axum::middleware::map_response(session::no_store))
}

fn pages() -> Router<AppState> {
    Router::new()
        .merge(session::router())
        .merge(handlers::router())
        .merge(handler_edit::router())
        .merge(executions::router())
        .merge(deliveries::router())
        .merge(overview::router())
        .merge(replays::router())
        .route("/assets/htmx.min.js", get(htmx))
        .route("/assets/style.css", get(style))
}

async fn htmx() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/htmx.min.js"),
    )
}

async fn style() -> impl IntoResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/style.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
}

/// What every page's frame needs: the session's CSRF token (empty when logged
/// out, which hides the navigation), the current section, and a notice.
pub struct Chrome {
    pub csrf: String,
    pub section: &'static str,
    pub notice: Option<String>,
}

impl Chrome {
    pub fn new(session: &session::Session, section: &'static str, notice: Option<&str>) -> Self {
        Self {
            csrf: session.csrf.clone(),
            section,
            notice: notice.and_then(notice_text).map(str::to_owned),
        }
    }
}

/// A page's `?notice=` key, left by the change that led to it.
#[derive(serde::Deserialize, Default)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// Notices are chosen by key, so a link can never put arbitrary text on a page.
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "The handler was created.",
        "updated" => "The handler was saved.",
        "deleted" => "The handler was deleted.",
        "enabled" => "The handler is enabled.",
        "disabled" => "The handler is disabled.",
        "paused" => "The handler is paused: its deliveries are held until it resumes.",
        "resumed" => "The handler resumed: held deliveries are being sent.",
        "redelivered" => "The delivery was queued to be sent again, due now.",
        "retry-queued-behind" => {
            "A new round was queued; it waits behind its object's earlier open deliveries."
        }
        "retry-due-now" => "The delivery is due now instead of at its retry time.",
        "retry-head-due-now" => {
            "This delivery waits behind an earlier one of the same object and may not overtake it: that one (the head of the line) is due now, and this one follows it."
        }
        "retry-in-flight" => "It is being attempted at this moment; nothing was changed.",
        "skipped" => "The delivery was skipped; the next one of its object is on its way.",
        "replay-started" => "The replay was started.",
        "replay-cancelled" => "The replay was cancelled: what it had not sent will not be sent.",
        "logged-out" => "You are logged out.",
        "expired" => "Your session expired; please log in again.",
        _ => return None,
    })
}

/// Renders a template, or a plain 500 page if it cannot be.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<h1>Internal error</h1>".to_owned()),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    heading: &'a str,
    message: &'a str,
}

/// An error page, with the navigation when the caller is logged in.
pub fn error_page(status: StatusCode, csrf: &str, heading: &str, message: &str) -> Response {
    let chrome = Chrome {
        csrf: csrf.to_owned(),
        section: "",
        notice: None,
    };
    render(
        status,
        &ErrorPage {
            chrome,
            heading,
            message,
        },
    )
}

pub fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "",
        "Page not found",
        "There is nothing at this address.",
    )
}

pub fn bad_address() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "",
        "Bad address",
        "This address holds an encoded NUL character (%00), which no page or search takes.",
    )
}

pub fn method_not_allowed() -> Response {
    error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "",
        "Method not allowed",
        "This address does not take this kind of request.",
    )
}

/// Why a page handler shows an error page instead of its own.
pub enum PageError {
    /// Storage failed or the server is stopping: logged, and shown as 503
    /// when worth trying again shortly (the database is unreachable, the
    /// server is stopping), as the API answers; 500 otherwise.
    Failed(EngineError),
    /// The page to show instead, made where the words are known (a handler
    /// that is not there, a form shown again with its messages).
    Page(Box<Response>),
}

/// What a page handler returns.
pub type PageResult = Result<Response, PageError>;

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Failed(err) => failed(err),
            PageError::Page(page) => *page,
        }
    }
}

impl From<EngineError> for PageError {
    fn from(err: EngineError) -> Self {
        PageError::Failed(err)
    }
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        PageError::Failed(err.into())
    }
}

/// A refusal no page handler words itself (each names what it expects: see
/// `Session::error`), said plainly; failures as [`failed`].
impl From<OpError> for PageError {
    fn from(err: OpError) -> Self {
        let (status, heading) = match err {
            OpError::Engine(err) => return PageError::Failed(err),
            OpError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid input"),
            OpError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            OpError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            OpError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        };
        PageError::Page(Box::new(error_page(status, "", heading, &err.to_string())))
    }
}

/// A failure inside a page handler, logged and shown as a page (see
/// [`PageError::Failed`]).
pub fn failed(err: impl Into<EngineError>) -> Response {
    let err = err.into();
    tracing::error!(error = %err, "web request failed");
    match &err {
        EngineError::Store(store) if store.is_unavailable() => database_unavailable(),
        EngineError::Store(_) => internal_error(),
        EngineError::ShuttingDown => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "Shutting down",
            "The server is stopping; try again shortly.",
        ),
    }
}

pub fn database_unavailable() -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "",
        "Database unavailable",
        "The server cannot reach its database right now; try again shortly.",
    )
}

pub fn internal_error() -> Response {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "",
        "Something went wrong",
        "The server could not complete this request; see its log.",
    )
}

/// A 303 to `location`.
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

/// The event catalog grouped for `<select>`s, plus the patterns it allows.
pub struct EventGroup {
    pub name: String,
    pub types: Vec<String>,
}

pub async fn event_groups(state: &AppState) -> Result<Vec<EventGroup>, PageError> {
    Ok(group_event_types(&state.store().list_event_types().await?))
}

fn group_event_types(types: &[provisio_core::catalog::EventType]) -> Vec<EventGroup> {
    let mut groups: Vec<EventGroup> = Vec::new();
    let mut patterns: Vec<String> = vec!["*".into()];
    for t in types {
        match groups.iter_mut().find(|g| g.name == t.group) {
            Some(g) => g.types.push(t.id.clone()),
            None => groups.push(EventGroup {
                name: t.group.clone(),
                types: vec![t.id.clone()],
            }),
        }
        let segments: Vec<&str> = t.id.split('.').collect();
        for n in 1..segments.len() {
            let pattern = format!("{}.*", segments[..n].join("."));
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
    }
    for g in &mut groups {
        g.types.sort();
    }
    patterns.sort();
    groups.push(EventGroup {
        name: "Patterns".into(),
        types: patterns,
    });
    groups
}

/// An event type's sample data, indented, for the handler form.
pub struct Sample {
    pub events_id: String,
    pub data: String,
}

/// The catalog grouped for `<select>`s, and each type's sample data.
pub async fn event_groups_and_samples(
    state: &AppState,
) -> Result<(Vec<EventGroup>, Vec<Sample>), PageError> {
    let types = state.store().list_event_types().await?;
    let samples = types
        .iter()
        .filter_map(|t| {
            let example = t.example.as_deref()?;
            let value: serde_json::Value = serde_json::from_str(example).ok()?;
            Some(Sample {
                events_id: t.id.clone(),
                data: serde_json::to_string_pretty(&value).ok()?,
            })
        })
        .collect();
    Ok((group_event_types(&types), samples))
}

/// Where a list page stands among its pages, with links to its neighbours.
pub struct Pager {
    pub page: u32,
    pub pages: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// Page `page` of `total` items shown `per_page` at a time; `url` links
    /// to another page.
    pub fn new(page: u32, total: u64, per_page: u32, url: impl Fn(u32) -> String) -> Self {
        let pages = total.div_ceil(u64::from(per_page)).max(1);
        Self {
            page,
            pages,
            prev: (page > 1).then(|| url(page - 1)),
            next: (u64::from(page) < pages).then(|| url(page + 1)),
        }
    }
}

/// Appends `key=value` pairs to a path as a query string, skipping empty values.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
