//! `/executions`: the execution log, newest first, filtered.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use provisio_core::event::{ExecutionStatus, ObjectId, Verdict};
use provisio_core::handler::{HandlerKind, Stage};
use provisio_engine::ExecutionSearch;
use provisio_store::{ExecutionRecord, LogCount};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PageQuery, ts};
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/executions", get(list))
        .route("/executions/{id}", get(read))
}

/// What was sent to the handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestOut {
    /// The URL, or the script path.
    pub target: String,
    /// The headers sent, with credentials masked. A script's call has one,
    /// `args`: its arguments as a JSON array (`script_args` reads it).
    pub headers: BTreeMap<String, String>,
    /// The exact body sent.
    pub body: String,
}

/// One call to a handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionOut {
    pub id: i64,
    pub delivery_id: Option<String>,
    pub handler_id: i64,
    /// The handler's name when it ran.
    pub handler_name: String,
    pub event_id: Option<String>,
    pub events_id: String,
    #[schema(value_type = Object)]
    pub object_id: ObjectId,
    pub stage: Stage,
    /// What was called: `http` or `script`; null for an interrupted attempt,
    /// which recorded no request.
    pub kind: Option<HandlerKind>,
    /// 1 for the first attempt of a delivery.
    pub attempt: u32,
    /// Whether the call itself worked. A before-stage call that forbade the
    /// action worked: see `verdict`.
    pub status: ExecutionStatus,
    /// Before stage: what the call decided (`unchanged`, `changed`,
    /// `forbidden`, `failed`); null after the stage.
    pub verdict: Option<Verdict>,
    pub started_at: String,
    pub duration_ms: u32,
    pub request: RequestOut,
    /// The HTTP status, or a script's exit code (also in `exit_code`).
    pub response_status: Option<u16>,
    /// A script's arguments.
    pub script_args: Option<Vec<String>>,
    /// A script's exit code; null for HTTP calls and for a script that did
    /// not exit on its own (killed at its timeout).
    pub exit_code: Option<u16>,
    /// At most 64 KiB; `response_truncated` says whether it was cut. A
    /// script's standard output.
    pub response_body: Option<String>,
    pub response_truncated: bool,
    pub error: Option<String>,
    /// When the delivery is tried again, if it is.
    pub next_attempt_at: Option<String>,
    /// Before stage: the data as this handler returned it, when it changed it
    /// (the data it was given is in the request body).
    #[schema(value_type = Option<Object>)]
    pub data_after: Option<Box<serde_json::value::RawValue>>,
    /// A call made by a handler test (`POST /api/v1/handlers/{id}/test` with
    /// `"send": true`), not by a delivery or a before chain.
    pub test: bool,
}

impl From<ExecutionRecord> for ExecutionOut {
    fn from(e: ExecutionRecord) -> Self {
        let script = e.is_script();
        let kind = match (script, e.request.target.is_empty()) {
            (true, _) => Some(HandlerKind::Script),
            (false, true) => None,
            (false, false) => Some(HandlerKind::Http),
        };
        Self {
            kind,
            verdict: e.verdict,
            script_args: script.then(|| e.script_args()),
            exit_code: e.response_status.filter(|_| script),
            id: e.id,
            delivery_id: e.delivery_id,
            handler_id: e.handler_id,
            handler_name: e.handler_name,
            event_id: e.event_id,
            events_id: e.events_id,
            object_id: e.object_id,
            stage: e.stage,
            attempt: e.attempt,
            status: e.status,
            started_at: ts(e.started_at),
            duration_ms: e.duration_ms,
            request: RequestOut {
                target: e.request.target,
                headers: e.request.headers,
                body: e.request.body,
            },
            response_status: e.response_status,
            response_body: e.response_body,
            response_truncated: e.response_truncated,
            error: e.error,
            next_attempt_at: e.next_attempt_at.map(ts),
            data_after: e
                .data_after
                .and_then(|d| serde_json::value::RawValue::from_string(d).ok()),
            test: e.test,
        }
    }
}

/// The execution log's filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    pub handler_id: Option<i64>,
    pub events_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    pub stage: Option<Stage>,
    pub object_id: Option<String>,
    pub event_id: Option<String>,
    pub delivery_id: Option<String>,
    /// The request body contains this text.
    pub data: Option<String>,
    /// The error contains this text.
    pub error: Option<String>,
    /// The response body (a script's output) contains this text,
    /// case-insensitively. Text searches read only the newest 100,000
    /// executions (back from `to` when given); the answer's `note` says so.
    pub response: Option<String>,
    /// Before-stage calls with this verdict.
    pub verdict: Option<Verdict>,
    /// From this instant (ISO 8601) or date (`2026-11-26`, from its start, UTC).
    pub from: Option<String>,
    /// Up to this instant or date (to its end, UTC).
    pub to: Option<String>,
    /// Calls made for this replay job's deliveries.
    pub replay_id: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl ExecutionQuery {
    /// The filters, for the engine's one reading of them.
    fn search(&self) -> ExecutionSearch {
        ExecutionSearch {
            handler_id: self.handler_id,
            events_id: self.events_id.clone(),
            status: self.status,
            stage: self.stage,
            object_id: self.object_id.clone(),
            event_id: self.event_id.clone(),
            delivery_id: self.delivery_id.clone(),
            data: self.data.clone(),
            error: self.error.clone(),
            response: self.response.clone(),
            verdict: self.verdict,
            from: self.from.clone(),
            to: self.to.clone(),
            replay_id: self.replay_id.clone(),
        }
    }
}

/// A page of the log, and how far its count and search reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionListOut {
    pub items: Vec<ExecutionOut>,
    /// How many executions match, counted up to 1,000.
    pub total: u64,
    /// False when more than `total` match (counting stopped there).
    pub total_exact: bool,
    /// A text search (`data`, `error`, `response`) read only this many
    /// executions, back from the newest (or from `to`); null when none was
    /// asked.
    pub searched_newest: Option<u64>,
    /// The two bounds above in a sentence, when either applies.
    pub note: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ExecutionQuery),
    responses((status = 200, description = "A page of the log, newest first", body = ExecutionListOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExecutionQuery>,
) -> ApiResult<Json<ExecutionListOut>> {
    let page = PageQuery {
        page: query.page,
        per_page: query.per_page,
    }
    .to_page()?;
    let filter = query.search().to_filter()?;
    let (rows, counted) = state.store().list_executions(&filter, page).await?;
    let count = LogCount::new(counted, &filter);
    Ok(Json(ExecutionListOut {
        items: rows.into_iter().map(Into::into).collect(),
        total: count.total,
        total_exact: count.exact,
        searched_newest: count.searched_newest,
        note: count.note(),
    }))
}

#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", params(("id" = i64, Path, description = "Execution id")),
    responses((status = 200, description = "One execution", body = ExecutionOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ExecutionOut>> {
    let row = state
        .store()
        .get_execution(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("execution {id}")))?;
    Ok(Json(row.into()))
}
