//! Tokens: created, put, found, revoked.

use provisio_store::*;

pub async fn story(store: &dyn Store) {
    let first = store.create_token("ci", &TokenHash([1; 32])).await.unwrap();
    assert!(matches!(
        store.create_token("ci", &TokenHash([2; 32])).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_token(&TokenHash([1; 32])).await.unwrap(),
        Some(first.clone())
    );
    let same = store.put_token("ci", &TokenHash([1; 32])).await.unwrap();
    assert_eq!(same.id, first.id, "putting the same hash keeps the token");
    let replaced = store.put_token("ci", &TokenHash([3; 32])).await.unwrap();
    assert_ne!(replaced.id, first.id);
    assert_eq!(store.find_token(&TokenHash([1; 32])).await.unwrap(), None);
    assert!(store.revoke_token(TokenRef::Name("ci")).await.unwrap());
    assert!(!store.revoke_token(TokenRef::Name("ci")).await.unwrap());
    let tokens = store.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.revoked_at.is_some()));
    // A token changed back to an earlier value (PROVISIO_ADMIN_TOKEN A → B →
    // A across restarts) is live again as a new row; the old row stays
    // revoked for the record, so its ended web sessions stay ended.
    let a = store.put_token("admin", &TokenHash([4; 32])).await.unwrap();
    store.put_token("admin", &TokenHash([5; 32])).await.unwrap();
    let a_again = store.put_token("admin", &TokenHash([4; 32])).await.unwrap();
    assert_ne!(a_again.id, a.id);
    assert_eq!(
        store.find_token(&TokenHash([4; 32])).await.unwrap(),
        Some(a_again.clone())
    );
    assert_eq!(store.find_token(&TokenHash([5; 32])).await.unwrap(), None);
    assert!(store.revoke_token(TokenRef::Name("admin")).await.unwrap());
    // A name that is another token's id: each reference means one token.
    let one = store
        .create_token("one", &TokenHash([10; 32]))
        .await
        .unwrap();
    let id_text = one.id.to_string();
    store
        .create_token(&id_text, &TokenHash([11; 32]))
        .await
        .unwrap();
    assert!(store.revoke_token(TokenRef::Name(&id_text)).await.unwrap());
    assert_eq!(store.find_token(&TokenHash([11; 32])).await.unwrap(), None);
    assert_eq!(
        store.find_token(&TokenHash([10; 32])).await.unwrap(),
        Some(one.clone()),
        "revoking by name leaves the token with that id"
    );
    assert!(store.revoke_token(TokenRef::Id(one.id)).await.unwrap());
    assert!(!store.revoke_token(TokenRef::Id(one.id)).await.unwrap());
}
