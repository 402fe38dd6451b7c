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
    modifiers(&BearerAuth, &Webhooks),
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
