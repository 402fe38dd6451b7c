//! After-stage delivery: signatures, retries, failure and redelivery, ordering,
//! isolation between handlers, connection reuse, activation. A graceful stop
//! is in `stopping.rs`, a crash in `chaos.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::*;

/// The Standard Webhooks check, written from the specification, independent of
/// provisio's signer.
pub(crate) fn verify(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.body
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.header("webhook-signature")
        .split(' ')
        .any(|sig| sig == format!("v1,{expected}"))
}

#[tokio::test]
async fn every_request_carries_a_valid_standard_webhooks_signature() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "target": receiver.url(), "headers": { "X-Api-Key": "k-123" } }))
        .await;
    let (_, secret) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    let secret = secret["secret"].as_str().unwrap();
    let emitted = app
        .emit("clients.create", json!(7), json!({ "name": "ACME" }))
        .await;
    let r = &receiver.wait_for(1).await[0];
    assert!(
        verify(secret, r),
        "signature does not verify: {:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-api-key"),
        "k-123",
        "the handler's own headers are sent"
    );
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    let event = app
        .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "success"
        })
        .await;
    assert_eq!(
        r.header("webhook-id"),
        event["deliveries"][0]["id"],
        "webhook-id is the delivery id"
    );

    // A rotated secret signs the next delivery.
    let (_, rotated) = app
        .post(
            &format!("/api/v1/handlers/{}/secret/rotate", h["id"]),
            json!({}),
        )
        .await;
    app.emit("clients.create", json!(8), json!({})).await;
    let r = &receiver.wait_for(2).await[1];
    assert!(verify(rotated["secret"].as_str().unwrap(), r));
    assert!(!verify(secret, r));
}

#[tokio::test]
async fn failures_are_retried_until_success_and_every_attempt_is_logged() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::status(500),
        Reply::status(503),
        Reply::status(200),
    ])
    .await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    let got = receiver.wait_for(3).await;
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "webhook-id is stable across retries");

    let event_id = emitted["id"].as_str().unwrap();
    let event = app
        .wait_for_event(event_id, |e| e["deliveries"][0]["state"] == "success")
        .await;
    assert_eq!(event["deliveries"][0]["attempts"], 3);
    let rows = app
        .wait_executions(&format!("event_id={event_id}"), 3)
        .await;
    let summary: Vec<(u64, &str, u64)> = rows
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["status"].as_str().unwrap(),
                e["response_status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(3, "success", 200), (2, "fail", 503), (1, "fail", 500)],
        "newest first"
    );
    assert!(
        rows[1]["next_attempt_at"].is_string(),
        "a failed attempt says when the next one is"
    );
    assert!(rows[0]["next_attempt_at"].is_null());
    assert!(
        rows.iter()
            .all(|e| e["handler_id"] == h["id"] && e["stage"] == "after")
    );
}

