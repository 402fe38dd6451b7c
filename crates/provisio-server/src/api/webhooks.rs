//! The OpenAPI document's `webhooks`: what provisio sends to a handler (the
//! after-stage POST with its Standard Webhooks headers, and the before-stage
//! call with the replies it understands), so a receiver can be written, or
//! generated, from the same document as the API's clients.
//!
//! The payload is built by concatenation in `provisio_core::event::payload`
//! (no struct to derive from); these types only describe it, and the OpenAPI
//! test checks them against what a real receiver gets.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, Ref, Required};
use utoipa::{Modify, ToSchema};

/// What every handler receives: the body of the POST, or a script's stdin.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of the wire, never built
pub struct HandlerPayload {
    pub event: PayloadEvent,
    /// The event's data as emitted, or as the before-stage chain has left it
    /// so far; `{}` for types whose data is always empty.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The event a payload is about.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PayloadEvent {
    /// When the action happened (ISO 8601 with its offset).
    pub dt: String,
    /// The event type, such as `clients.update`.
    pub events_id: String,
    /// The object's id with the JSON type the emitter gave it (number or string).
    #[schema(value_type = Object)]
    pub object_id: serde_json::Value,
}

/// A before-stage handler's reply (HTTP 2xx body, or a script's stdout on
/// exit 0). An empty body, or JSON without `data` and `allow`, changes nothing.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BeforeReply {
    /// Replaces the event's data for the rest of the chain and the caller.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// `false` forbids the action and stops the chain (as HTTP 403 does).
    pub allow: Option<bool>,
    /// Why the action is forbidden; passed on to the emitter.
    pub reason: Option<String>,
}

/// The header parameters of every HTTP call: (name, description).
pub const HEADERS: &[(&str, &str)] = &[
    (
        "webhook-id",
        "After the action: the delivery's id (a ULID), the same on every retry, so a receiver can drop repeats. Before it: `{event id}_{handler id}`.",
    ),
    (
        "webhook-timestamp",
        "When the call was signed, in Unix seconds.",
    ),
    (
        "webhook-signature",
        "`v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the handler's `whsec_…` secret (the part after `whsec_`, base64-decoded): verify with any Standard Webhooks library.",
    ),
    ("user-agent", "`provisio/<version>`."),
];

/// Adds the two webhooks and the schemas they use.
pub struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let added = ComponentsBuilder::new()
            .schema_from::<HandlerPayload>()
            .schema_from::<PayloadEvent>()
            .schema_from::<BeforeReply>()
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(added.schemas);
        let paths = PathsBuilder::new()
            .path("after-stage-delivery", after_stage())
            .path("before-stage-call", before_stage())
            .build();
        openapi.webhooks = Some(paths);
    }
}

/// The POST body, described once for both stages.
fn payload_body() -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .description(Some(
            "The event and its data. Script handlers get the same JSON on stdin, with `PROVISIO_EVENT_ID`, `PROVISIO_EVENTS_ID`, `PROVISIO_OBJECT_ID` and `PROVISIO_STAGE` in their environment, and any `args` as arguments.",
        ))
        .required(Some(Required::True))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("HandlerPayload")))
                .build(),
        )
        .build()
}

/// An operation with the payload and the signature headers.
fn signed_post(id: &str, summary: &str, description: &str) -> OperationBuilder {
    let mut operation = OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .tag("handlers")
        .request_body(Some(payload_body()));
    for (name, about) in HEADERS {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(*about))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    operation
}

fn after_stage() -> PathItem {
    let operation = signed_post(
        "afterStageDelivery",
        "An after-stage delivery: provisio tells the handler an action happened",
        "POSTed to an HTTP handler's URL (or its request template's) for each event its pattern and filter match, in priority order, per object in emit order when the handler is ordered. Retried with backoff until a 2xx or `max_attempts`; a `Retry-After` is honoured. The handler's own extra headers are sent too.",
    )
    .response(
        "2XX",
        ResponseBuilder::new().description("Delivered: the delivery succeeds and the next one of its object is sent."),
    )
    .response(
        "default",
        ResponseBuilder::new().description("Any other status, a timeout or a connection error: retried later; after the last attempt the delivery fails (or blocks its object's line)."),
    )
    .build();
    PathItem::new(HttpMethod::Post, operation)
}

fn before_stage() -> PathItem {
    let operation = signed_post(
        "beforeStageCall",
        "A before-stage call: the handler may change the data or forbid the action",
        "Called synchronously while the emitter waits (`POST /api/v1/events/before`), one handler after another in priority order; each sees the data as the previous one left it. Not retried.",
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("A 2xx reply: `data` replaces the event's data; `allow: false` forbids the action and stops the chain; an empty body changes nothing.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("BeforeReply")))
                    .build(),
            ),
    )
    .response(
        "403",
        ResponseBuilder::new().description("Forbids the action; the chain stops."),
    )
    .response(
        "default",
        ResponseBuilder::new().description("Any other status, a timeout, a connection error or a reply that cannot be read: the handler's `on_failure` decides (`forbid`, the default, or `allow`)."),
    )
    .build();
    PathItem::new(HttpMethod::Post, operation)
}
