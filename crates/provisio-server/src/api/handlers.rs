//! `/handlers`: create, read, update, delete and list handlers, and their
//! signing secrets. Every change is an engine use case (`provisio_engine::service`),
//! which reloads the routing table before the answer, so it governs the next emit.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use provisio_core::handler::{
    AutoPauseDraft, Handler, HandlerDraft, HandlerKind, OnExhausted, OnFailure, Stage, Status,
    defaults,
};
use provisio_core::request::RequestSpec;
use provisio_core::retry::format_duration;
use provisio_store::HandlerFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::handler_health::{HealthOut, QueueOut};
use super::{ListOut, PageQuery, ts};
use crate::AppState;
use crate::board::{Health, PAGE_WAIT, Queue};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/handlers", get(list).post(create))
        .route("/handlers/{id}", get(read).patch(update).delete(remove))
        .route("/handlers/{id}/secret", get(secret))
        .route("/handlers/{id}/secret/rotate", post(rotate_secret))
        .route("/handlers/{id}/pause", post(pause))
        .route("/handlers/{id}/resume", post(resume))
}

/// A handler as the API shows it. The signing secret is never part of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandlerOut {
    pub id: i64,
    pub name: String,
    pub events_id: String,
    pub stage: Stage,
    pub status: Status,
    pub priority: i32,
    pub kind: HandlerKind,
    pub target: String,
    pub args: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u32,
    pub max_attempts: u32,
    pub ordered: bool,
    pub on_failure: OnFailure,
    /// The CEL condition an event must pass to reach this handler; null: every
    /// event its pattern matches.
    pub filter: Option<String>,
    /// How an HTTP handler's request is built from the event; null: the
    /// payload is POSTed to `target`.
    pub request: Option<RequestSpec>,
    /// Ordered handlers: `block` keeps an object's later deliveries waiting
    /// behind one that used up its attempts; `skip` lets them go.
    pub on_exhausted: OnExhausted,
    /// Of several deliveries of one object waiting, only the newest is sent.
    pub conflate: bool,
    /// The automatic pause (circuit breaker); null when off.
    pub auto_pause: Option<AutoPauseOut>,
    /// The most calls in flight to this handler at once; null: no cap of its own.
    pub max_in_flight: Option<u32>,
    /// Calls per second at most, spread evenly; null: no limit.
    pub rate_limit: Option<RateLimitOut>,
    /// True while paused: deliveries are queued and held, none is attempted.
    pub paused: bool,
    /// `operator`, or why the automatic pause tripped; null while running.
    pub paused_reason: Option<String>,
    /// Since when it is paused; null while running.
    pub paused_at: Option<String>,
    /// Its unfinished deliveries by state.
    pub queue: QueueOut,
    /// How its deliveries (before stage: its calls) ended lately.
    pub health: HealthOut,
    pub created_at: String,
    pub updated_at: String,
}

/// The automatic pause: after `failures` consecutive failed attempts
/// spanning at least `after`, the handler pauses itself; one delivery is then
/// tried every `probe_every`, and the first success resumes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoPauseOut {
    pub failures: u32,
    /// A duration such as `10m` (units ms, s, m, h, d).
    pub after: String,
    pub probe_every: String,
}

/// The automatic pause as a request sets it; `after` defaults to `10m` and
/// `probe_every` to `5m`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoPauseIn {
    /// Consecutive failed attempts (1 or more).
    pub failures: i64,
    /// How long the failures must span at least (`0s` to `7d`).
    pub after: Option<String>,
    /// How often a paused handler is probed (`1s` to `1d`).
    pub probe_every: Option<String>,
}

impl From<AutoPauseIn> for AutoPauseDraft {
    fn from(a: AutoPauseIn) -> Self {
        Self {
            failures: a.failures,
            after: a.after.unwrap_or_else(|| defaults::AUTO_PAUSE_AFTER.into()),
            probe_every: a
                .probe_every
                .unwrap_or_else(|| defaults::AUTO_PAUSE_PROBE_EVERY.into()),
        }
    }
}

