//! Handlers: stored, listed and filtered, changed. Returns the ordered and the unordered handler for the chapters after.

use provisio_core::catalog::EventPattern;
use provisio_core::handler::{HandlerKind, Status};
use provisio_store::*;

use crate::support::*;

pub async fn story(store: &dyn Store) -> Handlers {
    let ordered = store
        .insert_handler(&spec("Ordered sync", true))
        .await
        .unwrap();
    assert_eq!(ordered.spec, spec("Ordered sync", true));
    let mut other = spec("Other CRM", false);
    other.events_id = EventPattern::parse("billing.invoice").unwrap();
    other.kind = HandlerKind::Script;
    other.priority = -5;
    let unordered = store.insert_handler(&other).await.unwrap();
    let mut archived = spec("old_50%_thing", true);
    archived.status = Status::Archived;
    let archived = store.insert_handler(&archived).await.unwrap();

    let list = |filter: HandlerFilter| async move {
        let (items, total) = store.list_handlers(&filter, Page::default()).await.unwrap();
        assert_eq!(items.len() as u64, total);
        items.into_iter().map(|h| h.id).collect::<Vec<_>>()
    };
    assert_eq!(
        list(HandlerFilter::default()).await,
        vec![unordered.id, ordered.id],
        "priority order; archived hidden"
    );
    let all = HandlerFilter {
        include_archived: true,
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await.len(), 3);
    let by_type = |t: &str| HandlerFilter {
        events_id: Some(t.to_owned()),
        ..all.clone()
    };
    assert_eq!(
        list(by_type("clients.create")).await,
        vec![ordered.id, archived.id]
    );
    assert_eq!(
        list(by_type("clients.*")).await,
        vec![ordered.id, archived.id]
    );
    assert_eq!(list(by_type("billing.invoice")).await, vec![unordered.id]);
    assert_eq!(list(by_type("clientsX.create")).await, Vec::<i64>::new());
    assert_eq!(
        list(HandlerFilter {
            kind: Some(HandlerKind::Script),
            ..all.clone()
        })
        .await,
        vec![unordered.id]
    );
    assert_eq!(
        list(HandlerFilter {
            status: Some(Status::Archived),
            ..Default::default()
        })
        .await,
        vec![archived.id]
    );
    assert_eq!(
        list(HandlerFilter {
            q: Some("SYNC".to_owned()),
            ..all.clone()
        })
        .await,
        vec![ordered.id],
        "the name search ignores case"
    );
    assert_eq!(
        list(HandlerFilter {
            q: Some("50%".to_owned()),
            ..all.clone()
        })
        .await,
        vec![archived.id],
        "LIKE wildcards in the search are literal"
    );
    let (page2, total) = store
        .list_handlers(
            &all,
            Page {
                page: 2,
                per_page: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!((page2.len(), total), (1, 3));

    let mut changed = spec("Ordered sync v2", true);
    changed.priority = 20;
    let updated = store.update_handler(ordered.id, &changed).await.unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.secret.expose(), ordered.secret.expose());
    let rotated = store.rotate_handler_secret(ordered.id).await.unwrap();
    assert_ne!(rotated.secret.expose(), ordered.secret.expose());
    assert!(matches!(
        store.update_handler(9_999, &changed).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.rotate_handler_secret(9_999).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.get_handler(ordered.id).await.unwrap().unwrap().spec,
        changed
    );
    assert_eq!(store.all_handlers().await.unwrap().len(), 3);

    Handlers {
        ordered: ordered.id,
        unordered: unordered.id,
    }
}
