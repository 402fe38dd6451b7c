//! Handler health and queue on the API (issue 14): counted in deliveries,
//! not attempts; the state rule (ok, failing, idle); the queue by state with
//! the age of its oldest delivery. Each test drives a real server and real
//! loopback receivers, and reads `GET /api/v1/handlers/{id}` (and the list).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn health_of(app: &TestApp, id: &Value) -> Value {
    let (status, h) = app.get(&format!("/api/v1/handlers/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    h
}

/// Reads the handler until `check` holds for it.
async fn wait_handler(app: &TestApp, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
    app.wait_get(&format!("/api/v1/handlers/{id}"), PATIENCE, check)
        .await
}

#[tokio::test]
async fn a_new_handler_is_idle_with_an_empty_queue() {
    let app = TestApp::spawn().await;
    let h = app
        .create_handler(json!({ "target": "http://127.0.0.1:9/" }))
        .await;
    assert_eq!(
        h["health"],
        json!({ "state": "idle", "last_success_at": null, "last_failure_at": null,
                "succeeded_24h": 0, "forbidden_24h": 0, "failed_24h": 0 })
    );
    let read = health_of(&app, &h["id"]).await;
    assert_eq!(read["health"], h["health"]);
    assert_eq!(
        read["queue"],
        json!({ "pending": 0, "waiting": 0, "held": 0, "blocked": 0, "oldest_at": null })
    );
}

#[tokio::test]
async fn a_delivery_that_failed_three_times_then_succeeded_counts_once_as_succeeded() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
        Reply::status(200),
    ])
    .await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    receiver.wait_for(4).await;
    let read = wait_handler(&app, &h["id"], |h| h["health"]["succeeded_24h"] == 1).await;
    let health = &read["health"];
    assert_eq!(health["failed_24h"], 0, "{read}");
    assert_eq!(health["state"], "ok", "{read}");
    // The failed attempts are failures too: the last one came before the success.
    let (failure, success) = (
        health["last_failure_at"].as_str().expect("attempts failed"),
        health["last_success_at"].as_str().expect("it succeeded"),
    );
    assert!(failure <= success, "{read}");
    assert_eq!(read["queue"]["oldest_at"], Value::Null, "{read}");
    // Four executions, one delivery.
    assert_eq!(
        app.executions(&format!("handler_id={}", h["id"]))
            .await
            .len(),
        4
    );
}

#[tokio::test]
async fn a_delivery_that_used_up_its_attempts_counts_once_as_failed() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::status(500)).await;
    // Unordered, so the exhausted delivery fails rather than blocking a line.
    let h = app
        .create_handler(json!({ "target": receiver.url(), "max_attempts": 3, "ordered": false }))
        .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    app.wait_first_delivery_failed(&emitted).await;
    let read = wait_handler(&app, &h["id"], |h| h["health"]["failed_24h"] == 1).await;
    assert_eq!(read["health"]["succeeded_24h"], 0, "{read}");
    assert_eq!(read["health"]["state"], "failing", "{read}");
    assert_eq!(read["health"]["last_success_at"], Value::Null, "{read}");
    assert!(read["health"]["last_failure_at"].is_string(), "{read}");
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn an_ordered_handler_with_a_failing_head_shows_one_pending_and_the_rest_waiting() {
    // Retries an hour apart keep the head pending after its first attempt.
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("1h").unwrap();
    })
    .await;
    let receiver = Receiver::with(|_, _| Reply::status(500)).await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let before = time::OffsetDateTime::now_utc();
    for step in 0..4 {
        app.emit("clients.create", json!(7), json!({ "step": step }))
            .await;
    }
    receiver.wait_for(1).await;
    let read = wait_handler(&app, &h["id"], |h| {
        h["queue"]["pending"] == 1
            && h["queue"]["waiting"] == 3
            && h["health"]["state"] == "failing"
    })
    .await;
    let oldest = read["queue"]["oldest_at"]
        .as_str()
        .expect("an oldest delivery");
    let oldest =
        time::OffsetDateTime::parse(oldest, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(oldest >= before - time::Duration::seconds(1), "{read}");
    assert!(oldest <= time::OffsetDateTime::now_utc(), "{read}");
    assert_eq!(
        (&read["queue"]["held"], &read["queue"]["blocked"]),
        (&json!(0), &json!(0))
    );
    // The list carries the same figures.
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["items"][0]["queue"], read["queue"], "{list}");
}

