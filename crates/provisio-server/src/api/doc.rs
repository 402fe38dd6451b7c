//! The OpenAPI document, generated from the handlers' annotations and the wire
//! types they use, so it cannot drift from the code; its `webhooks` (what a
//! handler receives) come from `webhooks.rs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::webhooks::Webhooks;
use super::{deliveries, event_types, events, executions, handler_tests, handlers, replays};

#[derive(OpenApi)]
#[openapi(
    info(title = "provisio", description = "A self-hosted Provisioning API engine: emit events, manage handlers, read the execution log."),
    paths(
        event_types::list, event_types::create,
        handlers::list, handlers::create, handlers::read, handlers::update, handlers::remove,
        handlers::secret, handlers::rotate_secret, handlers::pause, handlers::resume,
        handler_tests::test_stored, handler_tests::test_draft,
        handler_tests::dry_run_stored, handler_tests::dry_run_draft,
        events::emit, events::before, events::read,
        deliveries::read, deliveries::redeliver, deliveries::skip,
        executions::list, executions::read,
        replays::start, replays::list, replays::read, replays::cancel,
    ),
    modifiers(&BearerAuth, &MalformedAddress, &Webhooks),
    security(("bearer" = [])),
    tags(
        (name = "event types", description = "The event catalog"),
        (name = "handlers", description = "Who is called for which events"),
        (name = "events", description = "Emitting events and following their deliveries"),
        (name = "executions", description = "The execution log"),
        (name = "replays", description = "Resending stored events to a handler: replay and resync jobs"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme every `/api/v1` route takes.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: Authorization: Bearer <token>"))
                    .build(),
            ),
        );
    }
}

/// Every route answers 400 to an address holding an encoded NUL (`%00`),
/// refused before routing (`refuse_nul_in_address`): documented once here
/// for the operations that do not list a 400 of their own.
struct MalformedAddress;

impl Modify for MalformedAddress {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("Malformed request: an address holding an encoded NUL (%00)")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("400".into())
                    .or_insert_with(|| RefOr::T(response.clone()));
            }
        }
    }
}
