//! Handler filters: a CEL condition on the event decides whether a handler is
//! called; checked when the handler is saved, evaluated on every emit.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::scripts::run_before;

const OVERDRAWN_EUR: &str = r#"data.currency == "EUR" && data.balance < 0"#;

async fn event(app: &TestApp, id: &Value) -> Value {
    let (status, event) = app
        .get(&format!("/api/v1/events/{}", id.as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    event
}

#[tokio::test]
async fn only_events_that_pass_a_handlers_filter_reach_it() {
    let app = TestApp::spawn().await;
    let filtered = Receiver::ok().await;
    let everything = Receiver::ok().await;
    let h = app
        .create_handler(
            json!({ "target": filtered.url(), "events_id": "clients.*", "filter": OVERDRAWN_EUR }),
        )
        .await;
    assert_eq!(h["filter"], OVERDRAWN_EUR);
    app.create_handler(
        json!({ "target": everything.url(), "events_id": "clients.*", "priority": 200 }),
    )
    .await;

    let pass = app
        .emit(
            "clients.update",
            json!(1),
            json!({ "currency": "EUR", "balance": -5 }),
        )
        .await;
    let fail = app
        .emit(
            "clients.update",
            json!(2),
            json!({ "currency": "USD", "balance": -5 }),
        )
        .await;
    let error = app
        .emit("clients.update", json!(3), json!({ "name": "no balance" }))
        .await;
    assert_eq!(pass["deliveries"], 2);
    assert_eq!(fail["deliveries"], 1, "{fail}");
    assert_eq!(error["deliveries"], 1, "{error}");

    assert_eq!(everything.wait_for(3).await.len(), 3);
    let got = filtered.wait_for(1).await;
    assert_eq!(got[0].json()["event"]["object_id"], 1);
    // Nothing else comes: the unfiltered handler got all three meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(filtered.received().len(), 1);

    // The event's detail says which handler filtered it out, and why when
    // its filter could not be evaluated.
    assert_eq!(event(&app, &pass["id"]).await["filtered_out"], json!([]));
    assert_eq!(
        event(&app, &fail["id"]).await["filtered_out"],
        json!([{ "handler_id": h["id"], "error": null }])
    );
    let detail = event(&app, &error["id"]).await;
    let why = detail["filtered_out"][0]["error"].as_str().unwrap();
    assert!(why.contains("No such key"), "{detail}");
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 1);

    // Each evaluation is counted by its result (the recorder is the test
    // process's, shared with other tests: at least one each).
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for result in ["pass", "fail", "error"] {
        let series = format!(r#"provisio_filter_checks_total{{result="{result}"}} "#);
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 1.0), "{series} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_filter_that_does_not_parse_is_refused_with_its_position_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;

    let (status, body) = app
        .post(
            "/api/v1/handlers",
            json!({ "name": "x", "events_id": "clients.create", "target": receiver.url(),
                    "filter": "data.balance <" }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let message = fields["filter"].as_str().unwrap();
    assert!(message.starts_with("line 1, column "), "{body}");

    for hostile in [
        "data.list.all(x, data.list.all(y, true))",
        "data.list.exists(x, x == data.other)",
        "secrets.token == 1",
    ] {
        let (status, body) = app
            .post(
                "/api/v1/handlers",
                json!({ "name": "x", "events_id": "clients.create", "target": receiver.url(),
                        "filter": hostile }),
            )
            .await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 0, "nothing was created: {list}");

    let h = app
        .create_handler(json!({ "target": receiver.url(), "filter": "data.vip == true" }))
        .await;
    let path = format!("/api/v1/handlers/{}", h["id"]);
    let (status, body) = app.patch(&path, json!({ "filter": "data.vip ==" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(app.get(&path).await.1["filter"], "data.vip == true");

    app.emit("clients.create", json!(1), json!({ "vip": false }))
        .await;
    // A patch that leaves the filter out keeps it; null (or "") removes it:
    // every event reaches the handler again.
    let (_, body) = app.patch(&path, json!({ "name": "renamed" })).await;
    assert_eq!(body["filter"], "data.vip == true");
    let (status, body) = app.patch(&path, json!({ "filter": null })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["filter"], Value::Null);
    app.emit("clients.create", json!(2), json!({ "vip": false }))
        .await;
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].json()["event"]["object_id"],
        2,
        "the first event was filtered out"
    );
}

#[tokio::test]
async fn a_before_handler_runs_only_for_data_that_passes_and_a_filter_error_is_its_failure() {
    let app = TestApp::spawn().await;
    let refuse = Receiver::with(|_, _| {
        Reply::with_body(200, r#"{"allow": false, "reason": "over the limit"}"#)
    })
    .await;
    let h = app
        .create_handler(json!({ "stage": "before", "target": refuse.url(),
                                "filter": "data.amount > 100", "on_failure": "forbid" }))
        .await;

    let small = run_before(&app, json!({ "amount": 50 })).await;
    assert_eq!(small["allowed"], true, "{small}");
    assert_eq!(small["executions"][0]["outcome"], "filtered_out");
    assert_eq!(refuse.received().len(), 0);

    let large = run_before(&app, json!({ "amount": 500 })).await;
    assert_eq!(large["allowed"], false, "{large}");
    assert_eq!(large["reason"], "over the limit");

    // The filter cannot read a missing amount: the handler's failure, and its
    // on_failure (forbid) decides. A filter error never turns into an allow.
    let missing = run_before(&app, json!({})).await;
    assert_eq!(missing["allowed"], false, "{missing}");
    assert_eq!(missing["handler_id"], h["id"]);
    assert_eq!(missing["executions"][0]["outcome"], "failed");
    let error = missing["executions"][0]["error"].as_str().unwrap();
    assert!(error.contains("filter"), "{error}");
    assert_eq!(
        refuse.received().len(),
        1,
        "called only for the large amount"
    );
}
