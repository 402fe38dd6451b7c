//! An emit with a claim: the batch's deliveries are leased in the emit's own
//! transaction, as a claim after its commit would have leased them, on both
//! backends.

use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_leases_in_the_emits_transaction() {
    let (_dir, store) = sqlite().await;
    an_emit_leases_in_its_own_transaction(&store).await;
}

#[tokio::test]
async fn postgres_leases_in_the_emits_transaction() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    an_emit_leases_in_its_own_transaction(&store).await;
    store.close().await;
}

fn leased(claimed: &Claimed) -> Vec<(&str, i64)> {
    claimed
        .deliveries
        .iter()
        .map(|d| (d.event.id.as_str(), d.handler_id))
        .collect()
}

async fn an_emit_leases_in_its_own_transaction(store: &dyn Store) {
    let a = store.insert_handler(&spec("a", true)).await.unwrap().id;
    let b = store.insert_handler(&spec("b", false)).await.unwrap().id;
    // Due before the emit: one delivery of b's.
    insert_events(store, &[new_event(20_000, 1_000, &[(b, false)], None)]).await;

    // One event to both handlers, and a second for a's same object, which
    // waits in line behind the first. b has room for one.
    let rooms = [(a, 10), (b, 1)];
    let batch = [
        new_event(1, 2_000, &[(a, true), (b, false)], Some("key")),
        new_event(2, 2_000, &[(a, true)], None),
    ];
    let emitted = store
        .emit(&batch, Some(&claim_of(&rooms, 100)))
        .await
        .unwrap();
    assert_eq!(emitted.outcomes, [EmitOutcome::Stored, EmitOutcome::Stored]);
    let claimed = emitted.claimed.expect("a claim was asked for");
    assert_eq!(
        leased(&claimed),
        [("evt-20000", b), ("evt-00001", a)],
        "b's oldest within its room, a's head of line; oldest first"
    );
    assert_eq!(
        claimed.next_due_ms,
        Some(2_000),
        "b's new delivery is due, left for want of room"
    );

    // The leases hold: a claim after the commit finds only what was left.
    let rooms = [(a, 10), (b, 10)];
    let after = store.claim_due(&claim_of(&rooms, 100)).await.unwrap();
    assert_eq!(leased(&after), [("evt-00001", b)]);
    assert_eq!(
        after.next_due_ms,
        Some(60_000),
        "the rows just leased count at their lease's end, not as due now"
    );

    // A replayed key stores nothing; the claim is still made.
    let replay = [new_event(1, 2_000, &[(a, true), (b, false)], Some("key"))];
    let emitted = store
        .emit(&replay, Some(&claim_of(&rooms, 100)))
        .await
        .unwrap();
    assert_eq!(
        emitted.outcomes,
        [EmitOutcome::Replayed {
            event_id: "evt-00001".to_owned(),
            deliveries: 2
        }]
    );
    let claimed = emitted.claimed.expect("a claim was asked for");
    assert!(claimed.deliveries.is_empty(), "{:?}", leased(&claimed));
    assert_eq!(claimed.next_due_ms, Some(60_000), "the earliest lease end");

    // Without a claim, nothing is leased.
    let plain = [new_event(20_001, 2_000, &[(b, false)], None)];
    let emitted = store.emit(&plain, None).await.unwrap();
    assert!(emitted.claimed.is_none());
    let rest = store.claim_due(&claim_of(&rooms, 100)).await.unwrap();
    assert_eq!(leased(&rest), [("evt-20001", b)]);

    // A claim over more handlers than one SQLite statement takes (400)
    // still leases in the same call.
    let many: Vec<(i64, u32)> = (1_000_000..1_000_400)
        .map(|id| (id, 1))
        .chain([(b, 10)])
        .collect();
    let wide = [new_event(20_002, 2_000, &[(b, false)], None)];
    let emitted = store
        .emit(&wide, Some(&claim_of(&many, 100)))
        .await
        .unwrap();
    let claimed = emitted.claimed.expect("a claim was asked for");
    assert_eq!(leased(&claimed), [("evt-20002", b)]);
}