/// A handler's pace in calls per second, spread evenly (one every 1/N s).
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitOut {
    pub per_second: u32,
}

/// Calls per second at most (a whole number from 1 to 1000).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitIn {
    pub per_second: i64,
}

impl HandlerOut {
    /// The handler with its queue and health.
    pub fn new(h: &Handler, (health, queue): (Health, Queue)) -> Self {
        let s = &h.spec;
        Self {
            id: h.id,
            name: s.name.clone(),
            events_id: s.events_id.to_string(),
            stage: s.stage,
            status: s.status,
            priority: s.priority,
            kind: s.kind,
            target: s.target.clone(),
            args: s.args.clone(),
            headers: s.headers.clone(),
            timeout_ms: s.timeout_ms,
            max_attempts: s.max_attempts,
            ordered: s.ordered,
            on_failure: s.on_failure,
            filter: s.filter.as_ref().map(|f| f.as_str().to_owned()),
            request: s.request.as_ref().map(|r| r.spec().clone()),
            on_exhausted: s.on_exhausted,
            conflate: s.conflate,
            auto_pause: s.auto_pause.map(|a| AutoPauseOut {
                failures: a.failures,
                after: format_duration(a.after),
                probe_every: format_duration(a.probe_every),
            }),
            max_in_flight: s.max_in_flight,
            rate_limit: s.rate_limit.map(|per_second| RateLimitOut { per_second }),
            paused: h.pause.is_some(),
            paused_reason: h.pause.as_ref().map(|p| p.reason.clone()),
            paused_at: h.pause.as_ref().map(|p| ts(p.at)),
            queue: queue.into(),
            health: health.into(),
            created_at: ts(h.created_at),
            updated_at: ts(h.updated_at),
        }
    }

    /// The handler with its queue and health from the shared snapshot.
    async fn read(state: &AppState, h: &Handler) -> ApiResult<Self> {
        let snapshot = state.board().read(PAGE_WAIT).await?;
        Ok(Self::new(h, snapshot.view(h)))
    }
}

/// A new handler. Left-out fields take their defaults: stage `after`, status
/// `enabled`, priority 100, kind `http`, timeout 10 s (5 s before), 10 attempts,
/// ordered, on_failure `forbid`, on_exhausted `block` (it only matters for
/// ordered handlers), conflate off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandlerIn {
    pub name: String,
    /// An event type id, `prefix.*` or `*`.
    pub events_id: String,
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    pub priority: Option<i64>,
    pub kind: Option<HandlerKind>,
    /// An http(s) URL, or a script path relative to the scripts directory.
    pub target: String,
    pub args: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<i64>,
    pub max_attempts: Option<i64>,
    pub ordered: Option<bool>,
    pub on_failure: Option<OnFailure>,
    /// A condition in the Common Expression Language over `event` (`id`,
    /// `events_id`, `object_id`, `dt`) and `data`, e.g.
    /// `data.currency == "EUR" && data.balance < 0`; only events that pass it
    /// reach this handler.
    pub filter: Option<String>,
    /// HTTP handlers: method, URL, headers and body as templates over `event`
    /// and `data`, with per-event-type overrides in `by_event`; left out, the
    /// payload is POSTed to `target`.
    pub request: Option<RequestSpec>,
    pub on_exhausted: Option<OnExhausted>,
    pub conflate: Option<bool>,
    /// The automatic pause; null or absent: off.
    pub auto_pause: Option<AutoPauseIn>,
    /// The most calls in flight to this handler at once (1 to 1024); null
    /// or absent: no cap of its own.
    pub max_in_flight: Option<i64>,
    /// Calls per second at most; null or absent: no limit.
    pub rate_limit: Option<RateLimitIn>,
}