#[tokio::test]
async fn a_paused_handler_holds_its_pending_deliveries() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let id = &h["id"];
    app.handler_action(id, "pause").await;
    app.emit("clients.create", json!(1), json!({})).await;
    app.emit("clients.create", json!(1), json!({})).await;
    app.emit("clients.create", json!(2), json!({})).await;
    // Read at once: a cheap snapshot is never older than the read.
    let read = health_of(&app, id).await;
    assert_eq!(
        (
            &read["queue"]["pending"],
            &read["queue"]["held"],
            &read["queue"]["waiting"]
        ),
        (&json!(0), &json!(2), &json!(1)),
        "{read}"
    );
    assert_eq!(
        read["health"]["state"], "ok",
        "work is queued: not idle; nothing failed: {read}"
    );
    app.handler_action(id, "resume").await;
    receiver.wait_for(3).await;
    let done = wait_handler(&app, id, |h| h["health"]["succeeded_24h"] == 3).await;
    assert_eq!(done["queue"]["held"], 0, "{done}");
}

#[tokio::test]
async fn a_blocked_line_shows_blocked_and_counts_the_exhausted_delivery_as_failed() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::status(500)).await;
    let h = app
        .create_handler(
            json!({ "events_id": "clients.*", "target": receiver.url(), "max_attempts": 2 }),
        )
        .await;
    app.emit("clients.update", json!(5), json!({ "step": 1 }))
        .await;
    app.emit("clients.update", json!(5), json!({ "step": 2 }))
        .await;
    let read = wait_handler(&app, &h["id"], |h| h["queue"]["blocked"] == 1).await;
    assert_eq!(read["queue"]["waiting"], 1, "{read}");
    assert_eq!(read["queue"]["pending"], 0, "{read}");
    assert_eq!(read["health"]["failed_24h"], 1, "{read}");
    assert_eq!(read["health"]["state"], "failing", "{read}");
}

#[tokio::test]
async fn the_state_goes_from_ok_to_failing_and_back() {
    let app = TestApp::spawn().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let switch = healthy.clone();
    let receiver = Receiver::with(move |_, _| {
        Reply::status(if switch.load(Ordering::SeqCst) {
            200
        } else {
            500
        })
    })
    .await;
    let h = app
        .create_handler(json!({ "target": receiver.url(), "ordered": false, "max_attempts": 1 }))
        .await;
    let id = &h["id"];

    app.emit("clients.create", json!(1), json!({})).await;
    let ok = wait_handler(&app, id, |h| h["health"]["succeeded_24h"] == 1).await;
    assert_eq!(ok["health"]["state"], "ok", "{ok}");

    healthy.store(false, Ordering::SeqCst);
    app.emit("clients.create", json!(2), json!({})).await;
    let failing = wait_handler(&app, id, |h| h["health"]["failed_24h"] == 1).await;
    assert_eq!(failing["health"]["state"], "failing", "{failing}");
    assert!(
        failing["health"]["last_failure_at"].as_str()
            > failing["health"]["last_success_at"].as_str(),
        "{failing}"
    );

    healthy.store(true, Ordering::SeqCst);
    app.emit("clients.create", json!(3), json!({})).await;
    let recovered = wait_handler(&app, id, |h| h["health"]["succeeded_24h"] == 2).await;
    let log = app.executions("").await;
    assert_eq!(recovered["health"]["state"], "ok", "{recovered} {log:#?}");
    assert_eq!(
        recovered["health"]["failed_24h"], 1,
        "the failure still counts: {recovered}"
    );
}

#[tokio::test]
async fn before_stage_handlers_are_counted_in_calls() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::status(200),
        Reply::with_body(200, r#"{"allow": false, "reason": "account locked"}"#),
        Reply::status(500),
    ])
    .await;
    let h = app
        .create_handler(
            json!({ "stage": "before", "target": receiver.url(), "on_failure": "allow" }),
        )
        .await;
    let mut answers = Vec::new();
    for object in [1, 2, 3] {
        let (_, body) = app
            .post(
                "/api/v1/events/before",
                json!({ "events_id": "clients.create", "object_id": object, "data": {} }),
            )
            .await;
        answers.push(body["allowed"].clone());
    }
    assert_eq!(
        answers,
        [json!(true), json!(false), json!(true)],
        "allowed, forbidden, failed and allowed"
    );
    // The refusal is a call that worked, counted apart, never a plain success.
    let read = wait_handler(&app, &h["id"], |h| {
        h["health"]["succeeded_24h"] == 2 && h["health"]["failed_24h"] == 1
    })
    .await;
    assert_eq!(read["health"]["forbidden_24h"], 1, "{read}");
    assert_eq!(read["health"]["state"], "failing", "{read}");
    assert_eq!(read["queue"]["pending"], 0, "{read}");
}
