//! An object's line: a blocked delivery holds it until retried or skipped;
//! a conflating handler sends only the newest of an object's waiting
//! deliveries, at release and for a whole backlog at once. On both backends.

use provisio_core::event::{DeliveryState, ObjectId};
use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_moves_lines_on() {
    let (_dir, store) = sqlite().await;
    a_blocked_line_waits_until_retried_or_skipped(&store).await;
    a_conflating_handler_sends_only_the_newest(&store).await;
}

#[tokio::test]
async fn postgres_moves_lines_on() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    a_blocked_line_waits_until_retried_or_skipped(&store).await;
    a_conflating_handler_sends_only_the_newest(&store).await;
    store.close().await;
}

/// Event `n` for `object`, routed to the ordered handler `h`.
fn event_for(n: u64, object: u64, h: i64, at_ms: i64) -> NewEvent {
    let mut new = new_event(n, at_ms, &[(h, true)], None);
    new.event.object_id = ObjectId::from(object);
    new
}

async fn delivery(store: &dyn Store, n: u64) -> DeliveryRecord {
    let (_, deliveries) = store
        .get_event(&format!("evt-{n:05}"))
        .await
        .unwrap()
        .unwrap();
    deliveries.into_iter().next().unwrap()
}

fn dlv(n: u64) -> String {
    format!("dlv-{n:05}-0")
}

async fn a_blocked_line_waits_until_retried_or_skipped(store: &dyn Store) {
    use DeliveryState::*;
    let h = store.insert_handler(&spec("block", true)).await.unwrap().id;
    let batch: Vec<NewEvent> = (1..=3).map(|n| event_for(n, 7, h, 1_000)).collect();
    insert_events(store, &batch).await;
    let first = claim(store, 2_000, &[]).await;
    assert_eq!(first.len(), 1, "only the head of the line is due");

    // The head used up its attempts: it blocks, nothing is released.
    let moved = store
        .record(&[finished(&first[0], DeliveryNext::Blocked, 2_100)], &[])
        .await
        .unwrap();
    assert_eq!(moved, RecordOutcome::default());
    assert_eq!(delivery(store, 1).await.state, Blocked);
    assert_eq!(delivery(store, 1).await.finished_at, None, "not finished");
    for n in [2, 3] {
        let waiting = delivery(store, n).await;
        assert_eq!(waiting.state, Waiting);
        assert_eq!(waiting.blocked_by, Some(dlv(1)), "linked to its blocker");
    }
    let held: Vec<String> = store
        .waiting_behind(&dlv(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        held,
        [dlv(2), dlv(3)],
        "what the blocked one holds up, in order"
    );
    assert!(claim(store, 3_000, &[]).await.is_empty());
    assert_eq!(store.queue_stats().await.unwrap().unfinished, 3);
    // A new emit for the object joins the blocked line.
    insert_events(store, &[event_for(4, 7, h, 3_000)]).await;
    assert_eq!(delivery(store, 4).await.state, Waiting);

    // Skip: refused for what is not blocked, unknown for what is not there.
    assert!(matches!(
        store.skip_blocked(&dlv(2), "ops", 4_000).await,
        Err(StoreError::Conflict(m)) if m.contains("waiting")
    ));
    assert!(matches!(
        store.skip_blocked("nope", "ops", 4_000).await,
        Err(StoreError::NotFound)
    ));
    let (skipped, moved) = store.skip_blocked(&dlv(1), "ops", 4_000).await.unwrap();
    assert_eq!(skipped.state, Failed);
    assert_eq!(skipped.last_error.as_deref(), Some("skipped by ops"));
    assert_eq!(moved.released, 1);
    let next = delivery(store, 2).await;
    assert_eq!(
        (next.state, next.blocked_by),
        (Pending, None),
        "the next one goes"
    );
    assert_eq!(delivery(store, 3).await.blocked_by, None);

    // The next blocks too; a redeliver retries it at once, at the head of
    // its line, and its success lets the line move on.
    let second = claim(store, 4_000, &[]).await;
    assert_eq!(second.len(), 1);
    store
        .record(&[finished(&second[0], DeliveryNext::Blocked, 4_100)], &[])
        .await
        .unwrap();
    let (retried, done) = store.redeliver(&dlv(2), 5_000).await.unwrap();
    assert_eq!((retried.state, done), (Pending, Redelivery::NewRound));
    let again = claim(store, 5_000, &[]).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].round_start, again[0].attempts, "a fresh round");
    store
        .record(&[finished(&again[0], DeliveryNext::Succeeded, 5_100)], &[])
        .await
        .unwrap();
    assert_eq!(delivery(store, 2).await.state, Success);
    assert_eq!(delivery(store, 3).await.state, Pending);
    assert_eq!(delivery(store, 4).await.state, Waiting);
    assert!(
        store.conflate_lines(h, 6_000).await.unwrap() == 0,
        "not a conflating handler"
    );
}

