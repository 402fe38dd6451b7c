//! Pace per handler: a handler's own cap on calls in flight holds at its
//! receiver, and bad values are refused.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// The most requests that were in flight at once, each taken to last
/// `reply` from its arrival (a lower bound of what provisio held open).
fn most_at_once(received: &[Received], reply: Duration) -> usize {
    received
        .iter()
        .map(|r| {
            received
                .iter()
                .filter(|o| o.at <= r.at && r.at < o.at + reply)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_capped_at_two_calls_never_has_more_in_flight() {
    let app = TestApp::spawn().await;
    let reply = Duration::from_millis(300);
    let receiver = Receiver::with(move |_, _| Reply::delayed(200, reply)).await;
    let handler = app
        .create_handler(json!({
            "events_id": "clients.*", "target": receiver.url(), "ordered": false,
            "max_in_flight": 2,
        }))
        .await;
    assert_eq!(handler["max_in_flight"], json!(2));
    for object in 0..12 {
        app.emit("clients.update", json!(object), json!({})).await;
    }
    let received = receiver.wait_for(12).await;
    assert_eq!(
        most_at_once(&received, reply),
        2,
        "the cap is used and held"
    );

    let (status, body) = app
        .patch(
            &format!("/api/v1/handlers/{}", handler["id"]),
            json!({ "max_in_flight": 0 }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(fields.get("max_in_flight").is_some(), "{body}");
    let (_, same) = app
        .get(&format!("/api/v1/handlers/{}", handler["id"]))
        .await;
    assert_eq!(
        same["max_in_flight"],
        json!(2),
        "a refused change changes nothing"
    );
    let (_, uncapped) = app
        .patch(
            &format!("/api/v1/handlers/{}", handler["id"]),
            json!({ "max_in_flight": null }),
        )
        .await;
    assert_eq!(uncapped["max_in_flight"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_slows_the_handler_without_using_up_attempts() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::status(429).with_header("retry-after", "2"),
        Reply::status(200),
    ])
    .await;
    // One attempt only: had the 429 used it, the delivery would have failed.
    let handler = app
        .create_handler(json!({ "target": receiver.url(), "max_attempts": 1, "ordered": false }))
        .await;
    let first = app.emit("clients.create", json!(1), json!({})).await;
    // The 429 is logged once provisio has read it (the receiver having sent
    // it is not enough: an emit a moment later may be claimed before the
    // answer is read). From then on the handler waits as a whole: a new
    // event waits behind the slow-down.
    app.wait_executions(&format!("handler_id={}", handler["id"]), 1)
        .await;
    let second = app.emit("clients.create", json!(2), json!({})).await;
    for event in [&first, &second] {
        app.wait_for_event(event["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == json!("success")
        })
        .await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3, "one 429, then each delivered once");
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "the handler was called again after {waited:?}, before the 2 s it was asked to wait"
    );
    let log = app
        .executions(&format!("handler_id={}", handler["id"]))
        .await;
    let mut attempts: Vec<(u64, String)> = log
        .iter()
        .filter(|e| e["event_id"] == first["id"])
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [(1, "fail".to_owned()), (2, "success".to_owned())],
        "the log keeps counting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_20_per_second_spreads_100_deliveries_over_about_5_s() {
    let app = Arc::new(TestApp::spawn().await);
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({
            "events_id": "clients.*", "target": receiver.url(), "ordered": false,
            "rate_limit": { "per_second": 20 },
        }))
        .await;
    assert_eq!(handler["rate_limit"], json!({ "per_second": 20 }));
    let mut emits = tokio::task::JoinSet::new();
    for object in 0..100 {
        let app = app.clone();
        emits.spawn(async move { app.emit("clients.update", json!(object), json!({})).await });
    }
    while let Some(done) = emits.join_next().await {
        done.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.received().len() < 100 {
        assert!(tokio::time::Instant::now() < deadline, "not all arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = receiver.received();
    let spread = received[99].at - received[0].at;
    // 100 calls at 20/s: about 4.9 s from the first to the last; only the
    // lower bound is asserted (a busy machine only makes it slower).
    assert!(
        spread >= Duration::from_millis(4500),
        "100 calls in {spread:?}"
    );

    let (status, body) = app
        .patch(
            &format!("/api/v1/handlers/{}", handler["id"]),
            json!({ "rate_limit": { "per_second": 0 } }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(fields.get("rate_limit.per_second").is_some(), "{body}");
}

/// After a quiet spell the first call of a pair leaves the handler room for
/// one more that is not due yet; the second event arrives while the pace
/// holds the handler back, after the first call's attempt may have finished.
/// Nothing else happens, so only the pace itself can send it (it once waited
/// for the next emit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_emitted_while_the_pace_holds_its_handler_is_sent_once_it_may() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({
        "events_id": "clients.*", "target": receiver.url(), "ordered": false,
        "rate_limit": { "per_second": 20 },
    }))
    .await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.emit("clients.update", json!(round), json!({})).await;
        app.emit("clients.update", json!(round), json!({})).await;
        receiver
            .wait_for_within(2 * (round + 1), Duration::from_secs(5))
            .await;
    }
}
