//! The event catalog: seeded, added to, listed.

use provisio_core::catalog::EventType;
use provisio_store::*;

pub async fn story(store: &dyn Store) {
    // An earlier release seeded the built-in types with other examples: the
    // next start brings them up to date.
    let mut builtin = provisio_core::catalog::builtin();
    let current = builtin[0].example.replace(r#"{"old":true}"#.to_owned());
    store.seed_event_types(&builtin).await.unwrap();
    builtin[0].example = current;
    store.seed_event_types(&builtin).await.unwrap();
    let custom = EventType {
        id: "billing.invoice".to_owned(),
        group: "Billing".to_owned(),
        description: "An invoice was issued".to_owned(),
        empty_data: false,
        builtin: false,
        example: Some(r#"{"invoice_id":1}"#.to_owned()),
    };
    store.insert_event_type(&custom).await.unwrap();
    assert!(matches!(
        store.insert_event_type(&custom).await,
        Err(StoreError::Conflict(_))
    ));
    let types = store.list_event_types().await.unwrap();
    assert_eq!(types.len(), builtin.len() + 1, "seeding twice adds nothing");
    assert_eq!(types.last().unwrap(), &custom, "built-in types come first");
    for t in &builtin {
        let stored = types.iter().find(|s| s.id == t.id).unwrap();
        assert!(stored.example == t.example, "{} keeps an old example", t.id);
    }
}
