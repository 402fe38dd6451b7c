//! The execution log: filters, order, pagination, details, response capping.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_log_filters_by_every_documented_field() {
    let app = TestApp::spawn().await;
    let ok = Receiver::with(|_, _| Reply::with_body(200, "{\"synced\": true}")).await;
    let broken = Receiver::sequence(vec![Reply::with_body(500, "switch exploded")]).await;
    let a = app
        .create_handler(json!({ "name": "A", "events_id": "clients.*", "target": ok.url() }))
        .await;
    let b = app.create_handler(json!({ "name": "B", "events_id": "clients.delete", "target": broken.url(), "max_attempts": 1 })).await;
    app.emit(
        "clients.create",
        json!(10),
        json!({ "name": "Needle Corp" }),
    )
    .await;
    app.emit("clients.delete", json!("obj-20"), json!({})).await;
    let all = app.wait_executions("", 3).await;
    assert_eq!(all.len(), 3);
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let count = |query: &'static str| {
        let app = &app;
        async move { app.executions(query).await.len() }
    };
    assert_eq!(
        app.executions(&format!("handler_id={}", a["id"]))
            .await
            .len(),
        2
    );
    assert_eq!(
        app.executions(&format!("handler_id={}", b["id"]))
            .await
            .len(),
        1
    );
    assert_eq!(count("events_id=clients.delete").await, 2);
    assert_eq!(count("events_id=clients.create").await, 1);
    assert_eq!(count("status=fail").await, 1);
    assert_eq!(count("status=success").await, 2);
    assert_eq!(count("stage=after").await, 3);
    assert_eq!(count("stage=before").await, 0);
    assert_eq!(count("object_id=10").await, 1);
    assert_eq!(count("object_id=obj-20").await, 2);
    assert_eq!(count("data=Needle").await, 1);
    assert_eq!(count("data=needle%20corp").await, 1, "case-insensitive");
    assert_eq!(count("error=500").await, 1);
    assert_eq!(count("error=nothing-like-this").await, 0);
    assert_eq!(count("from=2000-01-01&to=2999-12-31").await, 3);
    assert_eq!(count("from=2999-01-01").await, 0);
    assert_eq!(count("to=2000-01-01T00:00:00Z").await, 0);

    let (_, page) = app.get("/api/v1/executions?per_page=2&page=2").await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], ids[2]);

    for bad in [
        "status=maybe",
        "stage=during",
        "handler_id=abc",
        "from=yesterday",
        "to=2026-13-45",
        "per_page=501",
    ] {
        let (status, body) = app.get(&format!("/api/v1/executions?{bad}")).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
}

#[tokio::test]
async fn an_execution_shows_the_request_sent_and_the_response() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::with_body(200, "{\"synced\": true}")).await;
    let h = app.create_handler(json!({ "name": "Switch", "target": receiver.url(), "headers": { "Authorization": "Bearer s3cret", "X-Region": "eu" } })).await;
    let emitted = app
        .emit("clients.create", json!(12), json!({ "id": 12 }))
        .await;
    let row = app.wait_executions("", 1).await.remove(0);
    let (status, detail) = app.get(&format!("/api/v1/executions/{}", row["id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["handler_id"], h["id"]);
    assert_eq!(detail["handler_name"], "Switch");
    assert_eq!(detail["event_id"], emitted["id"]);
    assert_eq!(detail["events_id"], "clients.create");
    assert_eq!(detail["object_id"], 12);
    assert_eq!(detail["attempt"], 1);
    assert_eq!(detail["status"], "success");
    assert_eq!(detail["response_status"], 200);
    assert_eq!(detail["response_body"], "{\"synced\": true}");
    assert_eq!(detail["response_truncated"], false);
    assert!(detail["duration_ms"].is_u64());
    assert!(detail["started_at"].is_string());
    assert!(detail["delivery_id"].is_string());
    assert_eq!(detail["request"]["target"], receiver.url());
    let sent: Value = serde_json::from_str(detail["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["data"], json!({ "id": 12 }));
    assert_eq!(detail["request"]["headers"]["x-region"], "eu");
    assert_eq!(
        detail["request"]["headers"]["authorization"], "***",
        "credentials are masked"
    );
    assert!(
        detail["request"]["headers"]["webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );
    assert!(!detail.to_string().contains("s3cret"));

    let (status, body) = app.get("/api/v1/executions/999999").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_large_response_is_stored_cut_at_64_kib_and_marked() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::with_body(200, "y".repeat(200 * 1024))).await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    let row = app.wait_executions("", 1).await.remove(0);
    assert_eq!(row["response_truncated"], true);
    assert_eq!(row["response_body"].as_str().unwrap().len(), 64 * 1024);
    assert_eq!(row["status"], "success");
}

#[tokio::test]
async fn an_event_shows_its_deliveries_and_their_state() {
    let app = TestApp::spawn().await;
    let ok = Receiver::ok().await;
    let down = Receiver::sequence(vec![Reply::status(500)]).await;
    let a = app
        .create_handler(json!({ "priority": 1, "target": ok.url() }))
        .await;
    let b = app
        .create_handler(json!({ "priority": 2, "target": down.url(), "max_attempts": 1, "on_exhausted": "skip" }))
        .await;
    let emitted = app
        .emit("clients.create", json!(3), json!({ "k": "v" }))
        .await;
    let event = app
        .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
            e["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["state"] != "pending"))
        })
        .await;
    assert_eq!(event["events_id"], "clients.create");
    assert_eq!(event["object_id"], 3);
    assert_eq!(event["data"], json!({ "k": "v" }));
    let deliveries = event["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0]["handler_id"], a["id"], "in priority order");
    assert_eq!(deliveries[0]["state"], "success");
    assert_eq!(deliveries[1]["handler_id"], b["id"]);
    assert_eq!(deliveries[1]["state"], "failed");
    assert!(deliveries[1]["finished_at"].is_string());
    let (status, body) = app.get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}
