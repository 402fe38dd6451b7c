//! `/events`: emit at the after stage, run the before stage, and read an
//! event with its deliveries (the deliveries themselves: `deliveries.rs`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use provisio_core::event::ObjectId;
use provisio_core::timefmt;
use provisio_engine::EventInput;
use provisio_store::Idempotency;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::deliveries::DeliveryOut;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, parse_json, read_body};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", post(emit))
        .route("/events/before", post(before))
        .route("/events/{id}", get(read))
}

/// An event to emit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitIn {
    /// A type from the catalog, such as `clients.create`.
    pub events_id: String,
    /// The object's id: an integer (of any size, kept exactly) or a string;
    /// its JSON type is kept. Read as raw text, so a large integer never
    /// passes through a float.
    #[schema(value_type = Object)]
    pub object_id: Box<RawValue>,
    /// The event's data: a JSON object (`{}` when left out).
    #[schema(value_type = Object)]
    pub data: Option<Box<RawValue>>,
    /// When the action happened (ISO 8601 with offset); now when left out.
    pub dt: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmitOut {
    /// The event's id (a ULID).
    pub id: String,
    /// How many after-stage handlers it was routed to.
    pub deliveries: u32,
}

impl EmitIn {
    /// The event, its fields checked.
    fn validate(self) -> ApiResult<EventInput> {
        Ok(EventInput {
            object_id: ObjectId::parse(self.object_id.get())
                .map_err(|e| ApiError::invalid_field("object_id", e))?,
            dt: self
                .dt
                .map(|dt| timefmt::parse(&dt))
                .transpose()
                .map_err(|e| ApiError::invalid_field("dt", e))?,
            data: match self.data {
                None => "{}".to_owned(),
                Some(raw) if raw.get().starts_with('{') => raw.get().to_owned(),
                Some(_) => return Err(ApiError::invalid_field("data", "must be a JSON object")),
            },
            events_id: self.events_id,
        })
    }
}

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = EmitIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of the same emit safe for 24 h")),
    responses((status = 202, description = "Accepted and stored", body = EmitOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn emit(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let idempotency_key = idempotency_key(&headers)?;
    let body = read_body(req, &state).await?;
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        body_hash: Sha256::digest(&body).into(),
    });
    let input = parse_json::<EmitIn>(&body)?.validate()?;
    let receipt = state.engine().emit(input, idempotency).await?;
    metrics::histogram!("provisio_emit_seconds").record(started.elapsed().as_secs_f64());
    let mut response = (
        StatusCode::ACCEPTED,
        Json(EmitOut {
            id: receipt.event_id,
            deliveries: receipt.deliveries,
        }),
    )
        .into_response();
    if receipt.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// One handler's part in a before-stage chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeforeStepOut {
    pub handler_id: i64,
    pub handler_name: String,
    /// `changed`, `unchanged`, `forbidden`, `failed` or `skipped` (the chain
    /// deadline had passed).
    pub outcome: String,
    pub duration_ms: u32,
    pub error: Option<String>,
}

/// The before-stage verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeforeOut {
    /// This run's id: the `event_id` of its rows in the execution log.
    pub id: String,
    pub allowed: bool,
    /// The data as the chain left it: store this, not what you sent.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// Why the action was forbidden.
    pub reason: Option<String>,
    /// The handler that forbade it.
    pub handler_id: Option<i64>,
    pub executions: Vec<BeforeStepOut>,
}

#[utoipa::path(post, path = "/api/v1/events/before", tag = "events", request_body = EmitIn,
    responses((status = 200, description = "The chain's verdict", body = BeforeOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn before(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<EmitIn>,
) -> ApiResult<Json<BeforeOut>> {
    let verdict = state.engine().run_before(input.validate()?).await?;
    Ok(Json(BeforeOut {
        id: verdict.id,
        allowed: verdict.allowed,
        data: RawValue::from_string(verdict.data).map_err(ApiError::internal)?,
        reason: verdict.reason,
        handler_id: verdict.handler_id,
        executions: verdict
            .steps
            .into_iter()
            .map(|s| BeforeStepOut {
                handler_id: s.handler_id,
                handler_name: s.handler_name,
                outcome: s.outcome.as_str().to_owned(),
                duration_ms: s.duration_ms,
                error: s.error,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: String,
    pub events_id: String,
    #[schema(value_type = Object)]
    pub object_id: ObjectId,
    pub dt: String,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    pub deliveries: Vec<DeliveryOut>,
    /// The handlers the event matched but whose filter it did not pass: no
    /// delivery was made for them.
    pub filtered_out: Vec<FilteredOutOut>,
}

/// A handler whose filter an event did not pass.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilteredOutOut {
    pub handler_id: i64,
    /// Why the filter could not be evaluated (a key the data lacks, a type
    /// mismatch); null when it was false.
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event and its deliveries", body = EventOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EventOut>> {
    let (event, deliveries) = state
        .store()
        .get_event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("event {id}")))?;
    let data = RawValue::from_string(event.data).map_err(ApiError::internal)?;
    let filtered_out = state.store().filtered_out(&id).await?;
    Ok(Json(EventOut {
        id: event.id,
        events_id: event.events_id,
        object_id: event.object_id,
        dt: timefmt::format_seconds(event.dt),
        data,
        deliveries: deliveries.into_iter().map(Into::into).collect(),
        filtered_out: filtered_out
            .into_iter()
            .map(|f| FilteredOutOut {
                handler_id: f.handler_id,
                error: f.error,
            })
            .collect(),
    }))
}
