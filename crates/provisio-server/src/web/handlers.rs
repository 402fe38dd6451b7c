//! The Handlers table, its Advanced Search, and the New/Edit handler form.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use provisio_core::FieldErrors;
use provisio_core::handler::{Handler, HandlerKind, HandlerSpec, Status};
use provisio_store::{HandlerFilter, Page, StoreResult};
use serde::Deserialize;

use super::handler_form::HandlerForm;
use super::session::Session;
use super::{Chrome, EventGroup, error_page, event_groups, failed, render, see_other, with_query};
use crate::AppState;
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/handlers", get(list).post(create))
        .route("/handlers/new", get(new_form))
        .route("/handlers/{id}", axum::routing::post(update))
        .route("/handlers/{id}/edit", get(edit_form))
        .route("/handlers/{id}/toggle", axum::routing::post(toggle))
        .route("/handlers/{id}/delete", get(confirm_delete).post(delete))
}

const PER_PAGE: u32 = 25;

/// The Advanced Search fields, as typed (kept in the URL for bookmarks).
#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    events_id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    q: String,
    page: Option<u32>,
    notice: Option<String>,
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
}

#[derive(Template)]
#[template(path = "handlers.html")]
struct ListPage {
    chrome: Chrome,
    filter: Search,
    event_groups: Vec<EventGroup>,
    rows: Vec<Row>,
    total: u64,
    page: u32,
    pages: u64,
    prev_page: Option<String>,
    next_page: Option<String>,
    /// This page's URL, for forms that come back here.
    back: String,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(search): Query<Search>,
) -> Response {
    let filter = HandlerFilter {
        events_id: Some(search.events_id.clone()).filter(|s| !s.is_empty()),
        kind: search.kind.parse().ok(),
        status: search.status.parse().ok(),
        include_archived: false,
        stage: None,
        q: Some(search.q.clone()).filter(|s| !s.is_empty()),
    };
    let page = search.page.unwrap_or(1).max(1);
    let (handlers, total) = match state
        .store()
        .list_handlers(
            &filter,
            Page {
                page,
                per_page: PER_PAGE,
            },
        )
        .await
    {
        Ok(found) => found,
        Err(err) => return failed(err),
    };
    let groups = match event_groups(&state).await {
        Ok(g) => g,
        Err(page) => return page,
    };
    let pages = total.div_ceil(u64::from(PER_PAGE)).max(1);
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
    let prev_page = (page > 1).then(|| page_url(page - 1));
    let next_page = (u64::from(page) < pages).then(|| page_url(page + 1));
    let rows = handlers.iter().map(row).collect();
    let chrome = Chrome::new(&session, "handlers", search.notice.as_deref());
    render(
        StatusCode::OK,
        &ListPage {
            chrome,
            filter: search,
            event_groups: groups,
            rows,
            total,
            page,
            pages,
            prev_page,
            next_page,
            back,
        },
    )
}

fn row(h: &Handler) -> Row {
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
}

async fn form_page(
    state: &AppState,
    session: &Session,
    heading: String,
    action: String,
    form: HandlerForm,
    errors: FieldErrors,
) -> Response {
    let mut groups = match event_groups(state).await {
        Ok(g) => g,
        Err(page) => return page,
    };
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
    render(
        status,
        &FormPage {
            chrome,
            heading,
            action,
            form,
            errors,
            event_groups: groups,
        },
    )
}

async fn new_form(State(state): State<AppState>, session: Session) -> Response {
    form_page(
        &state,
        &session,
        "New Handler".into(),
        "/handlers".into(),
        HandlerForm::blank(),
        FieldErrors::new(),
    )
    .await
}

/// Validates the form the way the API validates JSON; `Err` is the form again
/// with the messages.
async fn validated(
    state: &AppState,
    session: &Session,
    heading: &str,
    action: &str,
    form: HandlerForm,
) -> Result<HandlerSpec, Response> {
    let (draft, mut errors) = form.to_draft();
    match state.engine().validate_handler(draft) {
        Ok(spec) if errors.is_empty() => return Ok(spec),
        Ok(_) => {}
        Err(refused) => {
            for (field, message) in refused.iter() {
                errors.add(field, message);
            }
        }
    }
    Err(form_page(state, session, heading.into(), action.into(), form, errors).await)
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<HandlerForm>,
) -> Response {
    if let Err(page) = session.verify_csrf(&form.csrf, &headers) {
        return page;
    }
    let spec = match validated(&state, &session, "New Handler", "/handlers", form).await {
        Ok(spec) => spec,
        Err(page) => return page,
    };
    if let Err(page) = apply(&state, state.store().insert_handler(&spec)).await {
        return page;
    }
    see_other("/handlers?notice=created")
}

