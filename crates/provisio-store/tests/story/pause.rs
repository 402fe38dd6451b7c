//! Pausing a handler: its settings and deliveries stay as they are, its
//! pending deliveries read as held, the automatic pause never undoes the
//! operator's, and one caller at a time takes a probe. On both backends.

use std::time::Duration;

use provisio_core::event::DeliveryState;
use provisio_core::handler::{AutoPause, OPERATOR_PAUSE};
use provisio_store::*;

use crate::support::*;

#[tokio::test]
async fn sqlite_pauses_and_resumes_handlers() {
    let (_dir, store) = sqlite().await;
    pausing_holds_and_resuming_releases(&store).await;
}

#[tokio::test]
async fn postgres_pauses_and_resumes_handlers() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    pausing_holds_and_resuming_releases(&store).await;
    store.close().await;
}

async fn pausing_holds_and_resuming_releases(store: &dyn Store) {
    let mut with_breaker = spec("breaker", true);
    with_breaker.auto_pause = Some(AutoPause {
        failures: 5,
        after: Duration::from_secs(60),
        probe_every: Duration::from_secs(30),
    });
    let h = store.insert_handler(&with_breaker).await.unwrap();
    assert_eq!(
        (h.pause.clone(), h.spec.auto_pause),
        (None, with_breaker.auto_pause)
    );
    let other = store.insert_handler(&spec("other", true)).await.unwrap().id;
    // Two events for one object: one pending, one waiting, for each handler.
    let batch: Vec<NewEvent> = (20_000..20_002)
        .map(|i| {
            let mut e = new_event(i, 1_000, &[(h.id, true), (other, true)], None);
            e.event.object_id = 77u64.into();
            e
        })
        .collect();
    insert_events(store, &batch).await;

    let paused = store
        .change_pause(h.id, PauseChange::Operator { at_ms: 5_000 })
        .await
        .unwrap()
        .unwrap();
    let pause = paused.pause.clone().unwrap();
    assert_eq!(
        (pause.reason.as_str(), pause.probe_at_ms),
        (OPERATOR_PAUSE, None)
    );
    assert_eq!(paused.spec, h.spec, "a pause is not a change of settings");
    assert_eq!(
        states(store, "evt-20000").await,
        [DeliveryState::Held, DeliveryState::Pending]
    );
    assert_eq!(
        states(store, "evt-20001").await,
        [DeliveryState::Waiting, DeliveryState::Waiting]
    );
    // The operator views' figures: the paused handler's pending delivery is
    // there with the pause beside it (shown as held), a handler without
    // deliveries has none.
    let figures = store.handler_figures(0, 60_000).await.unwrap();
    let open = |id: i64| {
        figures
            .get(&id)
            .map(|f| (f.open.pending, f.open.waiting, f.open.blocked, f.paused))
    };
    assert_eq!(open(h.id), Some((1, 1, 0, true)));
    assert_eq!(open(other), Some((1, 1, 0, false)));
    assert_eq!(open(999), None);
    // The paused handler's due delivery does not count as due work.
    assert_eq!(store.next_due_ms().await.unwrap(), Some(1_000));
    let spec_change = store
        .update_handler(h.id, &spec("renamed", true))
        .await
        .unwrap();
    assert!(
        spec_change.pause.is_some(),
        "changing settings keeps the pause"
    );
    store.update_handler(h.id, &with_breaker).await.unwrap();

    // The automatic pause does not take over the operator's, and a probe's
    // success does not resume it.
    let tripped = PauseChange::Automatic {
        reason: "5 consecutive failures",
        at_ms: 6_000,
        probe_at_ms: 36_000,
    };
    assert!(store.change_pause(h.id, tripped).await.unwrap().is_none());
    assert!(
        store
            .change_pause(h.id, PauseChange::SelfResume)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store.take_probe(h.id, 100_000, 130_000).await.unwrap(),
        "no probes under an operator's pause"
    );
    let resumed = store
        .change_pause(h.id, PauseChange::Resume)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.pause, None);
    assert_eq!(
        states(store, "evt-20000").await,
        [DeliveryState::Pending, DeliveryState::Pending]
    );

    // Running, the automatic pause trips; probes are taken once each.
    let auto = store
        .change_pause(h.id, tripped)
        .await
        .unwrap()
        .unwrap()
        .pause
        .unwrap();
    assert!(auto.is_automatic());
    assert_eq!(
        (auto.reason.as_str(), auto.probe_at_ms),
        ("5 consecutive failures", Some(36_000))
    );
    assert!(
        !store.take_probe(h.id, 35_999, 66_000).await.unwrap(),
        "not due yet"
    );
    assert!(store.take_probe(h.id, 36_000, 66_000).await.unwrap());
    assert!(
        !store.take_probe(h.id, 36_000, 66_000).await.unwrap(),
        "taken once"
    );
    let again = store.get_handler(h.id).await.unwrap().unwrap();
    assert_eq!(again.pause.unwrap().probe_at_ms, Some(66_000));
    // The operator may take an automatic pause over; then only they resume.
    let taken_over = PauseChange::Operator { at_ms: 40_000 };
    let p = store
        .change_pause(h.id, taken_over)
        .await
        .unwrap()
        .unwrap()
        .pause
        .unwrap();
    assert_eq!((p.reason.as_str(), p.probe_at_ms), (OPERATOR_PAUSE, None));
    assert_eq!(
        p.at,
        provisio_core::timefmt::from_millis(6_000),
        "paused since the trip"
    );
    store.change_pause(h.id, PauseChange::Resume).await.unwrap();
    store.change_pause(h.id, tripped).await.unwrap().unwrap();
    let back = store
        .change_pause(h.id, PauseChange::SelfResume)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.pause, None);
    assert!(
        store
            .change_pause(404, PauseChange::Resume)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn sqlite_spares_the_round_of_a_slowed_attempt() {
    let (_dir, store) = sqlite().await;
    a_slowed_attempt_spares_its_round(&store).await;
}

#[tokio::test]
async fn postgres_spares_the_round_of_a_slowed_attempt() {
    let Some((_db, store)) = postgres().await else {
        return;
    };
    a_slowed_attempt_spares_its_round(&store).await;
    store.close().await;
}

/// An attempt the receiver asked to slow down keeps its number in the log
/// but leaves the round as it was.
async fn a_slowed_attempt_spares_its_round(store: &dyn Store) {
    let h = store
        .insert_handler(&spec("slowed", false))
        .await
        .unwrap()
        .id;
    insert_events(store, &[new_event(30_000, 1_000, &[(h, false)], None)]).await;
    let claimed = claim(store, 2_000, &[]).await;
    assert_eq!((claimed.len(), claimed[0].round_start), (1, 0));
    let mut slowed = finished(&claimed[0], DeliveryNext::RetryAt { at_ms: 5_000 }, 3_000);
    slowed.spare_round = true;
    store.record(&[slowed], &[]).await.unwrap();
    let again = claim(store, 5_000, &[]).await;
    assert_eq!(
        (again[0].attempts, again[0].round_start),
        (1, 1),
        "numbered, not counted"
    );
}
