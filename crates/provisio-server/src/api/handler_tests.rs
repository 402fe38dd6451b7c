//! `/handlers/{id}/test` and `/handlers/test`: what a handler (stored, or a
//! draft) would send for one event, and, with `"send": true`, what one real
//! call answers. Nothing is queued; a call made is logged, marked `test`.
//! `…/dry-run`: the same over the newest logged events of its pattern.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use provisio_core::event::ObjectId;
use provisio_core::timefmt;
use provisio_engine::{DryRun, TestEvent, TestReport, TestRequest};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::handlers::HandlerIn;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/handlers/test", post(test_draft))
        .route("/handlers/{id}/test", post(test_stored))
        .route("/handlers/dry-run", post(dry_run_draft))
        .route("/handlers/{id}/dry-run", post(dry_run_stored))
}

/// The event to test with: one from the log (`event_id`), or one described
/// here; left out, the handler's event type with its sample data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestIn {
    /// The handler to test, for `/handlers/test` only (a create body).
    pub handler: Option<HandlerIn>,
    /// A logged event's id: the test uses it as it was emitted.
    pub event_id: Option<String>,
    /// The event type; the handler's own when it names one.
    pub events_id: Option<String>,
    /// The object's id: the sample data's `id` when left out.
    #[schema(value_type = Option<Object>)]
    pub object_id: Option<Box<RawValue>>,
    /// The event's data: the event type's sample when left out.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Box<RawValue>>,
    /// Send the request once and show the answer (default: only preview).
    #[serde(default)]
    pub send: bool,
}

impl TestIn {
    fn request(self) -> ApiResult<TestRequest> {
        let event = match self.event_id {
            Some(id) => {
                if self.events_id.is_some() || self.object_id.is_some() || self.data.is_some() {
                    return Err(ApiError::invalid_field(
                        "event_id",
                        "give a logged event or an event's fields, not both",
                    ));
                }
                TestEvent::Logged(id)
            }
            None => TestEvent::Given {
                events_id: self.events_id,
                object_id: self
                    .object_id
                    .map(|raw| ObjectId::parse(raw.get()))
                    .transpose()
                    .map_err(|e| ApiError::invalid_field("object_id", e))?,
                data: match self.data {
                    None => None,
                    Some(raw) if raw.get().starts_with('{') => Some(raw.get().to_owned()),
                    Some(_) => {
                        return Err(ApiError::invalid_field("data", "must be a JSON object"));
                    }
                },
            },
        };
        Ok(TestRequest {
            event,
            send: self.send,
        })
    }
}

