//! `/event-types`: the event catalog.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use provisio_core::FieldErrors;
use provisio_core::catalog::{EventType, validate_event_type_id};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::ListOut;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;

pub fn router() -> Router<AppState> {
    Router::new().route("/event-types", get(list).post(create))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeOut {
    pub id: String,
    pub group: String,
    pub description: String,
    pub empty_data: bool,
    pub builtin: bool,
    /// Sample `data` for this type, as a billing platform sends it: what a
    /// handler test sends unless told otherwise.
    #[schema(value_type = Option<Object>)]
    pub example: Option<Box<RawValue>>,
}

impl From<EventType> for EventTypeOut {
    fn from(t: EventType) -> Self {
        Self {
            id: t.id,
            group: t.group,
            description: t.description,
            empty_data: t.empty_data,
            builtin: t.builtin,
            example: t.example.and_then(|e| RawValue::from_string(e).ok()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeIn {
    /// Lowercase dotted segments, such as `billing.invoice_paid`.
    pub id: String,
    /// Defaults to `Custom`.
    pub group: Option<String>,
    pub description: Option<String>,
    pub empty_data: Option<bool>,
    /// Sample `data` (a JSON object) for previews and test sends.
    #[schema(value_type = Option<Object>)]
    pub example: Option<Box<RawValue>>,
}

const MAX_GROUP_LEN: usize = 100;
const MAX_DESCRIPTION_LEN: usize = 500;

impl EventTypeIn {
    fn validate(self) -> Result<EventType, FieldErrors> {
        let mut errors = FieldErrors::new();
        if let Err(e) = validate_event_type_id(&self.id) {
            errors.add("id", e);
        }
        let group = self
            .group
            .map(|g| g.trim().to_owned())
            .unwrap_or_else(|| "Custom".into());
        if group.is_empty() || group.chars().count() > MAX_GROUP_LEN {
            errors.add("group", format!("must be 1 to {MAX_GROUP_LEN} characters"));
        } else if provisio_core::has_nul(&group) {
            errors.add("group", provisio_core::NUL_REFUSED);
        }
        let description = self
            .description
            .map(|d| d.trim().to_owned())
            .unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            errors.add(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
            );
        } else if provisio_core::has_nul(&description) {
            errors.add("description", provisio_core::NUL_REFUSED);
        }
        // Kept compact, as event data is.
        let example = self.example.and_then(|e| {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e.get()) {
                Ok(object) => Some(serde_json::Value::Object(object).to_string()),
                Err(_) => {
                    errors.add("example", "must be a JSON object");
                    None
                }
            }
        });
        errors.into_result()?;
        Ok(EventType {
            id: self.id,
            group,
            description,
            empty_data: self.empty_data.unwrap_or(false),
            builtin: false,
            example,
        })
    }
}

#[utoipa::path(get, path = "/api/v1/event-types", tag = "event types",
    responses((status = 200, description = "The catalog", body = ListOut<EventTypeOut>), (status = 401, description = "Missing or invalid token", body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<ListOut<EventTypeOut>>> {
    let types = state.store().list_event_types().await?;
    let total = types.len() as u64;
    Ok(Json(ListOut {
        items: types.into_iter().map(Into::into).collect(),
        total,
    }))
}

#[utoipa::path(post, path = "/api/v1/event-types", tag = "event types", request_body = EventTypeIn,
    responses((status = 201, description = "Added", body = EventTypeOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 409, description = "The id exists", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    let event_type = input.validate().map_err(ApiError::invalid)?;
    let added = state.engine().add_event_type(event_type).await?;
    Ok((StatusCode::CREATED, Json(added.into())))
}