impl From<HandlerIn> for HandlerDraft {
    fn from(i: HandlerIn) -> Self {
        let stage = i.stage.unwrap_or(defaults::STAGE);
        HandlerDraft {
            name: i.name,
            events_id: i.events_id,
            stage,
            status: i.status.unwrap_or(defaults::STATUS),
            priority: i.priority.unwrap_or(defaults::PRIORITY),
            kind: i.kind.unwrap_or(defaults::KIND),
            target: i.target,
            args: i.args.unwrap_or_default(),
            headers: i.headers.unwrap_or_default(),
            timeout_ms: i.timeout_ms.unwrap_or_else(|| defaults::timeout_ms(stage)),
            max_attempts: i.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS),
            ordered: i.ordered.unwrap_or(defaults::ORDERED),
            on_failure: i.on_failure.unwrap_or(defaults::ON_FAILURE),
            filter: i.filter.unwrap_or_default(),
            request: i.request,
            on_exhausted: i.on_exhausted.unwrap_or(defaults::ON_EXHAUSTED),
            conflate: i.conflate.unwrap_or(defaults::CONFLATE),
            auto_pause: i.auto_pause.map(Into::into),
            max_in_flight: i.max_in_flight,
            rate_limit: i.rate_limit.map(|r| r.per_second),
        }
    }
}

/// A partial update: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandlerPatch {
    pub name: Option<String>,
    pub events_id: Option<String>,
    pub stage: Option<Stage>,
    pub status: Option<Status>,
    pub priority: Option<i64>,
    pub kind: Option<HandlerKind>,
    pub target: Option<String>,
    pub args: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<i64>,
    pub max_attempts: Option<i64>,
    pub ordered: Option<bool>,
    pub on_failure: Option<OnFailure>,
    pub on_exhausted: Option<OnExhausted>,
    pub conflate: Option<bool>,
    /// A new filter; `null` (or `""`) removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub filter: Option<Option<String>>,
    /// A new request template; `null` removes it (the payload is POSTed again).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RequestSpec>)]
    pub request: Option<Option<RequestSpec>>,
    /// The automatic pause; null turns it off, absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<AutoPauseIn>)]
    pub auto_pause: Option<Option<AutoPauseIn>>,
    /// Null removes the cap, absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_in_flight: Option<Option<i64>>,
    /// Null removes the limit, absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimitIn>)]
    pub rate_limit: Option<Option<RateLimitIn>>,
}

/// A field that may be null: `Some(None)` when given as null, `None` (the
/// default) when absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl HandlerPatch {
    pub fn apply(self, d: &mut HandlerDraft) {
        if let Some(auto_pause) = self.auto_pause {
            d.auto_pause = auto_pause.map(Into::into);
        }
        if let Some(max_in_flight) = self.max_in_flight {
            d.max_in_flight = max_in_flight;
        }
        if let Some(rate_limit) = self.rate_limit {
            d.rate_limit = rate_limit.map(|r| r.per_second);
        }
        macro_rules! set {
            ($($field:ident),+) => { $(if let Some(v) = self.$field { d.$field = v; })+ };
        }
        set!(
            name,
            events_id,
            stage,
            status,
            priority,
            kind,
            target,
            args,
            headers,
            timeout_ms,
            max_attempts,
            ordered,
            on_failure,
            on_exhausted,
            conflate
        );
        if let Some(filter) = self.filter {
            d.filter = filter.unwrap_or_default();
        }
        if let Some(request) = self.request {
            d.request = request;
        }
    }
}

/// The handler list's filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HandlerQuery {
    /// Handlers that fire for this event type, or whose pattern is this text.
    pub events_id: Option<String>,
    pub kind: Option<HandlerKind>,
    pub status: Option<Status>,
    pub stage: Option<Stage>,
    /// Name contains (case-insensitive).
    pub q: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretOut {
    /// `whsec_…`: verify `webhook-signature` with it.
    pub secret: String,
}