/// Makes a handler change take effect: the write, then the routing table's
/// rebuild, so the change governs the next emit (as through the API).
async fn apply<T>(
    state: &AppState,
    write: impl Future<Output = StoreResult<T>>,
) -> Result<T, Response> {
    let written = write.await.map_err(failed)?;
    state.engine().reload().await.map_err(failed)?;
    Ok(written)
}

async fn find(state: &AppState, session: &Session, id: i64) -> Result<Handler, Response> {
    match state.store().get_handler(id).await {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            &session.csrf,
            "Handler not found",
            "It may have been deleted.",
        )),
        Err(err) => Err(failed(err)),
    }
}

async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    let handler = match find(&state, &session, id).await {
        Ok(h) => h,
        Err(page) => return page,
    };
    let heading = format!("Edit handler {}", handler.spec.name);
    form_page(
        &state,
        &session,
        heading,
        format!("/handlers/{id}"),
        HandlerForm::from_spec(&handler.spec),
        FieldErrors::new(),
    )
    .await
}

async fn update(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    Form(form): Form<HandlerForm>,
) -> Response {
    if let Err(page) = session.verify_csrf(&form.csrf, &headers) {
        return page;
    }
    let handler = match find(&state, &session, id).await {
        Ok(h) => h,
        Err(page) => return page,
    };
    let heading = format!("Edit handler {}", handler.spec.name);
    let spec = match validated(&state, &session, &heading, &format!("/handlers/{id}"), form).await {
        Ok(spec) => spec,
        Err(page) => return page,
    };
    if let Err(page) = apply(&state, state.store().update_handler(id, &spec)).await {
        return page;
    }
    see_other("/handlers?notice=updated")
}

#[derive(Deserialize)]
struct ToggleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
}

/// Switches enabled ↔ disabled. Archived handlers change only in the form.
async fn toggle(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    Form(form): Form<ToggleForm>,
) -> Response {
    if let Err(page) = session.verify_csrf(&form.csrf, &headers) {
        return page;
    }
    let handler = match find(&state, &session, id).await {
        Ok(h) => h,
        Err(page) => return page,
    };
    let mut spec = handler.spec.clone();
    spec.status = match spec.status {
        Status::Enabled => Status::Disabled,
        Status::Disabled => Status::Enabled,
        Status::Archived => {
            return error_page(
                StatusCode::CONFLICT,
                &session.csrf,
                "Handler archived",
                "An archived handler is changed in its edit form.",
            );
        }
    };
    if let Err(page) = apply(&state, state.store().update_handler(id, &spec)).await {
        return page;
    }
    let back = if form.back.starts_with("/handlers") {
        form.back.as_str()
    } else {
        "/handlers"
    };
    let separator = if back.contains('?') { '&' } else { '?' };
    see_other(&format!("{back}{separator}notice={}", spec.status))
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmPage {
    chrome: Chrome,
    id: i64,
    name: String,
}

async fn confirm_delete(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    let handler = match find(&state, &session, id).await {
        Ok(h) => h,
        Err(page) => return page,
    };
    let chrome = Chrome::new(&session, "handlers", None);
    render(
        StatusCode::OK,
        &ConfirmPage {
            chrome,
            id,
            name: handler.spec.name,
        },
    )
}

async fn delete(
    State(state): State<AppState>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    Form(form): Form<ToggleForm>,
) -> Response {
    if let Err(page) = session.verify_csrf(&form.csrf, &headers) {
        return page;
    }
    match apply(&state, state.store().delete_handler(id)).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::NOT_FOUND,
                &session.csrf,
                "Handler not found",
                "It may have been deleted already.",
            );
        }
        Err(page) => return page,
    }
    see_other("/handlers?notice=deleted")
}
