//! Writes cut off mid-way (an API request whose client went away drops its
//! future) leave nothing half done, and the next write works, on both
//! backends.

use std::time::Duration;

use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_survives_writes_dropped_mid_way() {
    let (_dir, store) = sqlite().await;
    writes_dropped_mid_way_leave_nothing_half_done(&store).await;
}

#[tokio::test]
async fn postgres_survives_writes_dropped_mid_way() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    writes_dropped_mid_way_leave_nothing_half_done(&store).await;
    store.close().await;
}

/// Polls `write` for up to `after` (zero: exactly once), then drops it.
async fn cut_off<T>(write: impl Future<Output = T>, after: Duration) {
    let _ = tokio::time::timeout(after, write).await;
}

async fn writes_dropped_mid_way_leave_nothing_half_done(store: &dyn Store) {
    let keep = store.insert_handler(&spec("keep", false)).await.unwrap().id;
    let mut doomed = Vec::new();
    for round in 0..40u64 {
        let after = Duration::from_micros(round * round * 3);
        // A transaction of several statements (delete, then fail the
        // handler's open deliveries), cut off between any two of them.
        let gone = store
            .insert_handler(&spec(&format!("doomed {round}"), false))
            .await
            .unwrap()
            .id;
        insert_events(
            store,
            &[new_event(50_000 + round, 1_000, &[(gone, false)], None)],
        )
        .await;
        cut_off(store.delete_handler(gone), after).await;
        doomed.push(gone);
        // An emit batch (one statement list on SQLite), cut off too.
        let batch: Vec<NewEvent> = (0..5)
            .map(|i| new_event(60_000 + round * 10 + i, 1_000, &[(keep, false)], None))
            .collect();
        cut_off(store.emit(&batch, None), after).await;
        // The next write always works: nothing is left inside a transaction.
        insert_events(
            store,
            &[new_event(70_000 + round, 1_000, &[(keep, false)], None)],
        )
        .await;
    }
    for (round, gone) in doomed.iter().enumerate() {
        let (_, deliveries) = store
            .get_event(&format!("evt-{:05}", 50_000 + round))
            .await
            .unwrap()
            .expect("its emit was not cut off");
        if store.get_handler(*gone).await.unwrap().is_none() {
            assert_eq!(
                deliveries[0].state,
                provisio_core::event::DeliveryState::Failed,
                "a deleted handler's delivery failed in the same transaction"
            );
        } else {
            assert_eq!(
                deliveries[0].state,
                provisio_core::event::DeliveryState::Pending,
                "handler {gone} still stands: {:?}",
                deliveries[0]
            );
        }
    }
    for n in 60_000..60_400u64 {
        if let Some((_, deliveries)) = store.get_event(&format!("evt-{n:05}")).await.unwrap() {
            assert_eq!(deliveries.len(), 1, "an event is stored with its delivery");
        }
    }
}
