//! The log views over HTTP: a before-stage call's verdict on the wire and as
//! a filter, the response-body search and what bounds it, a delivery read
//! with its attempts, and "retry now" on pending and waiting deliveries.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::cli::cli;
use crate::helpers::*;

/// A before-stage script that refuses every client, with a reason.
fn write_refuser(app: &TestApp) {
    app.write_script(
        "refuse.sh",
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"allow\": false, \"reason\": \"account locked\"}'\n",
    );
}

async fn run_before(app: &TestApp) -> Value {
    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": 12, "data": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_forbidding_before_stage_script_is_found_by_its_verdict() {
    let app = TestApp::spawn().await;
    write_refuser(&app);
    let refuser = app
        .create_handler(json!({
            "stage": "before", "kind": "script", "target": "refuse.sh",
            "args": ["--strict", "two words"], "name": "credit check",
        }))
        .await;
    let passer = Receiver::ok().await;
    app.create_handler(json!({ "stage": "before", "target": passer.url(), "priority": 1 }))
        .await;
    let verdict = run_before(&app).await;
    assert_eq!(verdict["allowed"], false, "{verdict}");

    let forbidden = app.wait_executions("verdict=forbidden", 1).await;
    assert_eq!(forbidden.len(), 1, "{forbidden:?}");
    let row = &forbidden[0];
    assert_eq!(row["handler_id"], refuser["id"]);
    assert_eq!(row["verdict"], "forbidden");
    assert_eq!(
        row["status"], "success",
        "the call worked; its answer was no"
    );
    // A script's call in script terms.
    assert_eq!(row["kind"], "script");
    assert_eq!(row["script_args"], json!(["--strict", "two words"]));
    assert_eq!(row["exit_code"], 0);
    let unchanged = app.executions("verdict=unchanged").await;
    assert_eq!(unchanged.len(), 1, "the HTTP handler let it through");
    assert_eq!(unchanged[0]["kind"], "http");
    assert!(unchanged[0]["exit_code"].is_null() && unchanged[0]["script_args"].is_null());
    assert!(app.executions("verdict=changed").await.is_empty());
    // After-stage calls carry no verdict.
    let after = Receiver::ok().await;
    app.create_handler(json!({ "target": after.url() })).await;
    app.emit("clients.create", json!(3), json!({})).await;
    let rows = app.wait_executions("stage=after", 1).await;
    assert!(rows[0]["verdict"].is_null(), "{}", rows[0]);

    // A bad verdict is refused, naming the field.
    let (status, body) = app.get("/api/v1/executions?verdict=nope").await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(fields["verdict"].is_string(), "{body}");

    // The CLI filters and shows the verdict.
    let (ok, out, err) = cli(&app, &["executions", "list", "--verdict", "forbidden"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("forbidden") && out.contains("credit check"),
        "{out}"
    );
    assert!(out.contains("exit 0"), "{out}");
    let (ok, _, err) = cli(&app, &["executions", "list", "--verdict", "nope"]).await;
    assert!(!ok);
    assert!(err.contains("verdict"), "{err}");
}

#[tokio::test]
async fn the_response_body_is_searched_and_the_answer_says_how_far() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![
        Reply::with_body(422, "{\"error\": \"Account LOCKED by billing\"}"),
        Reply::with_body(200, "{\"ok\": true}"),
    ])
    .await;
    app.create_handler(json!({ "target": receiver.url(), "max_attempts": 1, "ordered": false }))
        .await;
    app.emit("clients.create", json!(1), json!({})).await;
    app.emit("clients.create", json!(2), json!({})).await;
    app.wait_executions("", 2).await;

    let (status, body) = app
        .get("/api/v1/executions?response=account%20locked")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["items"][0]["response_status"], 422);
    assert_eq!(body["total"], 1);
    assert_eq!(body["total_exact"], true);
    assert_eq!(body["searched_newest"], 100_000);
    assert!(
        body["note"].as_str().unwrap().contains("100,000"),
        "the bounded scan is said: {body}"
    );
    // provisio's own error text does not hold the receiver's words.
    assert!(app.executions("error=locked").await.is_empty());
    // Without a text search nothing is bounded.
    let (_, body) = app.get("/api/v1/executions").await;
    assert_eq!(body["total"], 2);
    assert!(
        body["searched_newest"].is_null() && body["note"].is_null(),
        "{body}"
    );

    let (ok, out, err) = cli(&app, &["executions", "list", "--response", "LOCKED"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("422") && out.contains("(1 in all)"), "{out}");
    assert!(out.contains("100,000"), "{out}");
}

