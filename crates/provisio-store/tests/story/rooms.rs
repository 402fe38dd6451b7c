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
    store.insert_events(&batch).await.unwrap();
    let claimed = store
        .claim_due(&Claim {
            now_ms: 2_000,
            lease_until_ms: 60_000,
            limit: 100,
            handlers: &[(a, 3), (b, 30)],
        })
        .await
        .unwrap();
    let count = |h: i64| claimed.iter().filter(|d| d.handler_id == h).count();
    assert_eq!((count(a), count(b), count(c)), (3, 20, 0));
    let oldest_a: Vec<&str> = claimed
        .iter()
        .filter(|d| d.handler_id == a)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(oldest_a, ["evt-10000", "evt-10001", "evt-10002"]);
    let limited = store
        .claim_due(&Claim {
            now_ms: 2_000,
            lease_until_ms: 60_000,
            limit: 5,
            handlers: &[(a, 100), (c, 100)],
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 5, "the limit holds across handlers");
}
