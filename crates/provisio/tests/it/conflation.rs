//! Conflation: a conflating handler's backlog cut to one call per object
//! (the one in flight and the newest), after an outage and after a pause,
//! against real loopback receivers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::head_of_line::{answered, delivery_id, emit_step, first_delivery, wait_state};
use crate::helpers::*;

/// The conflation run: `objects` objects, `per_object` updates each, sent to
/// a receiver that answers 503 until the whole backlog is queued.
const OBJECTS: i64 = 20;
const PER_OBJECT: i64 = 10;

#[tokio::test]
async fn a_conflating_handler_sends_each_object_its_first_and_newest_update() {
    // Slow enough retries that the heads keep retrying (not exhausting)
    // while the backlog is emitted on a busy machine.
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("100ms,250ms").unwrap();
    })
    .await;
    let up = Arc::new(AtomicBool::new(false));
    let receiver = Receiver::down_until(up.clone()).await;
    app.create_handler(json!({ "events_id": "clients.*", "target": receiver.url(),
                               "max_attempts": 50, "conflate": true }))
        .await;
    let mut events: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for step in 0..PER_OBJECT {
        for object in 0..OBJECTS {
            let id = emit_step(&app, object, step).await;
            events.entry(object).or_default().push(id);
        }
    }
    up.store(true, Ordering::SeqCst);

    let mut superseded = 0;
    for (object, ids) in &events {
        let newest = wait_state(&app, ids.last().unwrap(), "success").await;
        let newest_id = delivery_id(&newest);
        assert_eq!(
            first_delivery(&wait_state(&app, &ids[0], "success").await)["attempts"]
                .as_u64()
                .map(|n| n >= 1),
            Some(true)
        );
        for id in &ids[1..ids.len() - 1] {
            let (_, event) = app.get(&format!("/api/v1/events/{id}")).await;
            let d = first_delivery(&event);
            assert_eq!(d["state"], "superseded", "object {object}: {event}");
            assert_eq!(d["superseded_by"], newest_id.as_str());
            assert_eq!(d["attempts"], 0, "never sent");
            superseded += 1;
        }
    }
    assert_eq!(superseded, OBJECTS * (PER_OBJECT - 2));

    // Each object got its first update (the one in flight) and its newest,
    // in that order, and nothing else.
    let got = answered(&receiver, 200);
    assert_eq!(got.len() as i64, OBJECTS * 2, "{got:?}");
    for object in 0..OBJECTS {
        let steps: Vec<i64> = got
            .iter()
            .filter(|(o, _)| *o == object)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(steps, [0, PER_OBJECT - 1], "object {object}");
    }
    let metrics = crate::telemetry::scrape(&app).await;
    let counted = crate::telemetry::sample(&metrics, "provisio_deliveries_superseded_total")
        .unwrap_or_default();
    assert!(counted >= superseded as f64, "{counted}");
}

/// A maintenance window on a conflating handler: the paused backlog of ten
/// updates per object goes out as one call per object, the newest, when the
/// handler resumes; the other nine are superseded by it.
#[tokio::test]
async fn a_paused_conflating_handler_sends_one_call_per_object_on_resume() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(
            json!({ "events_id": "clients.*", "target": receiver.url(), "conflate": true }),
        )
        .await;
    let id = h["id"].as_i64().unwrap();
    app.handler_action(id, "pause").await;
    let mut events: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for step in 0..10 {
        for object in 0..20 {
            events
                .entry(object)
                .or_default()
                .push(emit_step(&app, object, step).await);
        }
    }
    let (_, handler) = app.get(&format!("/api/v1/handlers/{id}")).await;
    assert_eq!(
        handler["queue"]["held"], 20,
        "each object's head is held: {handler}"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing is sent while paused"
    );

    app.handler_action(id, "resume").await;
    let got = receiver.wait_for(20).await;
    assert!(
        got.iter().all(|r| r.json()["data"]["step"] == 9),
        "the newest of each"
    );
    for ids in events.values() {
        let newest = wait_state(&app, ids.last().unwrap(), "success").await;
        let newest_id = first_delivery(&newest)["id"].clone();
        for older in &ids[..9] {
            let event = wait_state(&app, older, "superseded").await;
            assert_eq!(first_delivery(&event)["superseded_by"], newest_id);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        20,
        "one call per object, 180 superseded"
    );
}