/// What a test found.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestOut {
    /// The event the test used.
    pub event: TestEventOut,
    pub passed_filter: bool,
    /// Why the filter could not be evaluated for this event.
    pub filter_error: Option<String>,
    /// The request, exactly as it would be sent (credentials masked); null
    /// when the event did not pass the filter or the template failed.
    pub request: Option<TestCallOut>,
    /// The answer to the one real call, with `"send": true`.
    pub response: Option<TestResponseOut>,
    /// A template that cannot render, or the call's failure.
    pub error: Option<String>,
    /// Before stage, once sent: the chain's reading of the reply.
    pub verdict: Option<TestVerdictOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestEventOut {
    pub events_id: String,
    #[schema(value_type = Object)]
    pub object_id: ObjectId,
    pub dt: String,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestCallOut {
    /// `POST`, `PUT`, `PATCH` or `DELETE`; `RUN` for a script.
    pub method: String,
    /// The URL, or the script with its arguments.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResponseOut {
    /// The HTTP status, or a script's exit code.
    pub status: Option<u16>,
    pub body: Option<String>,
    pub duration_ms: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestVerdictOut {
    pub allowed: bool,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    pub reason: Option<String>,
}

fn raw(json: String) -> ApiResult<Box<RawValue>> {
    RawValue::from_string(json).map_err(ApiError::internal)
}

impl TryFrom<TestReport> for TestOut {
    type Error = ApiError;

    fn try_from(r: TestReport) -> ApiResult<Self> {
        Ok(TestOut {
            event: TestEventOut {
                events_id: r.event.events_id,
                object_id: r.event.object_id,
                dt: timefmt::format_seconds(r.event.dt),
                data: raw(r.event.data)?,
            },
            passed_filter: r.passed_filter,
            filter_error: r.filter_error,
            request: r.request.map(Into::into),
            response: r.response.map(|c| TestResponseOut {
                status: c.status,
                body: c.body,
                duration_ms: c.duration_ms,
            }),
            error: r.error,
            verdict: r
                .verdict
                .map(|v| {
                    Ok::<_, ApiError>(TestVerdictOut {
                        allowed: v.allowed,
                        data: raw(v.data)?,
                        reason: v.reason,
                    })
                })
                .transpose()?,
        })
    }
}

#[utoipa::path(post, path = "/api/v1/handlers/{id}/test", tag = "handlers", request_body = TestIn,
    params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "What the handler sends for the event, and its answer when sent", body = TestOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such handler or logged event", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
pub(super) async fn test_stored(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<TestIn>,
) -> ApiResult<Json<TestOut>> {
    if input.handler.is_some() {
        return Err(ApiError::invalid_field(
            "handler",
            "a stored handler is tested as saved; test a draft with POST /api/v1/handlers/test",
        ));
    }
    let report = state.engine().test_handler(id, input.request()?).await?;
    Ok(Json(report.try_into()?))
}

#[utoipa::path(post, path = "/api/v1/handlers/test", tag = "handlers", request_body = TestIn,
    responses((status = 200, description = "What the draft handler would send for the event, and its answer when sent", body = TestOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such logged event", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
pub(super) async fn test_draft(
    State(state): State<AppState>,
    ApiJson(mut input): ApiJson<TestIn>,
) -> ApiResult<Json<TestOut>> {
    let Some(draft) = input.handler.take() else {
        return Err(ApiError::invalid_field(
            "handler",
            "the handler to test is required (a create body)",
        ));
    };
    let report = state
        .engine()
        .test_draft(draft.into(), input.request()?)
        .await?;
    Ok(Json(report.try_into()?))
}

/// A dry run: the handler over the last `limit` logged events of its pattern.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunIn {
    /// The handler to try, for `/handlers/dry-run` only (a create body).
    pub handler: Option<HandlerIn>,
    /// How many of the newest logged events to look at (1 to 1000; 100).
    pub limit: Option<u32>,
}

/// What a dry run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunOut {
    /// Logged events of the handler's pattern looked at, newest first.
    pub examined: u32,
    /// Those that pass its filter (and render, with a template).
    pub passed: u32,
    /// Those its filter could not be evaluated for.
    pub filter_errors: u32,
    /// Those its request template could not render.
    pub render_errors: u32,
    /// The first few that pass, as they would be sent (or why not).
    pub samples: Vec<DrySampleOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DrySampleOut {
    pub event_id: String,
    pub events_id: String,
    pub request: Option<TestCallOut>,
    pub error: Option<String>,
}

const DEFAULT_DRY_RUN: u32 = 100;

impl From<provisio_engine::TestCall> for TestCallOut {
    fn from(c: provisio_engine::TestCall) -> Self {
        TestCallOut {
            method: c.method,
            url: c.url,
            headers: c.headers,
            body: c.body,
        }
    }
}

impl From<DryRun> for DryRunOut {
    fn from(r: DryRun) -> Self {
        DryRunOut {
            examined: r.examined,
            passed: r.passed,
            filter_errors: r.filter_errors,
            render_errors: r.render_errors,
            samples: r
                .samples
                .into_iter()
                .map(|s| DrySampleOut {
                    event_id: s.event_id,
                    events_id: s.events_id,
                    request: s.request.map(Into::into),
                    error: s.error,
                })
                .collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/handlers/{id}/dry-run", tag = "handlers", request_body = DryRunIn,
    params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "The handler over recent logged events", body = DryRunOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such handler", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
pub(super) async fn dry_run_stored(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<DryRunIn>,
) -> ApiResult<Json<DryRunOut>> {
    if input.handler.is_some() {
        return Err(ApiError::invalid_field(
            "handler",
            "a stored handler runs as saved; try a draft with POST /api/v1/handlers/dry-run",
        ));
    }
    let limit = input.limit.unwrap_or(DEFAULT_DRY_RUN);
    Ok(Json(
        state.engine().dry_run_handler(id, limit).await?.into(),
    ))
}

#[utoipa::path(post, path = "/api/v1/handlers/dry-run", tag = "handlers", request_body = DryRunIn,
    responses((status = 200, description = "The draft handler over recent logged events", body = DryRunOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
pub(super) async fn dry_run_draft(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<DryRunIn>,
) -> ApiResult<Json<DryRunOut>> {
    let Some(draft) = input.handler else {
        return Err(ApiError::invalid_field(
            "handler",
            "the handler to try is required (a create body)",
        ));
    };
    let limit = input.limit.unwrap_or(DEFAULT_DRY_RUN);
    Ok(Json(
        state
            .engine()
            .dry_run_draft(draft.into(), limit)
            .await?
            .into(),
    ))
}
