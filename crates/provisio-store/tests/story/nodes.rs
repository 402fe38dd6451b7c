//! Several nodes on one PostgreSQL database: disjoint claims, per-object order, one admin token, and which emits wake the others.

use provisio_store::postgres::scratch::ScratchDatabase;
use provisio_store::postgres::{PgSettings, PgStore};
use provisio_store::*;

use crate::support::*;

/// Two nodes (two pools) on one fresh database, or `None` where PostgreSQL
/// is unreachable outside CI. The database lives as long as the handle.
async fn two_nodes() -> Option<(ScratchDatabase, PgStore, PgStore)> {
    let (db, a) = postgres().await?;
    let b = PgStore::connect(&PgSettings::new(db.url())).await.unwrap();
    Some((db, a, b))
}

#[tokio::test]
async fn postgres_claims_from_two_pools_are_disjoint() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let handler = a.insert_handler(&spec("unordered", false)).await.unwrap();
    let batch: Vec<NewEvent> = (0..200)
        .map(|i| new_event(i, 1_000, &[(handler.id, false)], None))
        .collect();
    insert_events(&a, &batch).await;
    let handlers = [(handler.id, 150)];
    let claim = |limit| Claim {
        now_ms: 2_000,
        lease_until_ms: 60_000,
        limit,
        handlers: &handlers,
    };
    let (cx, cy) = (claim(150), claim(150));
    let (x, y) = tokio::join!(a.claim_due(&cx), b.claim_due(&cy));
    let (x, y) = (x.unwrap().deliveries, y.unwrap().deliveries);
    assert_eq!(x.len() + y.len(), 200, "every due delivery is leased once");
    let mut seqs: Vec<i64> = x.iter().chain(&y).map(|c| c.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "no delivery is leased by both");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_orders_concurrent_emits_for_one_object() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let handler = a.insert_handler(&spec("ordered", true)).await.unwrap();
    // Many small batches from two pools at once, all for object 7: exactly
    // one delivery may be pending at any time.
    let hid = handler.id;
    let emit = |store: PgStore, base: u64| async move {
        for i in 0..40 {
            let e = new_event(base + i, 1_000, &[(hid, true)], None);
            insert_events(&store, &[e]).await;
        }
    };
    tokio::join!(emit(a.clone(), 0), emit(b.clone(), 1_000));
    let claimed = lease(&a, &[(hid, 100)], 100).await;
    assert_eq!(claimed.len(), 1, "one open delivery per (handler, object)");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn postgres_two_nodes_put_one_new_admin_token_at_once() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    // Nodes restarted together with a changed PROVISIO_ADMIN_TOKEN: both
    // starts succeed and exactly one live token holds the new value.
    for round in 0..20u8 {
        let hash = TokenHash([round; 32]);
        let (x, y) = tokio::join!(a.put_token("admin", &hash), b.put_token("admin", &hash));
        assert_eq!(x.unwrap().id, y.unwrap().id, "round {round}");
    }
    let live: Vec<_> = a
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].hash, TokenHash([19; 32]));
    a.close().await;
    b.close().await;
}

/// Another node hears of new deliveries only when the emitting node left
/// some unleased: waking it for work already leased cost it a claim per
/// event.
#[tokio::test]
async fn postgres_nodes_hear_only_of_work_left_unleased() {
    let Some((_db, a, b)) = two_nodes().await else {
        return;
    };
    let mut heard = b.watch().expect("PostgreSQL announces changes");
    assert_eq!(heard.recv().await, Some(StoreChange::Resync));
    let handler = a.insert_handler(&spec("unordered", false)).await.unwrap();
    let hears_work = async |heard: &mut tokio::sync::mpsc::Receiver<StoreChange>| {
        // NOTIFYs arrive a moment after their commit.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut work = false;
        while let Ok(change) = heard.try_recv() {
            work |= change == StoreChange::Work;
        }
        work
    };
    hears_work(&mut heard).await; // the handler's creation
    let claim = |rooms| Claim {
        now_ms: 2_000,
        lease_until_ms: 60_000,
        limit: 100,
        handlers: rooms,
    };
    let room = [(handler.id, 5)];
    let one = [new_event(30_000, 1_000, &[(handler.id, false)], None)];
    let emitted = a.emit(&one, Some(&claim(&room))).await.unwrap();
    assert_eq!(emitted.claimed.unwrap().deliveries.len(), 1);
    assert!(!hears_work(&mut heard).await, "all of it was leased");

    let no_room = [(handler.id, 0)];
    let two = [new_event(30_001, 1_000, &[(handler.id, false)], None)];
    let emitted = a.emit(&two, Some(&claim(&no_room))).await.unwrap();
    assert!(emitted.claimed.unwrap().deliveries.is_empty());
    assert!(hears_work(&mut heard).await, "left for want of room");
    let taken = b.claim_due(&claim(&room)).await.unwrap().deliveries;
    assert_eq!(taken.len(), 1, "the other node takes it");

    let three = [new_event(30_002, 1_000, &[(handler.id, false)], None)];
    a.emit(&three, None).await.unwrap();
    assert!(hears_work(&mut heard).await, "no claim: all of it is news");
    a.close().await;
    b.close().await;
}
