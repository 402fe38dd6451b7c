//! Emitting events: the 202 answer, the exact payload, idempotency, bad input.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn receivers_get_exactly_the_reference_payload() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;

    let (status, body) = app
        .post(
            "/api/v1/events",
            json!({ "events_id": "clients.update", "object_id": 12, "dt": "2026-11-26T10:00:00Z",
                    "data": { "id": 12, "name": "My changed name" } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deliveries"], 1);
    assert!(
        body["id"].as_str().is_some_and(|id| id.len() == 26),
        "a ULID: {body}"
    );
    let (_, body) = app
        .post("/api/v1/events", json!({ "events_id": "clients.delete", "object_id": "acme-7", "dt": "2026-11-26T13:30:00+03:00" }))
        .await;
    assert_eq!(body["deliveries"], 1);

    let got = receiver.wait_for(2).await;
    let mut bodies: Vec<Value> = got.iter().map(Received::json).collect();
    bodies.sort_by_key(|b| b["event"]["events_id"].as_str().unwrap().to_owned());
    assert_eq!(
        bodies[1],
        json!({ "event": { "dt": "2026-11-26T10:00:00+00:00", "events_id": "clients.update", "object_id": 12 },
                "data": { "id": 12, "name": "My changed name" } })
    );
    assert_eq!(
        bodies[0],
        json!({ "event": { "dt": "2026-11-26T13:30:00+03:00", "events_id": "clients.delete", "object_id": "acme-7" },
                "data": {} }),
        "empty data is {{}}, a string object id stays a string, the offset is kept"
    );
    for r in &got {
        assert_eq!(r.header("content-type"), "application/json");
        assert!(
            r.header("user-agent").starts_with("provisio/"),
            "{:?}",
            r.headers
        );
    }
}

#[tokio::test]
async fn dt_defaults_to_now_with_an_offset() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    let dt = receiver.wait_for(1).await[0].json()["event"]["dt"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed = provisio_core::timefmt::parse(&dt).unwrap();
    assert!(dt.ends_with("+00:00"), "{dt}");
    let age = time::OffsetDateTime::now_utc() - parsed;
    assert!(age.whole_seconds().abs() < 60, "{dt}");
}

#[tokio::test]
async fn each_matching_enabled_after_stage_handler_gets_one_delivery() {
    let app = TestApp::spawn().await;
    let target = "http://127.0.0.1:1/never";
    app.create_handler(json!({ "events_id": "clients.create", "target": target }))
        .await;
    app.create_handler(json!({ "events_id": "clients.*", "target": target }))
        .await;
    app.create_handler(json!({ "events_id": "*", "target": target }))
        .await;
    app.create_handler(
        json!({ "events_id": "clients.create", "target": target, "status": "disabled" }),
    )
    .await;
    app.create_handler(
        json!({ "events_id": "clients.create", "target": target, "status": "archived" }),
    )
    .await;
    app.create_handler(
        json!({ "events_id": "clients.create", "target": target, "stage": "before" }),
    )
    .await;
    app.create_handler(json!({ "events_id": "clients.update", "target": target }))
        .await;
    let body = app.emit("clients.create", json!(5), json!({})).await;
    assert_eq!(body["deliveries"], 3);
    let body = app
        .emit("importd.process_failed", json!(5), json!({}))
        .await;
    assert_eq!(body["deliveries"], 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_emit_safe() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let body = json!({ "events_id": "clients.create", "object_id": 3, "data": { "n": 1 } });
    let send = |body: Value, key: &'static str| {
        let req = app
            .client
            .post(app.url("/api/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let first = send(body.clone(), "key-1").await;
    assert_eq!(first.status(), 202);
    let (_, first) = read(first).await;
    let again = send(body.clone(), "key-1").await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (_, again) = read(again).await;
    assert_eq!(again, first, "the first answer is repeated");

    let other = send(
        json!({ "events_id": "clients.create", "object_id": 3, "data": { "n": 2 } }),
        "key-1",
    )
    .await;
    let (status, other) = read(other).await;
    assert_error(status, &other, StatusCode::CONFLICT, "conflict");

    let fresh = send(body, "key-2").await;
    let (_, fresh) = read(fresh).await;
    assert_ne!(fresh["id"], first["id"]);

    let executions = app.wait_executions("", 2).await;
    assert_eq!(executions.len(), 2, "the replay delivered nothing new");
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn bad_emits_are_refused_and_store_nothing() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 4096).await;
    let receiver = Receiver::ok().await;
    app.create_handler(json!({ "events_id": "*", "target": receiver.url() }))
        .await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "events_id": "clients.nope", "object_id": 1 }),
            "events_id",
        ),
        (
            json!({ "events_id": "clients.create", "object_id": 1, "data": [1, 2] }),
            "data",
        ),
        (
            json!({ "events_id": "clients.create", "object_id": 1, "data": "text" }),
            "data",
        ),
        (
            json!({ "events_id": "clients.create", "object_id": true }),
            "object_id",
        ),
        (
            json!({ "events_id": "clients.create", "object_id": null }),
            "object_id",
        ),
        (json!({ "events_id": "clients.create" }), "object_id"),
        (json!({ "object_id": 1 }), "events_id"),
        (
            json!({ "events_id": "clients.create", "object_id": 1, "dt": "yesterday" }),
            "dt",
        ),
        (
            json!({ "events_id": "clients.create", "object_id": 1, "extra": 1 }),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = app.post("/api/v1/events", body.clone()).await;
        let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(fields.get(field).is_some(), "{body}: {resp}");
    }
    let (status, resp) = app.post_raw("/api/v1/events", "{\"events_id\": ").await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "malformed");
    let big = json!({ "events_id": "clients.create", "object_id": 1, "data": { "blob": "x".repeat(5000) } });
    let (status, resp) = app.post("/api/v1/events", big).await;
    assert_error(status, &resp, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // Only the one good emit that follows reaches the receiver.
    app.emit("clients.create", json!(1), json!({ "ok": true }))
        .await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"], json!({ "ok": true }));
    let executions = app.wait_executions("", 1).await;
    assert_eq!(
        executions.len(),
        1,
        "a refused emit was delivered: {executions:?}"
    );
}