async fn a_conflating_handler_sends_only_the_newest(store: &dyn Store) {
    use DeliveryState::*;
    let h = store
        .insert_handler(&provisio_core::handler::HandlerSpec {
            conflate: true,
            ..spec("conflate", true)
        })
        .await
        .unwrap()
        .id;

    // At release: one in flight, nine queue behind it; when it finishes, the
    // newest goes and the eight between are superseded by it.
    insert_events(store, &[event_for(100, 8, h, 10_000)]).await;
    let in_flight: Vec<ClaimedDelivery> = claim(store, 10_000, &[])
        .await
        .into_iter()
        .filter(|c| c.handler_id == h)
        .collect();
    assert_eq!(in_flight.len(), 1);
    let behind: Vec<NewEvent> = (101..=109).map(|n| event_for(n, 8, h, 10_001)).collect();
    insert_events(store, &behind).await;
    let done = AttemptResult {
        conflate: true,
        ..finished(&in_flight[0], DeliveryNext::Succeeded, 10_100)
    };
    let moved = store.record(&[done], &[]).await.unwrap();
    assert_eq!(
        moved,
        RecordOutcome {
            released: 1,
            superseded: 8
        }
    );
    assert_eq!(delivery(store, 109).await.state, Pending);
    for n in 101..=108 {
        let d = delivery(store, n).await;
        assert_eq!(d.state, Superseded);
        assert_eq!(d.superseded_by, Some(dlv(109)));
        assert!(d.finished_at.is_some());
    }

    // A whole backlog at once: ten never-attempted deliveries per object
    // leave one pending; an object whose head is in flight keeps it, and its
    // newest waits behind it.
    let backlog = |object: u64, first: u64| -> Vec<NewEvent> {
        (first..first + 10)
            .map(|n| event_for(n, object, h, 20_000))
            .collect()
    };
    insert_events(store, &backlog(22, 400)).await;
    let heads = claim(store, 20_000, &[]).await;
    assert!(heads.iter().any(|c| c.id == dlv(400)));
    insert_events(store, &backlog(20, 200)).await;
    insert_events(store, &backlog(21, 300)).await;
    assert_eq!(store.conflate_lines(h, 20_100).await.unwrap(), 9 + 9 + 8);
    for first in [200, 300] {
        let newest = delivery(store, first + 9).await;
        assert_eq!(newest.state, Pending, "object of {first}");
        for n in first..first + 9 {
            let d = delivery(store, n).await;
            assert_eq!(
                (d.state, d.superseded_by),
                (Superseded, Some(dlv(first + 9)))
            );
        }
    }
    assert_eq!(delivery(store, 400).await.state, Pending, "in flight: kept");
    assert_eq!(delivery(store, 409).await.state, Waiting);
    for n in 401..409 {
        assert_eq!(delivery(store, n).await.superseded_by, Some(dlv(409)));
    }
}