#[tokio::test]
async fn a_delivery_fails_after_max_attempts_and_can_be_redelivered() {
    let app = TestApp::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = Receiver::with(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) {
            200
        } else {
            500
        })
    })
    .await;
    app.create_handler(
        json!({ "target": receiver.url(), "max_attempts": 2, "on_exhausted": "skip" }),
    )
    .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    let event_id = emitted["id"].as_str().unwrap();
    let event = app
        .wait_for_event(event_id, |e| e["deliveries"][0]["state"] == "failed")
        .await;
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["attempts"], 2);
    assert!(
        delivery["last_error"].as_str().unwrap().contains("500"),
        "{delivery}"
    );
    assert_eq!(receiver.received().len(), 2);

    healthy.store(true, Ordering::SeqCst);
    let (status, body) = app
        .post(
            &format!(
                "/api/v1/deliveries/{}/redeliver",
                delivery["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_for_event(event_id, |e| e["deliveries"][0]["state"] == "success")
        .await;
    let rows = app
        .wait_executions(&format!("event_id={event_id}"), 3)
        .await;
    assert_eq!(rows[0]["attempt"], 3);
    assert_eq!(rows[0]["status"], "success");

    let (status, body) = app
        .post("/api/v1/deliveries/nope/redeliver", json!({}))
        .await;
    assert_error(
        status,
        &body,
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn redelivering_a_pending_delivery_makes_it_due_now() {
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("1h").unwrap()
    })
    .await;
    let receiver = Receiver::sequence(vec![Reply::status(500), Reply::status(200)]).await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    let event = app
        .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["attempts"] == 1
        })
        .await;
    assert_eq!(event["deliveries"][0]["state"], "pending");
    assert!(event["deliveries"][0]["next_attempt_at"].is_string());
    let (status, body) = app
        .post(
            &format!(
                "/api/v1/deliveries/{}/redeliver",
                event["deliveries"][0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["retry"], "due_now", "{body}");
    assert_eq!(body["due_delivery_id"], event["deliveries"][0]["id"]);
    // The second attempt arrives now, not in an hour.
    receiver.wait_for(2).await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::status(429).with_header("retry-after", "2"),
        Reply::status(200),
    ])
    .await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    let got = receiver.wait_for(2).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, not the 2 s asked"
    );
}

