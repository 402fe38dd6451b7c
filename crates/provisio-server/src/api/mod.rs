//! The JSON API under `/api/v1` (DESIGN §6): one module per resource.

pub mod deliveries;
pub mod doc;
pub mod event_types;
pub mod events;
pub mod executions;
pub mod handler_health;
pub mod handler_tests;
pub mod handlers;
pub mod replays;
pub mod webhooks;

use axum::Router;
use provisio_store::Page;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

pub fn router(_state: AppState) -> Router<AppState> {
    Router::new()
        .merge(event_types::router())
        .merge(handlers::router())
        .merge(handler_tests::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(executions::router())
        .merge(replays::router())
}

/// A page of a list: the items and how many match in all.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListOut<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// `page` and `per_page`, shared by every list.
#[derive(Debug, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl PageQuery {
    pub fn to_page(&self) -> Result<Page, ApiError> {
        let page = self.page.unwrap_or(1);
        if page == 0 {
            return Err(ApiError::invalid_field("page", "must be 1 or more"));
        }
        let per_page = self.per_page.unwrap_or(Page::DEFAULT_PER_PAGE);
        if per_page == 0 || per_page > Page::MAX_PER_PAGE {
            return Err(ApiError::invalid_field(
                "per_page",
                format!("must be from 1 to {}", Page::MAX_PER_PAGE),
            ));
        }
        Ok(Page { page, per_page })
    }
}

/// Formats an instant for the wire.
pub(crate) fn ts(t: time::OffsetDateTime) -> String {
    provisio_core::timefmt::format_millis(t)
}
