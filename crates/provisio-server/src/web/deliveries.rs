//! A delivery's page (its state, next attempt and every attempt, with Retry
//! now and Skip) and an event's page (every handler it went to, and those it
//! was filtered out for). The actions on a delivery answer with its page.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use provisio_engine::OpError;
use provisio_store::{DeliveryRecord, FilteredOut, Redelivery};

use super::executions::{DeliveryView, Row, date, pretty, row};
use super::session::{Operator, Posted, Session};
use super::{Chrome, NoticeQuery, PageResult, render, see_other};
use crate::AppState;
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/redeliver", post(redeliver))
        .route("/deliveries/{id}/skip", post(skip))
        .route("/events/{id}", get(event))
}

/// How many attempts a delivery's page lists (the newest).
const ATTEMPTS_SHOWN: u32 = 100;

/// The delivery states in which it will still be attempted on its own.
fn is_open(state: &str) -> bool {
    matches!(state, "pending" | "waiting" | "held" | "blocked")
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    chrome: Chrome,
    d: DeliveryView,
    finished_at: Option<String>,
    handler_name: Option<String>,
    events_id: String,
    object_id: String,
    /// Its attempts, newest first, as the log lists them.
    rows: Vec<Row>,
    /// More attempts than shown.
    more_attempts: bool,
    /// Still to be attempted: the page refreshes itself.
    open: bool,
    action_error: Option<String>,
}

async fn delivery(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    delivery_page(&state, &session, &id, q.notice.as_deref(), None).await
}

async fn delivery_page(
    state: &AppState,
    session: &Session,
    id: &str,
    notice: Option<&str>,
    action_error: Option<String>,
) -> PageResult {
    let detail = state
        .engine()
        .delivery_detail(id, ATTEMPTS_SHOWN)
        .await
        .map_err(|err| {
            session.not_found(
                err,
                "Delivery not found",
                "There is no delivery with that id.",
            )
        })?;
    let finished_at = detail.delivery.finished_at.map(date);
    let d = DeliveryView::from(detail.delivery);
    Ok(render(
        StatusCode::OK,
        &DeliveryPage {
            chrome: Chrome::new(session, "executions", notice),
            open: is_open(d.state),
            d,
            finished_at,
            handler_name: detail.handler_name,
            events_id: detail.event.events_id,
            object_id: detail.event.object_id.key(),
            more_attempts: detail.more_attempts,
            rows: detail.attempts.iter().map(row).collect(),
            action_error,
        },
    ))
}

/// The notice key for what a redeliver did (notices are chosen by key).
fn redelivered_notice(done: &Redelivery, d: &DeliveryRecord) -> &'static str {
    match done {
        Redelivery::NewRound if d.state == provisio_core::event::DeliveryState::Waiting => {
            "retry-queued-behind"
        }
        Redelivery::NewRound => "redelivered",
        Redelivery::DueNow => "retry-due-now",
        Redelivery::HeadDueNow(_) => "retry-head-due-now",
        Redelivery::InFlight(_) => "retry-in-flight",
    }
}

/// The actions take no fields but the CSRF token.
#[derive(serde::Deserialize)]
struct NoFields {}

/// "Retry now" / "Redeliver" / "Retry": then the delivery's page, where the
/// new attempt appears.
async fn redeliver(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Posted(_): Posted<NoFields>,
) -> PageResult {
    let done = state.engine().redeliver(&id).await;
    let notice = done.map(|(d, how)| redelivered_notice(&how, &d));
    answer_action(&state, &session, &id, notice).await
}

/// Skips a blocked delivery in the name of the session's token.
async fn skip(
    Operator { state, session }: Operator,
    ApiPath(id): ApiPath<String>,
    Posted(_): Posted<NoFields>,
) -> PageResult {
    let done = state.engine().skip_delivery(&id, &session.token_name).await;
    answer_action(&state, &session, &id, done.map(|_| "skipped")).await
}

/// The delivery's page after an action on it: with the notice when it was
/// done, with the refusal when it clashed with the delivery's state.
async fn answer_action(
    state: &AppState,
    session: &Session,
    id: &str,
    done: Result<&'static str, OpError>,
) -> PageResult {
    match done {
        Ok(notice) => Ok(see_other(&format!("/deliveries/{id}?notice={notice}"))),
        Err(OpError::Conflict(message)) => {
            delivery_page(state, session, id, None, Some(message)).await
        }
        Err(err) => Err(session.not_found(
            err,
            "Delivery not found",
            "There is no delivery with that id.",
        )),
    }
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    chrome: Chrome,
    id: String,
    events_id: String,
    object_id: String,
    dt: String,
    data: String,
    /// Each delivery with its handler's name (none: deleted).
    deliveries: Vec<(Option<String>, DeliveryView)>,
    filtered_out: Vec<(Option<String>, FilteredOut)>,
    /// A delivery is still open: the page refreshes itself.
    open: bool,
}

async fn event(Operator { state, session }: Operator, ApiPath(id): ApiPath<String>) -> PageResult {
    let store = state.store();
    let (event, deliveries) = store.get_event(&id).await?.ok_or_else(|| {
        session.error(
            StatusCode::NOT_FOUND,
            "Event not found",
            "There is no stored event with that id (a before-stage run is not stored as an event; its calls are in the log).",
        )
    })?;
    let filtered_out = store.filtered_out(&id).await?;
    let names: HashMap<i64, String> = store
        .all_handlers()
        .await?
        .into_iter()
        .map(|h| (h.id, h.spec.name))
        .collect();
    let name = |handler_id: i64| names.get(&handler_id).cloned();
    let deliveries: Vec<(Option<String>, DeliveryView)> = deliveries
        .into_iter()
        .map(|d| (name(d.handler_id), DeliveryView::from(d)))
        .collect();
    Ok(render(
        StatusCode::OK,
        &EventPage {
            chrome: Chrome::new(&session, "executions", None),
            open: deliveries.iter().any(|(_, d)| is_open(d.state)),
            deliveries,
            filtered_out: filtered_out
                .into_iter()
                .map(|f| (name(f.handler_id), f))
                .collect(),
            events_id: event.events_id,
            object_id: event.object_id.key(),
            dt: date(event.dt),
            data: pretty(&event.data),
            id,
        },
    ))
}
