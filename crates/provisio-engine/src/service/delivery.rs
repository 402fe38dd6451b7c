//! Reading one delivery as its views show it: where it stands, its handler's
//! name, its event, and its newest attempts. The API's delivery read and the
//! web section's delivery page both read it here.

use provisio_core::event::Event;
use provisio_store::ExecutionRecord;

use super::*;

/// A delivery with what its views show beside it.
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub delivery: DeliveryRecord,
    /// The handler's name now; `None` when it was deleted.
    pub handler_name: Option<String>,
    pub event: Event,
    /// Its newest attempts, newest first.
    pub attempts: Vec<ExecutionRecord>,
    /// It has more attempts than `attempts` holds.
    pub more_attempts: bool,
}

impl Engine {
    /// Delivery `id` with its newest `shown` attempts;
    /// [`OpError::NotFound`] when there is no such delivery.
    pub async fn delivery_detail(&self, id: &str, shown: u32) -> Result<DeliveryDetail, OpError> {
        let store = self.store();
        let missing = || OpError::NotFound(format!("delivery {id}"));
        let delivery = store.get_delivery(id).await?.ok_or_else(missing)?;
        let (event, _) = store
            .get_event(&delivery.event_id)
            .await?
            .ok_or_else(missing)?;
        let handler_name = store
            .get_handler(delivery.handler_id)
            .await?
            .map(|h| h.spec.name);
        let filter = ExecutionFilter {
            delivery_id: Some(id.to_owned()),
            ..ExecutionFilter::default()
        };
        let page = Page {
            page: 1,
            per_page: shown,
        };
        let (attempts, counted) = store.list_executions(&filter, page).await?;
        Ok(DeliveryDetail {
            delivery,
            handler_name,
            event,
            attempts,
            more_attempts: counted > u64::from(shown),
        })
    }
}
