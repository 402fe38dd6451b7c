//! Claims: each handler is bounded by its room, on both backends.

use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_bounds_each_handler_by_its_room() {
    let (_dir, store) = sqlite().await;
    each_handler_is_bounded_by_its_room(&store).await;
}

#[tokio::test]
async fn postgres_bounds_each_handler_by_its_room() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    each_handler_is_bounded_by_its_room(&store).await;
    store.close().await;
}

/// A claim takes at most each handler's room, oldest due first across them,
/// and never looks at a handler it was not given.
async fn each_handler_is_bounded_by_its_room(store: &dyn Store) {
    let a = store.insert_handler(&spec("a", false)).await.unwrap().id;
    let b = store.insert_handler(&spec("b", false)).await.unwrap().id;
    let c = store.insert_handler(&spec("c", false)).await.unwrap().id;
    let batch: Vec<NewEvent> = (10_000..10_020)
        .map(|i| new_event(i, 1_000, &[(a, false), (b, false), (c, false)], None))
        .collect();
    insert_events(store, &batch).await;
    let claimed = lease(store, &[(a, 3), (b, 30)], 100).await;
    let count = |h: i64| claimed.iter().filter(|d| d.handler_id == h).count();
    assert_eq!((count(a), count(b), count(c)), (3, 20, 0));
    let oldest_a: Vec<&str> = claimed
        .iter()
        .filter(|d| d.handler_id == a)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(oldest_a, ["evt-10000", "evt-10001", "evt-10002"]);
    let limited = lease(store, &[(a, 100), (c, 100)], 5).await;
    assert_eq!(limited.len(), 5, "the limit holds across handlers");
}

#[tokio::test]
async fn sqlite_fails_a_delivery_for_a_handler_deleted_meanwhile() {
    let (_dir, store) = sqlite().await;
    a_delivery_for_a_deleted_handler_is_failed(&store).await;
}

#[tokio::test]
async fn postgres_fails_a_delivery_for_a_handler_deleted_meanwhile() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    a_delivery_for_a_deleted_handler_is_failed(&store).await;
    store.close().await;
}

/// An emit routed before its handler was deleted (here, or on a node whose
/// routing table lags) is stored failed, not pending: claims look only at
/// handlers that exist, so a pending one would wait forever.
async fn a_delivery_for_a_deleted_handler_is_failed(store: &dyn Store) {
    let live = store.insert_handler(&spec("live", false)).await.unwrap().id;
    let gone = store.insert_handler(&spec("gone", true)).await.unwrap().id;
    assert!(store.delete_handler(gone).await.unwrap());
    insert_events(
        store,
        &[new_event(
            10_000,
            1_000,
            &[(live, false), (gone, true)],
            None,
        )],
    )
    .await;
    let (_, deliveries) = store.get_event("evt-10000").await.unwrap().unwrap();
    let of = |h: i64| deliveries.iter().find(|d| d.handler_id == h).unwrap();
    assert_eq!(of(live).state, provisio_core::event::DeliveryState::Pending);
    assert_eq!(of(gone).state, provisio_core::event::DeliveryState::Failed);
    assert_eq!(
        of(gone).last_error.as_deref(),
        Some("not sent: the handler was deleted")
    );
    assert_eq!(store.queue_stats().await.unwrap().unfinished, 1);
}
