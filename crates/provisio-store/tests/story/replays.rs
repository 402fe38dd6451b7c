//! Replay jobs: matching, per-object order, no double queueing, progress and
//! cancel, on both backends.

use provisio_core::catalog::EventPattern;
use provisio_core::event::{DeliveryState, Event, ObjectId};
use provisio_core::replay::{REPLAY_CANCELLED, ReplayState, ReplayStatus};
use provisio_core::timefmt::from_millis;
use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_replays_and_cancels() {
    let (_dir, store) = sqlite().await;
    replays_and_cancels(&store).await;
}

#[tokio::test]
async fn postgres_replays_and_cancels() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    replays_and_cancels(&store).await;
    store.close().await;
}

/// An event `name` (`a1`: object 1's first) at `at_ms`, delivered to `handler`.
fn event(name: &str, object: u64, events_id: &str, at_ms: i64, handler: i64) -> NewEvent {
    NewEvent {
        filtered_out: Vec::new(),
        event: Event {
            id: format!("evt-{name}"),
            events_id: events_id.to_owned(),
            object_id: ObjectId::from(object),
            dt: from_millis(at_ms),
            data: "{}".to_owned(),
        },
        idempotency: None,
        deliveries: vec![NewDelivery {
            id: format!("dlv-{name}"),
            handler_id: handler,
            ordered: true,
        }],
        created_at_ms: at_ms,
    }
}

/// A job started at `at_ms`.
fn job(handler_id: i64, filter: ReplayFilter, at_ms: i64) -> NewReplay {
    NewReplay {
        id: ulid::Ulid::new().to_string(),
        handler_id,
        ordered: true,
        filter,
        until_ms: 10_000,
        created_by: "story".to_owned(),
        created_at_ms: at_ms,
    }
}

fn all() -> ReplayFilter {
    ReplayFilter {
        events_id: None,
        object_key: None,
        from_ms: None,
        to_ms: None,
        status: ReplayStatus::All,
        latest_per_object: false,
    }
}

/// The event ids of the deliveries `claim` leased for `handler`, in order.
async fn claim_for(store: &dyn Store, handler: i64, now_ms: i64) -> Vec<ClaimedDelivery> {
    let claimed = claim(store, now_ms, &[]).await;
    assert!(claimed.iter().all(|c| c.handler_id == handler));
    claimed
}

fn events(claimed: &[ClaimedDelivery]) -> Vec<&str> {
    claimed.iter().map(|c| c.event.id.as_str()).collect()
}

/// The state of `event`'s delivery to `handler` that a replay queued last.
async fn replayed(store: &dyn Store, event: &str, handler: i64) -> DeliveryRecord {
    let (_, deliveries) = store.get_event(event).await.unwrap().unwrap();
    deliveries
        .into_iter()
        .rfind(|d| d.handler_id == handler && !d.id.starts_with("dlv-"))
        .unwrap()
}

