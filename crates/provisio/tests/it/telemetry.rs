//! `/metrics`: present without a token, and moving when work is done.

use serde_json::json;

use crate::helpers::*;

pub(crate) async fn scrape(app: &TestApp) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    resp.text().await.unwrap()
}

/// The value of the first sample whose line starts with `prefix`.
pub(crate) fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_are_exported_and_move_after_an_emit() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    // A type of its own, so other tests in this process do not move its series.
    app.post("/api/v1/event-types", json!({ "id": "metrics.probe" }))
        .await;
    app.create_handler(json!({ "events_id": "metrics.probe", "target": receiver.url() }))
        .await;
    app.create_handler(
        json!({ "events_id": "metrics.probe", "stage": "before", "target": receiver.url() }),
    )
    .await;

    let before = scrape(&app).await;
    assert_eq!(
        sample(
            &before,
            r#"provisio_events_emitted_total{events_id="metrics.probe",stage="after"}"#
        ),
        None
    );

    app.emit("metrics.probe", json!(1), json!({})).await;
    app.emit("metrics.probe", json!(2), json!({})).await;
    app.post(
        "/api/v1/events/before",
        json!({ "events_id": "metrics.probe", "object_id": 3 }),
    )
    .await;
    app.wait_executions("events_id=metrics.probe&stage=after", 2)
        .await;

    let after = scrape(&app).await;
    assert_eq!(
        sample(
            &after,
            r#"provisio_events_emitted_total{events_id="metrics.probe",stage="after"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"provisio_events_emitted_total{events_id="metrics.probe",stage="before"}"#
        ),
        Some(1.0)
    );
    for name in [
        "provisio_deliveries_finished_total{",
        "provisio_attempt_duration_seconds_bucket{",
        "provisio_before_chain_seconds_bucket{",
        "provisio_deliveries_unfinished ",
        "provisio_oldest_unfinished_delivery_age_seconds ",
        "provisio_http_request_duration_seconds_bucket{",
        "provisio_emit_commit_seconds_bucket{",
        "provisio_record_commit_seconds_bucket{",
        "provisio_record_batch_size{",
        "provisio_claim_batch_size{",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics"
        );
    }
    // The two emits' commits wrote their pages to SQLite's WAL (a counter
    // of the whole process: other tests only add to it).
    let frames = |text: &str| sample(text, "provisio_sqlite_wal_frames_total ").unwrap_or(0.0);
    assert!(
        frames(&after) >= frames(&before) + 2.0,
        "WAL frames {} before, {} after two emits",
        frames(&before),
        frames(&after)
    );
    assert!(
        after.contains(r#"route="/api/v1/events""#),
        "requests are timed by route, not raw path"
    );
}
