//! Events, ordering and idempotency; claims and leases; recording and releasing; redelivering. Returns the instant the story has reached.

use provisio_core::event::{DeliveryState, ExecutionStatus, ObjectId, Verdict};
use provisio_core::handler::Stage;
use provisio_core::timefmt::from_millis;
use provisio_store::*;

use crate::support::*;

pub async fn story(store: &dyn Store, handlers: &Handlers) -> i64 {
    // --- Events, ordering, idempotency ----------------------------------
    let (h, u) = (handlers.ordered, handlers.unordered);
    // Start-up releases leases to the wall clock's now; the story's instants
    // are placed around it: t0 well before, t1 well after.
    let wall = provisio_core::timefmt::to_millis(time::OffsetDateTime::now_utc());
    let t0 = wall - 10_000_000;
    let t1 = wall + 10_000_000;
    let first_batch = vec![
        new_event(1, t0, &[(h, true), (u, false)], Some("key-1")),
        new_event(2, t0, &[(h, true), (u, false)], None),
        // The same key in one batch, same body: answered from the first.
        new_event(1, t0, &[(h, true)], Some("key-1")),
        // The same key with another body.
        new_event(3, t0, &[(h, true)], Some("key-1")),
        new_event(10_001, t0, &[(h, true)], None),
    ];
    let outcomes = insert_events(store, &first_batch).await;
    assert_eq!(
        outcomes,
        vec![
            EmitOutcome::Stored,
            EmitOutcome::Stored,
            EmitOutcome::Replayed {
                event_id: "evt-00001".to_owned(),
                deliveries: 2
            },
            EmitOutcome::KeyReused,
            EmitOutcome::Stored,
        ]
    );
    // In a later batch, the key is answered from storage.
    let later = insert_events(
        store,
        &[
            new_event(1, t0 + 1, &[(h, true), (u, false)], Some("key-1")),
            new_event(4, t0 + 1, &[(h, true)], Some("key-1")),
            new_event(5, t0 + 1, &[(h, true)], None),
        ],
    )
    .await;
    assert_eq!(
        later,
        vec![
            EmitOutcome::Replayed {
                event_id: "evt-00001".to_owned(),
                deliveries: 2
            },
            EmitOutcome::KeyReused,
            EmitOutcome::Stored,
        ]
    );
    // Past the window, the key is new again. This event passed neither
    // handler's filter: it is stored with why, and no delivery.
    let mut six = new_event(6, t0 + IDEMPOTENCY_WINDOW_MS + 10, &[], Some("key-1"));
    six.filtered_out = vec![
        FilteredOut {
            handler_id: h,
            error: None,
        },
        FilteredOut {
            handler_id: u,
            error: Some("No such key: plan".into()),
        },
    ];
    let expired = insert_events(store, &[six.clone()]).await;
    assert_eq!(expired, vec![EmitOutcome::Stored]);
    assert_eq!(
        store.filtered_out("evt-00006").await.unwrap(),
        six.filtered_out
    );
    assert!(store.filtered_out("evt-00001").await.unwrap().is_empty());
    assert!(store.filtered_out("nope").await.unwrap().is_empty());

    use DeliveryState::*;
    assert_eq!(states(store, "evt-00001").await, vec![Pending, Pending]);
    assert_eq!(
        states(store, "evt-00002").await,
        vec![Waiting, Pending],
        "ordered: behind event 1 in the same batch; unordered: due at once"
    );
    assert_eq!(
        states(store, "evt-00005").await,
        vec![Waiting],
        "behind stored unfinished deliveries"
    );
    assert_eq!(
        states(store, "evt-10001").await,
        vec![Pending],
        "another object"
    );
    let (event, _) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(event.object_id, ObjectId::from(7u64));
    assert_eq!(event.data, "{\"n\":1}");
    assert!(store.get_event("nope").await.unwrap().is_none());

    // --- Claims and leases ----------------------------------------------
    assert_eq!(store.next_due_ms().await.unwrap(), Some(t0));
    let early = claim_and_due(store, t0 - 1, &[]).await;
    assert!(early.deliveries.is_empty(), "nothing due yet");
    assert_eq!(
        early.next_due_ms,
        Some(t0),
        "a claim reads the next due time"
    );
    let skipped = claim(store, t0, &[h]).await;
    assert_eq!(
        skipped.iter().map(|c| c.handler_id).collect::<Vec<_>>(),
        vec![u, u],
        "a saturated handler is skipped"
    );
    let claimed = claim(store, t0, &[]).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt-00001", "evt-10001"],
        "leased deliveries are not due; oldest first"
    );
    let after = claim_and_due(store, t0 + 1, &[]).await;
    assert!(after.deliveries.is_empty());
    assert_eq!(
        after.next_due_ms,
        Some(t0 + 30_000),
        "the earliest lease end"
    );
    assert_eq!(store.next_due_ms().await.unwrap(), Some(t0 + 30_000));
    let (_, leased) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(leased[0].next_attempt_at, None, "a lease is not a schedule");

    // Settled at a single node's start-up: every leased delivery is due
    // again at once, and its interrupted attempt is logged as unknown
    // without using up an attempt of the round.
    assert_eq!(store.settle_interrupted(t1, i64::MAX).await.unwrap(), 4);
    let (unknown, _) = store
        .list_executions(
            &ExecutionFilter {
                status: Some(ExecutionStatus::Unknown),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(unknown.len(), 4);
    assert!(unknown.iter().all(|e| {
        e.attempt == 1
            && e.error
                .as_deref()
                .is_some_and(|m| m.starts_with("outcome unknown"))
    }));
    let again = claim(store, t1 + 2, &[]).await;
    assert_eq!(again.len(), 4);
    let by_event = |id: &str, handler: i64| {
        again
            .iter()
            .find(|c| c.event.id == id && c.handler_id == handler)
            .cloned()
            .unwrap()
    };

    // --- Record and release ---------------------------------------------
    let d1 = by_event("evt-00001", h);
    let retry = finished(&d1, DeliveryNext::RetryAt { at_ms: t1 + 500 }, t1 + 10);
    assert_eq!(store.record(&[retry], &[]).await.unwrap().released, 0);
    assert_eq!(states(store, "evt-00002").await, vec![Waiting, Pending]);
    let (_, after_retry) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(
        after_retry[0].attempts, 2,
        "the interrupted attempt counts in the numbering"
    );
    assert_eq!(after_retry[0].next_attempt_at, Some(from_millis(t1 + 500)));
    assert_eq!(after_retry[0].last_error.as_deref(), Some("HTTP 500"));

    let d1 = claim(store, t1 + 500, &[])
        .await
        .into_iter()
        .find(|c| c.id == d1.id)
        .unwrap();
    assert_eq!(d1.attempts, 2);
    let before = ExecutionRecord {
        stage: Stage::Before,
        delivery_id: None,
        event_id: None,
        data_after: Some("{\"n\":0}".to_owned()),
        test: true,
        verdict: Some(Verdict::Changed),
        response_body: Some("{\"data\": {\"n\": 0}, \"note\": \"Account LOCKED\"}".to_owned()),
        request: RequestRecord {
            target: "http://alice:s3cret@127.0.0.1:9/hook".to_owned(),
            ..finished(&d1, DeliveryNext::Succeeded, t1 + 600)
                .execution
                .unwrap()
                .request
        },
        ..finished(&d1, DeliveryNext::Succeeded, t1 + 600)
            .execution
            .unwrap()
    };
    let released = store
        .record(
            &[
                finished(&d1, DeliveryNext::Succeeded, t1 + 600),
                finished(&by_event("evt-10001", h), DeliveryNext::Failed, t1 + 600),
                finished(&by_event("evt-00001", u), DeliveryNext::Succeeded, t1 + 600),
            ],
            &[before],
        )
        .await
        .unwrap();
    assert_eq!(released.released, 1, "event 2 takes event 1's turn");
    assert_eq!(states(store, "evt-00001").await, vec![Success, Success]);
    assert_eq!(states(store, "evt-00002").await, vec![Pending, Pending]);
    assert_eq!(states(store, "evt-00005").await, vec![Waiting]);
    assert_eq!(states(store, "evt-10001").await, vec![Failed]);
    let (_, done) = store.get_event("evt-00001").await.unwrap().unwrap();
    assert_eq!(done[0].attempts, 3);
    assert_eq!(done[0].finished_at, Some(from_millis(t1 + 600)));

    // --- Redeliver ("retry now") ----------------------------------------
    // A pending delivery is due now instead of at its retry time.
    let (hurried, done) = store.redeliver("dlv-00002-0", t1 + 650).await.unwrap();
    assert_eq!(done, Redelivery::DueNow);
    assert_eq!(
        (hurried.state, hurried.next_attempt_at),
        (Pending, Some(from_millis(t1 + 650)))
    );
    // A waiting one never overtakes: the head of its line is made due.
    let (waiting, done) = store.redeliver("dlv-00005-0", t1 + 660).await.unwrap();
    assert_eq!(done, Redelivery::HeadDueNow("dlv-00002-0".to_owned()));
    assert_eq!(waiting.state, Waiting);
    assert_eq!(
        store
            .get_delivery("dlv-00002-0")
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at,
        Some(from_millis(t1 + 660))
    );
    assert!(matches!(
        store.redeliver("nope", t1 + 700).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.get_delivery("nope").await.unwrap().is_none());
    let (behind, done) = store.redeliver("dlv-00001-0", t1 + 700).await.unwrap();
    assert_eq!(done, Redelivery::NewRound);
    assert_eq!(
        behind.state, Waiting,
        "redelivered behind the object's unfinished deliveries"
    );
    let (alone, _) = store.redeliver("dlv-10001-0", t1 + 700).await.unwrap();
    assert_eq!(alone.state, Pending);
    assert_eq!(alone.next_attempt_at, Some(from_millis(t1 + 700)));
    let claimed = claim(store, t1 + 700, &[]).await;
    let round = claimed.iter().find(|c| c.id == "dlv-10001-0").unwrap();
    assert_eq!((round.attempts, round.round_start), (2, 2));
    // While an attempt holds its lease there is nothing to hurry, for it or
    // for the deliveries waiting behind it.
    assert!(claimed.iter().any(|c| c.id == "dlv-00002-0"));
    let (_, done) = store.redeliver("dlv-00002-0", t1 + 710).await.unwrap();
    assert_eq!(done, Redelivery::InFlight("dlv-00002-0".to_owned()));
    let (_, done) = store.redeliver("dlv-00005-0", t1 + 710).await.unwrap();
    assert_eq!(done, Redelivery::InFlight("dlv-00002-0".to_owned()));

    t1
}
