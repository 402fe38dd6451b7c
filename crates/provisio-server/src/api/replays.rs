//! `/replays`: replay jobs, which resend stored events to one handler
//! (issue 12's replay and resync), and their progress.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use provisio_core::event::ObjectId;
use provisio_core::replay::{ReplayState, ReplayStatus};
use provisio_engine::ReplayRequest;
use provisio_store::{ReplayRecord, TokenRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{ListOut, PageQuery, ts};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/replays", get(list).post(start))
        .route("/replays/{id}", get(read).delete(cancel))
}

/// A replay job to start: which handler, and which stored events to resend
/// to it. Every filter is optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// An enabled after-stage handler.
    pub handler_id: i64,
    /// An event type, or a pattern such as `clients.*`.
    pub events_id: Option<String>,
    /// One object's id (a number or a string; `12` and `"12"` are the same
    /// object).
    #[schema(value_type = Option<Object>)]
    pub object_id: Option<Box<RawValue>>,
    /// Events stored from this instant (ISO 8601) or date (`2026-11-26`, from
    /// its start, UTC).
    pub from: Option<String>,
    /// Events stored up to this instant or date (to its end, UTC).
    pub to: Option<String>,
    /// `failed`: only events whose latest finished delivery to the handler
    /// failed; `all` (the default): every matching event, also those the
    /// handler never got (a back-fill).
    pub status: Option<ReplayStatus>,
    /// A resync: for each object only its most recent matching event.
    #[serde(default)]
    pub latest_per_object: bool,
}

/// A replay job and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOut {
    /// The job's id (a ULID).
    pub id: String,
    pub handler_id: i64,
    /// `running` while any of its deliveries is unfinished, then `done`;
    /// `cancelled` after a cancel.
    pub state: ReplayState,
    /// Events that matched the filter.
    pub matched: u64,
    /// Deliveries queued: the matched events but those a running replay was
    /// already resending to this handler.
    pub queued: u64,
    /// Of those, delivered with success.
    pub sent: u64,
    /// Of those, failed after their last attempt.
    pub failed: u64,
    /// Of those, stopped by a cancel before they were sent.
    pub cancelled: u64,
    /// Of those, not finished yet.
    pub remaining: u64,
    pub events_id: Option<String>,
    /// The object's id as text.
    pub object_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub status: ReplayStatus,
    pub latest_per_object: bool,
    /// The name of the API token that started it.
    pub created_by: String,
    pub created_at: String,
    /// When it was cancelled, or when its last delivery finished.
    pub finished_at: Option<String>,
}

impl From<ReplayRecord> for ReplayOut {
    fn from(r: ReplayRecord) -> Self {
        Self {
            id: r.id,
            handler_id: r.handler_id,
            state: r.state,
            matched: r.matched,
            queued: r.queued,
            sent: r.sent,
            failed: r.failed,
            cancelled: r.cancelled,
            remaining: r.remaining,
            events_id: r.events_id,
            object_id: r.object_id,
            from: r.from.map(ts),
            to: r.to.map(ts),
            status: r.status,
            latest_per_object: r.latest_per_object,
            created_by: r.created_by,
            created_at: ts(r.created_at),
            finished_at: r.finished_at.map(ts),
        }
    }
}

impl ReplayIn {
    fn into_request(self) -> Result<ReplayRequest, ApiError> {
        let object_id = self
            .object_id
            .map(|raw| ObjectId::parse(raw.get()).map(|id| id.key()))
            .transpose()
            .map_err(|message| ApiError::invalid_field("object_id", message))?;
        Ok(ReplayRequest {
            handler_id: self.handler_id,
            events_id: self.events_id,
            object_id,
            from: self.from,
            to: self.to,
            status: self.status,
            latest_per_object: self.latest_per_object,
        })
    }
}

#[utoipa::path(post, path = "/api/v1/replays", tag = "replays", request_body = ReplayIn,
    responses((status = 202, description = "Started: its deliveries are queued (a filter that matches nothing gives a job that is done at once)", body = ReplayOut),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "Invalid input, per field: an unknown, disabled or before-stage handler, a bad pattern, date or status, a reversed time range", body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    ApiJson(input): ApiJson<ReplayIn>,
) -> ApiResult<(StatusCode, Json<ReplayOut>)> {
    let request = input.into_request()?;
    let job = state.engine().start_replay(&request, &token.name).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

#[utoipa::path(get, path = "/api/v1/replays", tag = "replays", params(PageQuery),
    responses((status = 200, description = "A page of replay jobs, newest first", body = ListOut<ReplayOut>), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<ListOut<ReplayOut>>> {
    let (jobs, total) = state.engine().replays(query.to_page()?).await?;
    Ok(Json(ListOut {
        items: jobs.into_iter().map(Into::into).collect(),
        total,
    }))
}

#[utoipa::path(get, path = "/api/v1/replays/{id}", tag = "replays", params(("id" = String, Path, description = "Replay id")),
    responses((status = 200, description = "The job and its progress", body = ReplayOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ReplayOut>> {
    Ok(Json(state.engine().replay(&id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/replays/{id}", tag = "replays", params(("id" = String, Path, description = "Replay id")),
    responses((status = 200, description = "Cancelled: what was not sent never will be; attempts in flight finish", body = ReplayOut),
        (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The job is done: nothing is left to cancel", body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ReplayOut>> {
    Ok(Json(
        state.engine().cancel_replay(&id, &token.name).await?.into(),
    ))
}
