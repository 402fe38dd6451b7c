//! The event catalog: seeded, added to, listed.

use provisio_core::catalog::EventType;
use provisio_store::*;

pub async fn story(store: &dyn Store) {
    let builtin = provisio_core::catalog::builtin();
    store.seed_event_types(&builtin).await.unwrap();
    store.seed_event_types(&builtin).await.unwrap();
    let custom = EventType {
        id: "billing.invoice".to_owned(),
        group: "Billing".to_owned(),
        description: "An invoice was issued".to_owned(),
        empty_data: false,
        builtin: false,
    };
    store.insert_event_type(&custom).await.unwrap();
    assert!(matches!(
        store.insert_event_type(&custom).await,
        Err(StoreError::Conflict(_))
    ));
    let types = store.list_event_types().await.unwrap();
    assert_eq!(types.len(), builtin.len() + 1, "seeding twice adds nothing");
    assert_eq!(types.last().unwrap(), &custom, "built-in types come first");
}
