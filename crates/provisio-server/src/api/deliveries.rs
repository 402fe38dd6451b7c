//! `/deliveries`: one delivery with every attempt of it, "retry now"
//! (redeliver) and skip.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use provisio_core::event::{DeliveryState, ObjectId};
use provisio_store::{DeliveryRecord, TokenRecord};
use serde::Serialize;
use utoipa::ToSchema;

use super::executions::ExecutionOut;
use super::ts;
use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/deliveries/{id}", get(read))
        .route("/deliveries/{id}/redeliver", post(redeliver))
        .route("/deliveries/{id}/skip", post(skip))
}

/// How many attempts a delivery's read lists (the newest).
const ATTEMPTS_SHOWN: u32 = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The delivery's id: the `webhook-id` header of every attempt.
    pub id: String,
    pub event_id: String,
    pub handler_id: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// A `superseded` delivery: the newer delivery of the same object that
    /// was sent instead (conflation).
    pub superseded_by: Option<String>,
    /// A `waiting` delivery held up by a `blocked` one of the same object:
    /// that delivery's id (retry it with redeliver, or skip it).
    pub blocked_by: Option<String>,
}

impl From<DeliveryRecord> for DeliveryOut {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            handler_id: d.handler_id,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(ts),
            last_error: d.last_error,
            created_at: ts(d.created_at),
            finished_at: d.finished_at.map(ts),
            superseded_by: d.superseded_by,
            blocked_by: d.blocked_by,
        }
    }
}

/// A delivery with its handler, its event and its attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetailOut {
    #[serde(flatten)]
    pub delivery: DeliveryOut,
    /// The handler's name now; null when it was deleted.
    pub handler_name: Option<String>,
    /// The event's type.
    pub events_id: String,
    #[schema(value_type = Object)]
    pub object_id: ObjectId,
    /// Its attempts, newest first (at most 100): the execution log's rows
    /// of this delivery.
    pub executions: Vec<ExecutionOut>,
}

#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "events", params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery, its handler and event, and its attempts", body = DeliveryDetailOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeliveryDetailOut>> {
    let d = state.engine().delivery_detail(&id, ATTEMPTS_SHOWN).await?;
    Ok(Json(DeliveryDetailOut {
        delivery: d.delivery.into(),
        handler_name: d.handler_name,
        events_id: d.event.events_id,
        object_id: d.event.object_id,
        executions: d.attempts.into_iter().map(Into::into).collect(),
    }))
}

/// A delivery after "retry now", and what was done.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverOut {
    #[serde(flatten)]
    pub delivery: DeliveryOut,
    /// `new_round` (a finished or blocked delivery starts a new round of
    /// attempts), `due_now` (a pending one is due now), `head_due_now` (a
    /// waiting one may not overtake its object's line: the line's head is
    /// due now), `in_flight` (it, or its line's head, is being attempted at
    /// this moment: nothing changed).
    pub retry: String,
    /// The delivery due now because of this: this one, or the head of its
    /// line; null when `in_flight`.
    pub due_delivery_id: Option<String>,
    /// What was done, in a sentence.
    pub note: String,
}

#[utoipa::path(post, path = "/api/v1/deliveries/{id}/redeliver", tag = "events", params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, description = "Retry now: a finished or blocked delivery starts a new round (a blocked one at once: its object's line moves on once it succeeds); a pending one is due now; a waiting one's line head is due now (it never overtakes)", body = RedeliverOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn redeliver(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<RedeliverOut>)> {
    let (delivery, done) = state.engine().redeliver(&id).await?;
    let note = done.describe(delivery.state);
    Ok((
        StatusCode::ACCEPTED,
        Json(RedeliverOut {
            retry: done.as_str().to_owned(),
            due_delivery_id: done.due_delivery(&delivery.id).map(str::to_owned),
            note,
            delivery: delivery.into(),
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/deliveries/{id}/skip", tag = "events", params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "Skipped: the delivery is failed (\"skipped by <token name>\") and the next waiting delivery of its object is due", body = DeliveryOut),
        (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The delivery is not blocked", body = ErrorBody)))]
async fn skip(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeliveryOut>> {
    let delivery = state.engine().skip_delivery(&id, &token.name).await?;
    Ok(Json(delivery.into()))
}