#[tokio::test]
async fn a_delivery_is_read_with_every_attempt() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::sequence(vec![Reply::status(500), Reply::status(200)]).await;
    let handler = app
        .create_handler(json!({ "target": receiver.url(), "name": "softswitch" }))
        .await;
    let emitted = app.emit("clients.create", json!(41), json!({})).await;
    let event = app
        .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "success"
        })
        .await;
    let id = event["deliveries"][0]["id"].as_str().unwrap();
    let (status, d) = app.get(&format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["id"], id);
    assert_eq!(d["state"], "success");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["handler_id"], handler["id"]);
    assert_eq!(d["handler_name"], "softswitch");
    assert_eq!(d["event_id"], emitted["id"]);
    assert_eq!(d["events_id"], "clients.create");
    assert_eq!(d["object_id"], 41);
    let attempts: Vec<(u64, &str)> = d["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(2, "success"), (1, "fail")], "newest first");
    assert!(d["executions"][1]["next_attempt_at"].is_string());

    let (status, body) = app.get("/api/v1/deliveries/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (ok, out, err) = cli(&app, &["deliveries", "show", id]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("softswitch") && out.contains("success"),
        "{out}"
    );
    assert!(out.contains("ATTEMPT") && out.contains("500"), "{out}");
    let (ok, out, err) = cli(&app, &["deliveries", "show", id, "--json"]).await;
    assert!(ok, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["executions"].as_array().unwrap().len(), 2);
    let (ok, _, err) = cli(&app, &["deliveries", "show", "nope"]).await;
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn retry_now_on_a_waiting_delivery_hurries_its_line_without_overtaking() {
    // A backoff of an hour: without "retry now" nothing would arrive again.
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("1h").unwrap()
    })
    .await;
    let receiver = Receiver::sequence(vec![Reply::status(503), Reply::status(200)]).await;
    app.create_handler(json!({ "target": receiver.url() }))
        .await;
    let first = app
        .emit("clients.create", json!(5), json!({ "n": 1 }))
        .await;
    let first = app
        .wait_for_event(first["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["attempts"] == 1
        })
        .await;
    let second = app
        .emit("clients.create", json!(5), json!({ "n": 2 }))
        .await;
    let second = app
        .wait_for_event(second["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "waiting"
        })
        .await;
    let head = first["deliveries"][0]["id"].as_str().unwrap();
    let waiting = second["deliveries"][0]["id"].as_str().unwrap();

    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{waiting}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["retry"], "head_due_now");
    assert_eq!(body["due_delivery_id"], head);
    assert_eq!(body["state"], "waiting", "it does not overtake");
    assert!(body["note"].as_str().unwrap().contains(head), "{body}");

    // Both arrive at once, in order: the head's retry, then the waiting one.
    let got = receiver.wait_for(3).await;
    let ns: Vec<Value> = got.iter().map(|r| r.json()["data"]["n"].clone()).collect();
    assert_eq!(ns, [json!(1), json!(1), json!(2)]);
    app.wait_get(&format!("/api/v1/deliveries/{waiting}"), PATIENCE, |d| {
        d["state"] == "success"
    })
    .await;

    // On a finished delivery it starts a new round, as before.
    let (status, body) = app
        .post(&format!("/api/v1/deliveries/{head}/redeliver"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["retry"], "new_round");
    receiver.wait_for(4).await;
}
