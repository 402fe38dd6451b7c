//! The operator views' figures: a handler's queue by state with its oldest
//! delivery, and what ended in the window counted in deliveries (once each,
//! however many attempts), with the last success and failure. On both
//! backends.

use provisio_core::handler::Stage;
use provisio_core::timefmt::from_millis;
use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_counts_handler_figures() {
    let (_dir, store) = sqlite().await;
    figures_count_deliveries_not_attempts(&store).await;
}

#[tokio::test]
async fn postgres_counts_handler_figures() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    figures_count_deliveries_not_attempts(&store).await;
    store.close().await;
}

async fn figures_count_deliveries_not_attempts(store: &dyn Store) {
    let h = store
        .insert_handler(&spec("figures", true))
        .await
        .unwrap()
        .id;
    let idle = store.insert_handler(&spec("idle", true)).await.unwrap().id;
    // Object 30_000: two events (one pending, one waiting); object 30_001:
    // one event; object 30_002: one event.
    let mut batch: Vec<NewEvent> = Vec::new();
    for (n, object) in [
        (30_000, 30_000u64),
        (30_003, 30_000),
        (30_001, 30_001),
        (30_002, 30_002),
    ] {
        let mut e = new_event(n, 1_000 + n as i64, &[(h, true)], None);
        e.event.object_id = object.into();
        batch.push(e);
    }
    insert_events(store, &batch).await;
    let claimed = claim(store, 100_000, &[]).await;
    assert_eq!(claimed.len(), 3, "one head per object");
    let of = |id: &str| claimed.iter().find(|c| c.event.id == id).unwrap();
    // 30_000 fails once (retried later), then succeeds; 30_001 fails for
    // good; 30_002 blocks its line.
    store
        .record(
            &[finished(
                of("evt-30000"),
                DeliveryNext::RetryAt { at_ms: 100_500 },
                100_100,
            )],
            &[],
        )
        .await
        .unwrap();
    store
        .record(
            &[
                finished(of("evt-30001"), DeliveryNext::Failed, 100_200),
                finished(of("evt-30002"), DeliveryNext::Blocked, 100_300),
            ],
            &[],
        )
        .await
        .unwrap();
    let again = claim(store, 101_000, &[]).await;
    assert_eq!(again.len(), 1);
    store
        .record(
            &[finished(&again[0], DeliveryNext::Succeeded, 101_100)],
            &[],
        )
        .await
        .unwrap();
    // A before-stage call of another handler: counted as a call.
    let mut call = finished(&again[0], DeliveryNext::Succeeded, 101_200)
        .execution
        .unwrap();
    call.handler_id = idle;
    call.stage = Stage::Before;
    call.delivery_id = None;
    call.started_at = from_millis(101_150);
    store.record(&[], &[call]).await.unwrap();

    let figures = store.handler_figures(0, 3_600_000).await.unwrap();
    let f = &figures[&h];
    assert_eq!(
        (f.open.pending, f.open.waiting, f.open.blocked),
        (1, 0, 1),
        "30_003 is due after 30_000 succeeded; 30_002 blocks: {f:?}"
    );
    // The oldest open one in emit order: 30_003 was emitted second.
    assert_eq!(f.open.oldest_created_ms, Some(1_000 + 30_003), "{f:?}");
    assert_eq!((f.succeeded(), f.failed()), (1, 1), "in deliveries: {f:?}");
    assert_eq!(f.last_success_ms, Some(101_100));
    // The newest failed call (the blocking one) is the last failure.
    assert_eq!(f.last_failure_ms, Some(100_295));
    assert!(!f.paused);
    let before = &figures[&idle];
    assert_eq!((before.succeeded(), before.failed()), (1, 0), "{before:?}");
    assert_eq!(before.last_success_ms, Some(101_150));
    assert_eq!(before.open, OpenCounts::default());
    // Outside the window nothing is counted, but the last times stay.
    let later = store.handler_figures(200_000, 3_600_000).await.unwrap();
    assert_eq!((later[&h].succeeded(), later[&h].failed()), (0, 0));
    assert_eq!(later[&h].last_success_ms, Some(101_100));

    let p95 = store.call_p95(&[h, idle, 999], 0, 100).await.unwrap();
    assert_eq!(p95.get(&h), Some(&5), "{p95:?}");
    assert_eq!(p95.get(&999), None);
}
