//! provisio's HTTP surface: the JSON API under `/api/v1`, health endpoints, auth
//! and errors.
//!
//! # Layout
//!
//! - [`app`] builds the router; [`run`] serves it on a bound listener until a
//!   shutdown signal, through [`connections`] (timeouts, graceful stop).
//! - [`api`]: one module per resource, each with its own `router()` and its
//!   wire types (`…In` / `…Out`), kept apart from storage records.
//! - [`web`]: the web section (Integration > Provisioning API).
//! - [`board`]: the handlers' health and queue figures, one cached snapshot
//!   for the API, the pages and `/metrics`.
//! - [`auth`]: bearer tokens. [`error`]: the one error type. [`extract`]: body
//!   and query parsing that maps bad input to that error.

pub mod api;
pub mod auth;
pub mod board;
pub mod connections;
pub mod error;
pub mod extract;
mod health;
pub mod telemetry;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::Response;
use provisio_engine::Engine;
use provisio_store::Store;
use tokio::net::TcpListener;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long a web section login lasts.
    pub session_ttl: Duration,
    /// How long a client has to send a request's headers, counted from the
    /// first read; also how long a kept-alive connection may sit idle before
    /// its next request. A client that never finishes its headers would
    /// otherwise hold its connection, and a file descriptor, forever.
    pub header_timeout: Duration,
    /// How long a client has to send a request's whole body, however slowly
    /// it trickles in.
    pub body_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            session_ttl: Duration::from_secs(12 * 3600),
            // Far beyond what a real client on any network needs for a few
            // kilobytes of headers, short enough that a few hundred silent
            // connections are gone before they matter.
            header_timeout: Duration::from_secs(15),
            // An emit body is at most 1 MiB by default: 60 s allows 17 KiB/s.
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// What every request handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    engine: Engine,
    config: ServerConfig,
    /// Recently validated API tokens.
    tokens: auth::TokenCache,
    /// The handlers' health and queue figures.
    board: board::Board,
}

impl AppState {
    pub fn new(engine: Engine, config: ServerConfig) -> Self {
        telemetry::handle();
        let board = board::Board::new(engine.store().clone(), engine.config().clock.clone());
        Self(Arc::new(Shared {
            board,
            engine,
            config,
            tokens: auth::TokenCache::default(),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.0.engine.store()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn tokens(&self) -> &auth::TokenCache {
        &self.0.tokens
    }

    pub fn board(&self) -> &board::Board {
        &self.0.board
    }
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    // The API's own 405 sits behind its token check, as its other answers
    // do. (A nested router sees paths without its prefix, so this one is
    // always the JSON error.)
    let api = api::router(state.clone())
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/api/v1", api)
        .merge(health::router())
        .merge(web::router())
        .route("/metrics", axum::routing::get(telemetry::render))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/openapi.json", {
                use utoipa::OpenApi;
                api::doc::ApiDoc::openapi()
            }),
        )
        .fallback(fallback)
        // Before the layers, so a 405 is timed and traced like any answer.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(refuse_nul_in_address))
        .layer(axum::middleware::from_fn(telemetry::time_requests))
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Unknown paths: the JSON error under `/api`, a page elsewhere.
async fn fallback(uri: Uri) -> Response {
    api_or_page(&uri, error::ApiError::not_found("page"), web::not_found)
}

/// A method the path does not take, shown like [`fallback`]; the router adds
/// the `Allow` header with the methods it does take.
async fn method_not_allowed(uri: Uri) -> Response {
    api_or_page(
        &uri,
        error::ApiError::method_not_allowed(),
        web::method_not_allowed,
    )
}

/// An address whose path or query holds an encoded NUL (`%00`) is refused
/// before routing, whatever it names: no id, search or filter can hold one
/// (PostgreSQL's `text` cannot store U+0000, see `provisio_core::NUL_REFUSED`),
/// and on PostgreSQL each such parameter was a 500 of its own.
async fn refuse_nul_in_address(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
    {
        return next.run(req).await;
    }
    api_or_page(
        req.uri(),
        error::ApiError::malformed("the address must not contain an encoded NUL character (%00)"),
        web::bad_address,
    )
}

fn api_or_page(uri: &Uri, api: error::ApiError, page: fn() -> Response) -> Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        api.into_response()
    } else {
        page()
    }
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// requests in progress finish. Connections are bounded in time by the
/// configured header and body timeouts (see [`connections::serve`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config().clone();
    let _upkeep = telemetry::spawn_upkeep(telemetry::handle().clone(), telemetry::UPKEEP_EVERY);
    connections::serve(
        listener,
        app(state),
        config.header_timeout,
        config.body_timeout,
        shutdown,
    )
    .await;
    Ok(())
}