async fn replays_and_cancels(store: &dyn Store) {
    let h1 = store.insert_handler(&spec("h1", true)).await.unwrap().id;
    // Objects 1 (a) and 2 (b), emitted a1 b1 a2 b2 a3; a3 is a delete.
    insert_events(
        store,
        &[
            event("a1", 1, "clients.create", 1_000, h1),
            event("b1", 2, "clients.create", 1_001, h1),
            event("a2", 1, "clients.update", 1_002, h1),
            event("b2", 2, "clients.update", 1_003, h1),
            event("a3", 1, "clients.delete", 1_004, h1),
        ],
    )
    .await;
    // h1 got a1, b2 and a3; b1 and a2 failed.
    let first = claim_for(store, h1, 2_000).await;
    assert_eq!(events(&first), ["evt-a1", "evt-b1"]);
    let next = [DeliveryNext::Succeeded, DeliveryNext::Failed];
    let results: Vec<_> = first
        .iter()
        .zip(next)
        .map(|(c, n)| finished(c, n, 2_001))
        .collect();
    store.record(&results, &[]).await.unwrap();
    let second = claim_for(store, h1, 2_002).await;
    assert_eq!(events(&second), ["evt-a2", "evt-b2"]);
    let results: Vec<_> = second
        .iter()
        .zip(next.into_iter().rev())
        .map(|(c, n)| finished(c, n, 2_003))
        .collect();
    store.record(&results, &[]).await.unwrap();
    let third = claim_for(store, h1, 2_004).await;
    assert_eq!(events(&third), ["evt-a3"]);
    store
        .record(&[finished(&third[0], DeliveryNext::Succeeded, 2_005)], &[])
        .await
        .unwrap();

    // Status failed: only b1 and a2, each at the head of its object's line.
    let failed = job(
        h1,
        ReplayFilter {
            status: ReplayStatus::Failed,
            ..all()
        },
        5_000,
    );
    let started = store.start_replay(&failed).await.unwrap();
    assert_eq!(
        (started.state, started.matched, started.queued),
        (ReplayState::Running, 2, 2)
    );
    assert_eq!((started.sent, started.failed, started.remaining), (0, 0, 2));
    assert_eq!(started.created_by, "story");
    let b1 = replayed(store, "evt-b1", h1).await;
    let a2 = replayed(store, "evt-a2", h1).await;
    assert_eq!(
        (b1.state, a2.state),
        (DeliveryState::Pending, DeliveryState::Pending)
    );
    assert!(b1.id.starts_with(&failed.id[..21]) && b1.id.len() == 26);
    assert!(b1.id < a2.id, "a job's delivery ids follow emit order");
    assert_eq!(b1.attempts, 0);

    // The same job again while the first runs queues nothing.
    let again = store
        .start_replay(&job(
            h1,
            ReplayFilter {
                status: ReplayStatus::Failed,
                ..all()
            },
            5_001,
        ))
        .await
        .unwrap();
    assert_eq!(
        (again.state, again.matched, again.queued, again.remaining),
        (ReplayState::Done, 2, 0, 0)
    );

    // A resync: each object's latest event (a3, b2), behind the open line.
    let resync = store
        .start_replay(&job(
            h1,
            ReplayFilter {
                latest_per_object: true,
                events_id: Some(EventPattern::parse("clients.*").unwrap()),
                ..all()
            },
            5_002,
        ))
        .await
        .unwrap();
    assert_eq!((resync.matched, resync.queued), (2, 2));
    assert_eq!(
        replayed(store, "evt-a3", h1).await.state,
        DeliveryState::Waiting
    );
    assert_eq!(
        replayed(store, "evt-b2", h1).await.state,
        DeliveryState::Waiting
    );

    // Cancelling the first job fails what it had not sent and lets each line
    // move on to the resync's delivery.
    let (cancelled, released) = store.cancel_replay(&failed.id, 6_000).await.unwrap();
    assert_eq!(released, 2);
    assert_eq!(cancelled.state, ReplayState::Cancelled);
    assert_eq!((cancelled.cancelled, cancelled.remaining), (2, 0));
    let b1 = replayed(store, "evt-b1", h1).await;
    assert_eq!(
        (b1.state, b1.last_error.as_deref()),
        (DeliveryState::Failed, Some(REPLAY_CANCELLED))
    );
    assert_eq!(
        replayed(store, "evt-a3", h1).await.state,
        DeliveryState::Pending
    );
    let (again_cancelled, released) = store.cancel_replay(&failed.id, 6_001).await.unwrap();
    assert_eq!(
        (again_cancelled.state, released),
        (ReplayState::Cancelled, 0),
        "a second cancel changes nothing"
    );
    assert!(matches!(
        store.cancel_replay(&again.id, 6_002).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .cancel_replay("01JNOSUCHREPLAY00000000000", 6_002)
            .await,
        Err(StoreError::NotFound)
    ));

    // Back-fill a new handler: every event, the lines in emit order.
    let h2 = store.insert_handler(&spec("h2", true)).await.unwrap().id;
    let resync_work = claim(store, 7_000, &[h2]).await;
    assert_eq!(events(&resync_work), ["evt-b2", "evt-a3"]);
    let backfill = store.start_replay(&job(h2, all(), 7_001)).await.unwrap();
    assert_eq!((backfill.matched, backfill.queued), (5, 5));
    // Object 1 in a time range: a2, already being back-filled.
    let narrow = store
        .start_replay(&job(
            h2,
            ReplayFilter {
                object_key: Some("1".to_owned()),
                from_ms: Some(1_001),
                to_ms: Some(1_003),
                ..all()
            },
            7_002,
        ))
        .await
        .unwrap();
    assert_eq!((narrow.matched, narrow.queued), (1, 0));
    let mut order = Vec::new();
    for round in 0..3 {
        let now = 8_000 + round * 10;
        let claimed = claim(store, now, &[h1]).await;
        order.extend(events(&claimed).into_iter().map(str::to_owned));
        let results: Vec<_> = claimed
            .iter()
            .map(|c| finished(c, DeliveryNext::Succeeded, now + 1))
            .collect();
        store.record(&results, &[]).await.unwrap();
    }
    assert_eq!(order, ["evt-a1", "evt-b1", "evt-a2", "evt-b2", "evt-a3"]);
    let done = store.get_replay(&backfill.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.sent, done.remaining),
        (ReplayState::Done, 5, 0)
    );
    assert!(done.finished_at.is_some());

    let (list, total) = store
        .list_replays(Page {
            page: 1,
            per_page: 2,
        })
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(list.len(), 2);
    assert_eq!(
        [&list[0].id, &list[1].id],
        [&narrow.id, &backfill.id],
        "newest first"
    );
}
