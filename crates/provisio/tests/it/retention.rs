//! Retention prunes old history and never unfinished work.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn old_history_is_pruned_and_pending_work_is_kept() {
    let app = TestApp::spawn_with(|s| {
        s.retention = Some(Duration::from_secs(1));
        s.prune_every = Duration::from_millis(200);
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("1h").unwrap();
    })
    .await;
    let ok = Receiver::ok().await;
    let down = Receiver::sequence(vec![Reply::status(503)]).await;
    app.create_handler(json!({ "name": "ok", "target": ok.url() }))
        .await;
    let delivered = app.emit("clients.create", json!(1), json!({})).await;
    app.wait_for_event(delivered["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
    app.create_handler(
        json!({ "name": "down", "events_id": "clients.update", "target": down.url() }),
    )
    .await;
    let pending = app.emit("clients.update", json!(2), json!({})).await;
    app.wait_executions("events_id=clients.update", 1).await;

    // Everything finished goes once older than a second; the pending delivery,
    // its event and the handlers stay.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = app
            .get(&format!(
                "/api/v1/events/{}",
                delivered["id"].as_str().unwrap()
            ))
            .await;
        if status == 404 && app.executions("").await.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old history was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, event) = app
        .get(&format!(
            "/api/v1/events/{}",
            pending["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "an event with unfinished work is kept");
    assert_eq!(event["deliveries"][0]["state"], "pending");
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 2);
}