#[utoipa::path(post, path = "/api/v1/handlers", tag = "handlers", request_body = HandlerIn,
    responses((status = 201, description = "Created", body = HandlerOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<HandlerIn>,
) -> ApiResult<(StatusCode, Json<HandlerOut>)> {
    let handler = state.engine().create_handler(input.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(HandlerOut::new(
            &handler,
            crate::board::view(false, None, 0),
        )),
    ))
}

#[utoipa::path(get, path = "/api/v1/handlers/{id}", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "The handler", body = HandlerOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<HandlerOut>> {
    let handler = state.engine().handler(id).await?;
    Ok(Json(HandlerOut::read(&state, &handler).await?))
}

#[utoipa::path(patch, path = "/api/v1/handlers/{id}", tag = "handlers", params(("id" = i64, Path, description = "Handler id")), request_body = HandlerPatch,
    responses((status = 200, description = "Updated", body = HandlerOut), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<HandlerPatch>,
) -> ApiResult<Json<HandlerOut>> {
    let mut draft = HandlerDraft::from(&state.engine().handler(id).await?.spec);
    patch.apply(&mut draft);
    let handler = state.engine().update_handler(id, draft).await?;
    Ok(Json(HandlerOut::read(&state, &handler).await?))
}

#[utoipa::path(delete, path = "/api/v1/handlers/{id}", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 204, description = "Deleted"), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn remove(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    state.engine().delete_handler(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/handlers", tag = "handlers", params(HandlerQuery),
    responses((status = 200, description = "A page of handlers", body = ListOut<HandlerOut>), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 422, description = "Invalid input, per field", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HandlerQuery>,
) -> ApiResult<Json<ListOut<HandlerOut>>> {
    let page = PageQuery {
        page: query.page,
        per_page: query.per_page,
    }
    .to_page()?;
    let filter = HandlerFilter {
        events_id: query.events_id.filter(|s| !s.is_empty()),
        kind: query.kind,
        status: query.status,
        include_archived: true,
        stage: query.stage,
        q: query.q,
    };
    let (handlers, total) = state.store().list_handlers(&filter, page).await?;
    let snapshot = state.board().read(PAGE_WAIT).await?;
    Ok(Json(ListOut {
        items: handlers
            .iter()
            .map(|h| HandlerOut::new(h, snapshot.view(h)))
            .collect(),
        total,
    }))
}

#[utoipa::path(get, path = "/api/v1/handlers/{id}/secret", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "The signing secret", body = SecretOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn secret(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<SecretOut>> {
    Ok(Json(SecretOut {
        secret: state.engine().handler(id).await?.secret.expose(),
    }))
}

#[utoipa::path(post, path = "/api/v1/handlers/{id}/secret/rotate", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "The new signing secret", body = SecretOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<SecretOut>> {
    let handler = state.engine().rotate_secret(id).await?;
    Ok(Json(SecretOut {
        secret: handler.secret.expose(),
    }))
}

#[utoipa::path(post, path = "/api/v1/handlers/{id}/pause", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "Paused: its deliveries are queued and held, none is attempted until it resumes", body = HandlerOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "A before-stage handler: nothing is queued for it to hold", body = ErrorBody)))]
async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<HandlerOut>> {
    let handler = state.engine().pause_handler(id).await?;
    Ok(Json(HandlerOut::read(&state, &handler).await?))
}

#[utoipa::path(post, path = "/api/v1/handlers/{id}/resume", tag = "handlers", params(("id" = i64, Path, description = "Handler id")),
    responses((status = 200, description = "Running: its held deliveries are sent in per-object order", body = HandlerOut), (status = 401, description = "Missing or invalid token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<HandlerOut>> {
    let handler = state.engine().resume_handler(id).await?;
    Ok(Json(HandlerOut::read(&state, &handler).await?))
}
