//! The before-stage chain over HTTP handlers.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A receiver that adds `key: value` to the data it is given.
async fn adder(key: &'static str, value: Value) -> Receiver {
    Receiver::with(move |r, _| {
        let mut data = r.json()["data"].clone();
        data[key] = value.clone();
        Reply::with_body(200, json!({ "data": data }).to_string())
    })
    .await
}

async fn run(app: &TestApp, events_id: &str, data: Value) -> Value {
    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": events_id, "object_id": 12, "data": data }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn before(target: String, extra: Value) -> Value {
    let mut body = json!({ "stage": "before", "target": target });
    merge(&mut body, extra);
    body
}

#[tokio::test]
async fn each_handler_sees_the_data_as_the_previous_one_left_it() {
    let app = TestApp::spawn().await;
    let first = adder("a", json!(1)).await;
    let second = adder("b", json!(2)).await;
    let third = Receiver::ok().await;
    let h1 = app
        .create_handler(before(
            first.url(),
            json!({ "priority": 1, "name": "first" }),
        ))
        .await;
    app.create_handler(before(second.url(), json!({ "priority": 2 })))
        .await;
    app.create_handler(before(third.url(), json!({ "priority": 3 })))
        .await;

    let verdict = run(&app, "clients.create", json!({ "name": "ACME" })).await;
    assert_eq!(verdict["allowed"], true);
    assert_eq!(verdict["data"], json!({ "name": "ACME", "a": 1, "b": 2 }));
    assert!(verdict["reason"].is_null() && verdict["handler_id"].is_null());
    let outcomes: Vec<&str> = verdict["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["changed", "changed", "unchanged"]);
    assert_eq!(
        first.received()[0].json()["data"],
        json!({ "name": "ACME" })
    );
    assert_eq!(
        third.received()[0].json()["data"],
        json!({ "name": "ACME", "a": 1, "b": 2 })
    );
    let r = &third.received()[0];
    assert_eq!(r.json()["event"]["events_id"], "clients.create");
    assert_eq!(r.json()["event"]["object_id"], 12);
    assert!(r.header("webhook-signature").starts_with("v1,"));

    // The log shows each call at the before stage, and what the first changed.
    let rows = app.wait_executions("stage=before", 3).await;
    let row = rows.iter().find(|e| e["handler_id"] == h1["id"]).unwrap();
    assert_eq!(row["event_id"], verdict["id"]);
    assert_eq!(row["data_after"], json!({ "name": "ACME", "a": 1 }));
    let sent: Value = serde_json::from_str(row["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent["data"],
        json!({ "name": "ACME" }),
        "the data before is in the request"
    );
    assert_eq!(app.executions("stage=after").await.len(), 0);
}

#[tokio::test]
async fn a_forbid_in_the_body_or_a_403_stops_the_chain() {
    for reply in [
        Reply::with_body(200, r#"{"allow": false, "reason": "balance too low"}"#),
        Reply::with_body(403, r#"{"reason": "balance too low"}"#),
    ] {
        let app = TestApp::spawn().await;
        let ok = Receiver::ok().await;
        let forbidder = Receiver::sequence(vec![reply]).await;
        let never = Receiver::ok().await;
        app.create_handler(before(ok.url(), json!({ "priority": 1 })))
            .await;
        let f = app
            .create_handler(before(forbidder.url(), json!({ "priority": 2 })))
            .await;
        app.create_handler(before(never.url(), json!({ "priority": 3 })))
            .await;
        let verdict = run(&app, "clients.create", json!({ "x": 1 })).await;
        assert_eq!(verdict["allowed"], false, "{verdict}");
        assert_eq!(verdict["reason"], "balance too low");
        assert_eq!(verdict["handler_id"], f["id"]);
        assert_eq!(verdict["data"], json!({ "x": 1 }));
        assert_eq!(verdict["executions"].as_array().unwrap().len(), 2);
        assert_eq!(verdict["executions"][1]["outcome"], "forbidden");
        assert!(
            never.received().is_empty(),
            "the handler after a forbid was called"
        );
    }
}

#[tokio::test]
async fn a_failed_handler_forbids_or_allows_as_its_on_failure_says() {
    let app = TestApp::spawn().await;
    let slow = Receiver::with(|_, _| Reply::delayed(200, Duration::from_secs(5))).await;
    let after = Receiver::ok().await;
    let tolerant = app
        .create_handler(before(
            slow.url(),
            json!({ "priority": 1, "timeout_ms": 200, "on_failure": "allow" }),
        ))
        .await;
    app.create_handler(before(after.url(), json!({ "priority": 2 })))
        .await;
    let verdict = run(&app, "clients.create", json!({ "n": 1 })).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    assert_eq!(verdict["executions"][0]["outcome"], "failed");
    assert!(
        verdict["executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    assert_eq!(after.received().len(), 1, "the chain went on");
    assert_eq!(after.received()[0].json()["data"], json!({ "n": 1 }));

    let (status, _) = app
        .patch(
            &format!("/api/v1/handlers/{}", tolerant["id"]),
            json!({ "on_failure": "forbid" }),
        )
        .await;
    assert_eq!(status, 200);
    let verdict = run(&app, "clients.create", json!({ "n": 2 })).await;
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["handler_id"], tolerant["id"]);
    assert!(
        verdict["reason"].as_str().unwrap().contains("timed out"),
        "{verdict}"
    );
    assert_eq!(after.received().len(), 1, "the chain stopped");

    // Other failures count the same: a 500 and a refused connection.
    let broken = Receiver::sequence(vec![Reply::status(500)]).await;
    let app = TestApp::spawn().await;
    app.create_handler(before(broken.url(), json!({}))).await;
    let verdict = run(&app, "clients.create", json!({})).await;
    assert_eq!(verdict["allowed"], false);
    let app = TestApp::spawn().await;
    app.create_handler(before("http://127.0.0.1:1/closed".into(), json!({})))
        .await;
    let verdict = run(&app, "clients.create", json!({})).await;
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["executions"][0]["outcome"], "failed");
}

#[tokio::test]
async fn the_chain_deadline_bounds_the_whole_call() {
    let app = TestApp::spawn_with(|s| s.before_deadline = Duration::from_millis(400)).await;
    let slow = Receiver::with(|_, _| Reply::delayed(200, Duration::from_secs(5))).await;
    let never = Receiver::ok().await;
    app.create_handler(before(
        slow.url(),
        json!({ "priority": 1, "timeout_ms": 5000, "on_failure": "allow" }),
    ))
    .await;
    let last = app
        .create_handler(before(
            never.url(),
            json!({ "priority": 2, "on_failure": "forbid" }),
        ))
        .await;
    let started = std::time::Instant::now();
    let verdict = run(&app, "clients.create", json!({})).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(verdict["allowed"], false, "{verdict}");
    assert_eq!(verdict["handler_id"], last["id"]);
    let outcomes: Vec<&str> = verdict["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "skipped"]);
    assert!(never.received().is_empty());
}

#[tokio::test]
async fn equal_priorities_run_in_id_order() {
    let app = TestApp::spawn().await;
    let mut receivers = Vec::new();
    for i in 0..3 {
        let r = Receiver::with(move |req, _| {
            let mut data = req.json()["data"].clone();
            let mut order = data["order"].as_array().cloned().unwrap_or_default();
            order.push(json!(i));
            data["order"] = Value::Array(order);
            Reply::with_body(200, json!({ "data": data }).to_string())
        })
        .await;
        app.create_handler(before(r.url(), json!({ "priority": 5 })))
            .await;
        receivers.push(r);
    }
    let verdict = run(&app, "clients.create", json!({})).await;
    assert_eq!(verdict["data"]["order"], json!([0, 1, 2]));
}

#[tokio::test]
async fn with_no_handler_the_action_is_allowed_at_once_and_bad_input_is_refused() {
    let app = TestApp::spawn().await;
    let after_stage = Receiver::ok().await;
    app.create_handler(json!({ "target": after_stage.url() }))
        .await;
    let verdict = run(&app, "clients.create", json!({ "keep": "me" })).await;
    assert_eq!(verdict["allowed"], true);
    assert_eq!(verdict["data"], json!({ "keep": "me" }));
    assert_eq!(verdict["executions"], json!([]));
    assert!(
        after_stage.received().is_empty(),
        "the before call must not emit at the after stage"
    );

    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "nope.nope", "object_id": 1 }),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": 1, "data": [] }),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = app.post_raw("/api/v1/events/before", "{").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed");
}

#[tokio::test]
async fn a_reply_with_data_that_is_not_an_object_is_a_failure() {
    let app = TestApp::spawn().await;
    let odd = Receiver::sequence(vec![Reply::with_body(200, r#"{"data": [1, 2]}"#)]).await;
    app.create_handler(before(odd.url(), json!({ "on_failure": "allow" })))
        .await;
    let verdict = run(&app, "clients.create", json!({ "a": 1 })).await;
    assert_eq!(verdict["allowed"], true);
    assert_eq!(verdict["data"], json!({ "a": 1 }));
    assert_eq!(verdict["executions"][0]["outcome"], "failed");
}

/// A reply provisio could not read whole must never let the action through by
/// itself: cut at the cap, nested past the parser's depth, or ambiguous, it is
/// a failure, and the handler's `on_failure` (here `forbid`) decides.
#[tokio::test]
async fn a_reply_that_cannot_be_read_is_a_failure_never_an_allow() {
    let padding = "x".repeat(70 * 1024);
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let hostile = [
        (
            "cut at the cap",
            json!({ "allow": false, "reason": "no", "pad": padding }).to_string(),
            "cut",
        ),
        (
            "nested past the depth limit",
            format!(r#"{{"allow": false, "reason": {deep}}}"#),
            "not a JSON object",
        ),
        (
            "a duplicated allow",
            r#"{"allow": false, "allow": true}"#.to_owned(),
            "duplicate field",
        ),
        (
            "allow as a string",
            r#"{"allow": "false"}"#.to_owned(),
            "not a JSON object",
        ),
        ("plain text", "OK".to_owned(), "not a JSON object"),
    ];
    let app = TestApp::spawn().await;
    for (what, body, error) in hostile {
        let receiver = Receiver::sequence(vec![Reply::with_body(200, body)]).await;
        let handler = app
            .create_handler(before(receiver.url(), json!({ "on_failure": "forbid" })))
            .await;
        let verdict = run(&app, "clients.create", json!({ "a": 1 })).await;
        assert_eq!(verdict["allowed"], false, "{what}: {verdict}");
        assert_eq!(verdict["handler_id"], handler["id"], "{what}");
        let step = &verdict["executions"][0];
        assert_eq!(step["outcome"], "failed", "{what}: {verdict}");
        assert!(
            step["error"].as_str().unwrap().contains(error),
            "{what}: {step}"
        );
        app.delete(&format!("/api/v1/handlers/{}", handler["id"]))
            .await;
    }

    // New data over the cap is not silently ignored either.
    let receiver = Receiver::sequence(vec![Reply::with_body(
        200,
        json!({ "data": { "pad": padding } }).to_string(),
    )])
    .await;
    app.create_handler(before(receiver.url(), json!({ "on_failure": "allow" })))
        .await;
    let verdict = run(&app, "clients.create", json!({ "a": 1 })).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    assert_eq!(verdict["data"], json!({ "a": 1 }));
    assert_eq!(verdict["executions"][0]["outcome"], "failed");
    let rows = app.wait_executions("stage=before&status=fail", 6).await;
    assert!(
        rows.iter()
            .all(|r| r["error"].as_str().is_some_and(|e| !e.is_empty())),
        "every failed reply is logged with its reason"
    );
}

#[tokio::test]
async fn data_a_handler_returns_is_kept_exactly() {
    let app = TestApp::spawn().await;
    let exact = Receiver::sequence(vec![Reply::with_body(
        200,
        r#"{"data": {"balance": 18446744073709551617, "rate": 0.1000000000000000055511}}"#,
    )])
    .await;
    let next = Receiver::ok().await;
    app.create_handler(before(exact.url(), json!({ "priority": 1 })))
        .await;
    app.create_handler(before(next.url(), json!({ "priority": 2 })))
        .await;
    let answer = app
        .client
        .post(app.url("/api/v1/events/before"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "events_id": "clients.create", "object_id": 1, "data": {} }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        answer.contains("18446744073709551617"),
        "the caller got the data as written: {answer}"
    );
    let sent = next.received()[0].body.clone();
    assert!(
        sent.contains("18446744073709551617") && sent.contains("0.1000000000000000055511"),
        "the next handler got the numbers as written: {sent}"
    );
}