#[tokio::test]
async fn deliveries_for_one_object_arrive_in_emit_order_even_when_the_first_fails() {
    let app = TestApp::spawn().await;
    let failures = Arc::new(std::sync::Mutex::new(0));
    let counter = failures.clone();
    // The first delivery of object 1 fails twice; everything else succeeds.
    let receiver = Receiver::with(move |r, _| {
        let body = r.json();
        let first_of_object_1 = body["event"]["object_id"] == 1 && body["data"]["seq"] == 0;
        let mut failed = counter.lock().unwrap();
        if first_of_object_1 && *failed < 2 {
            *failed += 1;
            return Reply::status(500);
        }
        Reply::status(200)
    })
    .await;
    app.create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;
    for seq in 0..5 {
        for object in [1, 2] {
            app.emit("clients.update", json!(object), json!({ "seq": seq }))
                .await;
        }
    }
    let got = receiver.wait_for(12).await;
    let order = |object: i64| -> Vec<i64> {
        got.iter()
            .map(Received::json)
            .filter(|b| b["event"]["object_id"] == object)
            .map(|b| b["data"]["seq"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        order(1),
        [0, 0, 0, 1, 2, 3, 4],
        "object 1 waits for its first delivery"
    );
    assert_eq!(order(2), [0, 1, 2, 3, 4]);
    // Object 2 was not held up by object 1's failures.
    let first_success_of_1 = got
        .iter()
        .position(|r| r.json()["event"]["object_id"] == 1 && r.json()["data"]["seq"] == 1)
        .unwrap();
    let first_of_2 = got
        .iter()
        .position(|r| r.json()["event"]["object_id"] == 2)
        .unwrap();
    assert!(first_of_2 < first_success_of_1);
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_another_handler() {
    let app = TestApp::spawn().await;
    let hanging = Receiver::with(|_, _| Reply::delayed(200, Duration::from_secs(30))).await;
    let fast = Receiver::ok().await;
    app.create_handler(json!({ "name": "slow", "priority": 1, "target": hanging.url(), "timeout_ms": 20000, "ordered": false })).await;
    app.create_handler(json!({ "name": "fast", "priority": 2, "target": fast.url() }))
        .await;
    let started = tokio::time::Instant::now();
    for object in 0..20 {
        app.emit("clients.create", json!(object), json!({})).await;
    }
    fast.wait_for(20).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the fast handler waited for the slow one"
    );
    assert!(!hanging.received().is_empty());
}

/// Twenty handlers to one gateway, five events in a row: a hundred calls open
/// together. Once they are answered, the next hundred go over the same
/// connections: the pool keeps as many idle connections per host as calls
/// can be in flight (it kept 64, and connected again for the rest, which
/// cost a fan-out a third of its throughput).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_handlers_to_one_host_reuse_their_connections() {
    let app = TestApp::spawn().await;
    let gateway = Receiver::with(|_, _| Reply::delayed(200, Duration::from_secs(1))).await;
    for i in 0..20 {
        app.create_handler(json!({ "name": format!("gateway {i}"), "target": gateway.url() }))
            .await;
    }
    // Five emits take milliseconds, even on a busy machine; each call is
    // answered after a second, so all of a round's calls are open together.
    for object in 0..5 {
        app.emit("clients.create", json!(object), json!({})).await;
    }
    gateway.wait_for(100).await;
    app.wait_executions("status=success", 100).await;
    let opened = gateway.connections();
    assert!(
        opened > 64,
        "the first round should have had more than 64 calls open at once, opened {opened} connections"
    );

    for object in 5..10 {
        app.emit("clients.create", json!(object), json!({})).await;
    }
    gateway.wait_for(200).await;
    app.wait_executions("status=success", 200).await;
    assert_eq!(
        gateway.connections(),
        opened,
        "the second round connected again instead of reusing idle connections"
    );
}

#[tokio::test]
async fn disabled_archived_and_deleted_handlers_are_never_called() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let witness = Receiver::ok().await;
    let disabled = app
        .create_handler(json!({ "target": receiver.url(), "status": "disabled" }))
        .await;
    app.create_handler(json!({ "target": receiver.url(), "status": "archived" }))
        .await;
    let live = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    app.create_handler(json!({ "target": witness.url(), "priority": 1000 }))
        .await;

    app.emit("clients.create", json!(1), json!({})).await;
    witness.wait_for(1).await;
    receiver.wait_for(1).await;

    // Disabled through the API: the next emit does not reach it.
    let (status, _) = app
        .patch(
            &format!("/api/v1/handlers/{}", live["id"]),
            json!({ "status": "disabled" }),
        )
        .await;
    assert_eq!(status, 200);
    app.emit("clients.create", json!(2), json!({})).await;
    // And re-enabled: the one after does.
    let (status, _) = app
        .patch(
            &format!("/api/v1/handlers/{}", disabled["id"]),
            json!({ "status": "enabled" }),
        )
        .await;
    assert_eq!(status, 200);
    app.emit("clients.create", json!(3), json!({})).await;
    witness.wait_for(3).await;
    let got = receiver.wait_for(2).await;
    let objects: Vec<Value> = got
        .iter()
        .map(|r| r.json()["event"]["object_id"].clone())
        .collect();
    assert_eq!(
        objects,
        [json!(1), json!(3)],
        "only the live handlers were called"
    );
    // The witness is the last handler by priority and got event 3, so the
    // receiver's handlers were dispatched before it.
    let (status, _) = app
        .delete(&format!("/api/v1/handlers/{}", disabled["id"]))
        .await;
    assert_eq!(status, 204);
    app.emit("clients.create", json!(4), json!({})).await;
    witness.wait_for(4).await;
    app.wait_executions("object_id=4", 1).await;
    assert_eq!(receiver.received().len(), 2, "a deleted handler was called");
}

#[tokio::test]
async fn a_deleted_handlers_executions_remain_with_its_name() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "name": "Gone soon", "target": receiver.url() }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    app.wait_executions(&format!("handler_id={}", h["id"]), 1)
        .await;
    app.delete(&format!("/api/v1/handlers/{}", h["id"])).await;
    let rows = app.executions(&format!("handler_id={}", h["id"])).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["handler_name"], "Gone soon");
}

#[tokio::test]
async fn denied_networks_are_refused_at_connect_time() {
    let app =
        TestApp::spawn_with(|s| s.deny_networks = vec!["127.0.0.2/32".parse().unwrap()]).await;
    app.create_handler(
        json!({ "target": "http://127.0.0.2:9/hook", "max_attempts": 1, "on_exhausted": "skip" }),
    )
    .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    let error = app.wait_first_delivery_failed(&emitted).await;
    assert!(error.contains("denied"), "{error}");
}
