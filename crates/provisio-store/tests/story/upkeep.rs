//! Deleting a handler; the overview, monitoring, sessions and retention.

use provisio_core::event::DeliveryState;
use provisio_store::*;

use crate::support::*;

pub async fn story(store: &dyn Store, handlers: &Handlers) {
    use DeliveryState::*;
    let h = handlers.ordered;
    let page = Page::default();
    let count = |filter: ExecutionFilter| async move {
        store.list_executions(&filter, page).await.unwrap().1
    };
    // --- Deleting a handler fails its open deliveries -----------------------
    assert!(store.delete_handler(h).await.unwrap());
    assert!(!store.delete_handler(h).await.unwrap());
    assert_eq!(states(store, "evt-00005").await, vec![Failed]);
    assert!(store.get_handler(h).await.unwrap().is_none());
    assert_eq!(
        count(ExecutionFilter {
            handler_id: Some(h),
            ..Default::default()
        })
        .await,
        6,
        "executions outlive their handler"
    );

    // --- The overview, monitoring, sessions and retention -------------------
    let token = store
        .create_token("web", &TokenHash([7; 32]))
        .await
        .unwrap();
    let session = SessionRecord {
        token_id: token.id,
        token_name: "web".into(),
        csrf: "csrf-1".into(),
        expires_at_ms: 4_000_000_000_000,
    };
    store.create_session(&[9; 32], &session).await.unwrap();
    assert_eq!(
        store.find_session(&[9; 32]).await.unwrap(),
        Some(session.clone())
    );
    assert!(store.revoke_token(TokenRef::Name("web")).await.unwrap());
    assert_eq!(
        store.find_session(&[9; 32]).await.unwrap(),
        None,
        "revoking the token ends its sessions"
    );
    store.delete_session(&[9; 32], 0).await.unwrap();

    let unfinished = store.queue_stats().await.unwrap().unfinished;
    assert!(count(ExecutionFilter::default()).await > 0);
    // Everything finished is older than this; batches of two until done.
    while store.prune(4_000_000_000_000, 2).await.unwrap() > 0 {}
    assert_eq!(
        count(ExecutionFilter::default()).await,
        0,
        "old executions are pruned"
    );
    assert_eq!(
        store.queue_stats().await.unwrap().unfinished,
        unfinished,
        "unfinished work is kept"
    );
}
