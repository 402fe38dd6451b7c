//! Request templates: an HTTP handler calls a REST API in its own shape, built
//! from the event, with no adapter in between.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::delivery::verify;
use crate::helpers::*;

/// A customer's life cycle on a REST API: PUT to create or change, DELETE
/// to remove.
fn customers(base: &str) -> Value {
    json!({
        "method": "PUT",
        "url": format!("{base}/api/v2/customers/{{{{ event.object_id }}}}"),
        "headers": { "X-Event": "{{ event.events_id }}" },
        "body": "{\"name\": {{ data.name|tojson }}, \"plan\": {{ data.plan|default('basic')|tojson }}}",
        "by_event": { "clients.delete": { "method": "DELETE", "body": null } }
    })
}

#[tokio::test]
async fn a_templated_handler_sends_exactly_the_rendered_requests_signed() {
    let app = TestApp::spawn().await;
    let switch = Receiver::ok().await;
    let base = switch.url().trim_end_matches("/hook").to_owned();
    let h = app
        .create_handler(json!({ "events_id": "clients.*", "target": switch.url(),
                                "request": customers(&base) }))
        .await;
    assert_eq!(h["request"]["method"], "PUT", "{h}");
    let (_, secret) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    let secret = secret["secret"].as_str().unwrap();

    app.emit(
        "clients.update",
        json!(7),
        json!({ "name": "ACME \"Telecom\"" }),
    )
    .await;
    app.emit("clients.delete", json!(7), json!({})).await;
    let got = switch.wait_for(2).await;

    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("PUT", "/api/v2/customers/7")
    );
    assert_eq!(
        got[0].json(),
        json!({ "name": "ACME \"Telecom\"", "plan": "basic" })
    );
    assert_eq!(got[0].header("x-event"), "clients.update");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert!(
        verify(secret, &got[0]),
        "the signature covers the rendered body"
    );

    assert_eq!(
        (got[1].method.as_str(), got[1].path.as_str()),
        ("DELETE", "/api/v2/customers/7")
    );
    assert_eq!(got[1].body, "");
    assert!(verify(secret, &got[1]));

    // The log shows the request as sent.
    let rows = app
        .wait_executions(&format!("handler_id={}", h["id"]), 2)
        .await;
    let delete = rows
        .iter()
        .find(|r| r["events_id"] == "clients.delete")
        .unwrap();
    assert!(
        delete["request"]["target"]
            .as_str()
            .unwrap()
            .starts_with("DELETE http://"),
        "{delete}"
    );
}

#[tokio::test]
async fn a_request_that_cannot_be_rendered_fails_at_once_with_the_reason() {
    let app = TestApp::spawn().await;
    let switch = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "target": switch.url(), "max_attempts": 10,
                                "request": { "body": "{\"n\": {{ data.missing }}}" } }))
        .await;
    let emitted = app.emit("clients.create", json!(1), json!({})).await;
    // Given up at once; the handler is ordered, so the object's line blocks
    // behind it until the template is mended and the delivery retried.
    let event = app
        .wait_for_event(emitted["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "blocked"
        })
        .await;
    assert_eq!(
        event["deliveries"][0]["attempts"], 1,
        "not retried: {event}"
    );
    let rows = app.executions(&format!("handler_id={}", h["id"])).await;
    let error = rows[0]["error"].as_str().unwrap();
    assert!(
        error.contains("request template") && error.contains("undefined"),
        "{error}"
    );
    assert!(switch.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn bad_templates_are_refused_when_saved_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let switch = Receiver::ok().await;
    for (request, field) in [
        (json!({ "body": "{{ data.name " }), "request.body"),
        (
            json!({ "by_event": { "clients.delete": { "url": "{% if %}" } } }),
            "request.by_event.clients.delete.url",
        ),
        (json!({ "method": "GET" }), "request"),
        (
            json!({ "headers": { "webhook-signature": "x" } }),
            "request.headers",
        ),
        (json!({ "nope": 1 }), "request"),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/handlers",
                json!({ "name": "x", "events_id": "clients.create", "target": switch.url(), "request": request }),
            )
            .await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{request}: {status} {body}"
        );
        let message = body["error"]["fields"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
            + body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field.split('.').next_back().unwrap_or(field)),
            "{request}: {body}"
        );
    }
    // Script handlers take no template.
    app.write_script("hook.sh", "#!/bin/sh\ncat >/dev/null\n");
    let (status, body) = app
        .post(
            "/api/v1/handlers",
            json!({ "name": "s", "events_id": "clients.create", "kind": "script", "target": "hook.sh",
                    "request": { "method": "PUT" } }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(fields["request"].as_str().unwrap().contains("only HTTP"));
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 0);

    // A URL that could leave the target's origin fails the delivery, never
    // reaches another host.
    let h = app
        .create_handler(json!({ "target": switch.url(), "on_exhausted": "skip",
                                "request": { "url": "{{ data.where }}" } }))
        .await;
    let emitted = app
        .emit(
            "clients.create",
            json!(2),
            json!({ "where": "http://127.0.0.2:1/steal" }),
        )
        .await;
    let error = app.wait_first_delivery_failed(&emitted).await;
    assert!(error.contains("origin"), "{error}");
    // And null removes the template: the payload is POSTed again.
    let path = format!("/api/v1/handlers/{}", h["id"]);
    let (status, body) = app.patch(&path, json!({ "request": null })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["request"], Value::Null);
}

#[tokio::test]
async fn a_test_previews_the_exact_request_and_sends_it_once_when_asked() {
    let app = TestApp::spawn().await;
    let switch = Receiver::with(|_, _| Reply::with_body(201, r#"{"created": true}"#)).await;
    let base = switch.url().trim_end_matches("/hook").to_owned();
    let h = app
        .create_handler(json!({ "events_id": "clients.*", "target": switch.url(),
                                "filter": "data.currency == \"EUR\"",
                                "request": customers(&base) }))
        .await;
    let test = format!("/api/v1/handlers/{}/test", h["id"]);

    // The event type's sample data by default: a preview, nothing sent.
    let (status, report) = app
        .post(&test, json!({ "events_id": "clients.update" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["passed_filter"], true);
    assert_eq!(report["event"]["object_id"], 12, "the sample's id");
    assert_eq!(report["request"]["method"], "PUT");
    assert_eq!(
        report["request"]["url"],
        format!("{base}/api/v2/customers/12")
    );
    assert_eq!(
        serde_json::from_str::<Value>(report["request"]["body"].as_str().unwrap()).unwrap(),
        json!({ "name": "ACME Telecom Group Ltd", "plan": "basic" })
    );
    assert!(report["request"]["headers"]["webhook-signature"].is_string());
    assert_eq!(report["response"], Value::Null);
    assert!(switch.received().is_empty(), "a preview sends nothing");

    // An event the filter drops shows that, and no request.
    let (_, report) = app
        .post(
            &test,
            json!({ "events_id": "clients.update", "object_id": 5, "data": { "currency": "USD" } }),
        )
        .await;
    assert_eq!(
        (report["passed_filter"].clone(), report["request"].clone()),
        (json!(false), Value::Null)
    );

    // Sent once: the answer, one request at the receiver, a log row marked test.
    let (_, report) = app
        .post(&test, json!({ "events_id": "clients.delete", "object_id": 9, "data": { "currency": "EUR" }, "send": true }))
        .await;
    assert_eq!(report["response"]["status"], 201, "{report}");
    assert_eq!(report["response"]["body"], r#"{"created": true}"#);
    let got = switch.wait_for(1).await;
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("DELETE", "/api/v2/customers/9")
    );
    let rows = app
        .wait_executions(&format!("handler_id={}", h["id"]), 1)
        .await;
    assert_eq!(rows[0]["test"], true, "{}", rows[0]);
    assert_eq!(rows[0]["delivery_id"], Value::Null);

    // A draft is tested the same way, with its fields as a create takes them.
    let (status, report) = app
        .post("/api/v1/handlers/test", json!({
            "handler": { "name": "draft", "events_id": "clients.create", "target": switch.url() },
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["request"]["method"], "POST");
    let sent: Value = serde_json::from_str(report["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["event"]["events_id"], "clients.create");
    assert_eq!(sent["data"]["currency"], "EUR", "the sample data");
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 1, "a draft test saves nothing");

    // Bad input changes nothing and says what is wrong.
    for (path, body, expected, field) in [
        (
            test.clone(),
            json!({ "events_id": "nope.nope" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events_id",
        ),
        (
            test.clone(),
            json!({ "events_id": "importd.process_failed" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events_id",
        ),
        (
            test.clone(),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events_id",
        ),
        (
            test.clone(),
            json!({ "data": [1] , "events_id": "clients.update"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "data",
        ),
        (
            "/api/v1/handlers/test".to_owned(),
            json!({ "events_id": "clients.create" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "handler",
        ),
        (
            "/api/v1/handlers/test".to_owned(),
            json!({ "handler": { "name": "x", "events_id": "clients.create", "target": "ftp://x" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target",
        ),
    ] {
        let (status, body) = app.post(&path, body.clone()).await;
        let fields = assert_error(status, &body, expected, "invalid");
        assert!(fields[field].is_string(), "{path} {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/handlers/999/test",
            json!({ "events_id": "clients.update" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.post(&test, json!({ "event_id": "01NOPE" })).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        switch.received().len(),
        1,
        "only the one test that asked to send"
    );
}

#[tokio::test]
async fn a_before_stage_test_shows_the_verdict_and_the_data_after_the_handler() {
    let app = TestApp::spawn().await;
    let checker = Receiver::with(|r, _| {
        let mut data = r.json()["data"].clone();
        data["checked"] = json!(true);
        Reply::with_body(200, json!({ "data": data }).to_string())
    })
    .await;
    let refuser = Receiver::with(|_, _| Reply::with_body(403, r#"{"reason": "no credit"}"#)).await;
    let ok = app
        .create_handler(json!({ "stage": "before", "target": checker.url() }))
        .await;
    let no = app
        .create_handler(json!({ "stage": "before", "target": refuser.url() }))
        .await;

    let (_, report) = app
        .post(
            &format!("/api/v1/handlers/{}/test", ok["id"]),
            json!({ "send": true }),
        )
        .await;
    assert_eq!(report["verdict"]["allowed"], true, "{report}");
    assert_eq!(report["verdict"]["data"]["checked"], true);
    assert_eq!(
        report["verdict"]["data"]["currency"], "EUR",
        "the sample data, changed"
    );

    let (_, report) = app
        .post(
            &format!("/api/v1/handlers/{}/test", no["id"]),
            json!({ "send": true }),
        )
        .await;
    assert_eq!(report["verdict"]["allowed"], false, "{report}");
    assert_eq!(report["verdict"]["reason"], "no credit");
}

#[tokio::test]
async fn a_dry_run_shows_what_a_filter_and_template_would_do_to_recent_history() {
    let app = TestApp::spawn().await;
    let switch = Receiver::ok().await;
    let base = switch.url().trim_end_matches("/hook").to_owned();
    // History: 30 client events, a third in USD, one without a currency.
    let logger = app
        .create_handler(json!({ "events_id": "clients.*", "target": switch.url() }))
        .await;
    for n in 0..30 {
        let currency = if n % 3 == 0 { "USD" } else { "EUR" };
        app.emit(
            "clients.update",
            json!(n),
            json!({ "name": format!("c{n}"), "currency": currency }),
        )
        .await;
    }
    app.emit(
        "clients.update",
        json!(99),
        json!({ "name": "no currency" }),
    )
    .await;
    app.emit("clients.accounts.create", json!(5), json!({ "id": 5 }))
        .await;

    let draft = json!({
        "name": "EUR only", "events_id": "clients.update", "target": switch.url(),
        "filter": "data.currency == \"EUR\"", "request": customers(&base),
    });
    let (status, run) = app
        .post(
            "/api/v1/handlers/dry-run",
            json!({ "handler": draft, "limit": 1000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["examined"], 31, "only clients.update: {run}");
    assert_eq!(run["passed"], 20);
    assert_eq!(run["filter_errors"], 1, "the event without a currency");
    let samples = run["samples"].as_array().unwrap();
    assert!(samples.len() <= 5 && !samples.is_empty());
    let with_request = samples.iter().find(|s| s["request"].is_object()).unwrap();
    assert_eq!(with_request["request"]["method"], "PUT");
    assert!(
        with_request["request"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/api/v2/customers/"))
    );

    // The stored handler, limited to the newest ten; nothing is sent.
    // (Once the history's own deliveries have all arrived.)
    let before = switch.wait_for(32).await.len();
    let (_, run) = app
        .post(
            &format!("/api/v1/handlers/{}/dry-run", logger["id"]),
            json!({ "limit": 10 }),
        )
        .await;
    assert_eq!(
        (run["examined"].clone(), run["passed"].clone()),
        (json!(10), json!(10)),
        "{run}"
    );
    assert_eq!(switch.received().len(), before);

    for body in [json!({ "limit": 0 }), json!({ "limit": 1001 })] {
        let (status, body) = app
            .post(&format!("/api/v1/handlers/{}/dry-run", logger["id"]), body)
            .await;
        let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(fields["limit"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn the_handler_form_dry_runs_a_draft_over_recent_events_without_saving() {
    let app = TestApp::spawn().await;
    let switch = Receiver::ok().await;
    for n in 0..4 {
        let currency = if n == 0 { "USD" } else { "EUR" };
        app.emit("clients.create", json!(n), json!({ "currency": currency }))
            .await;
    }
    let client = crate::web::web_client();
    let (cookie, csrf) = crate::web::login(&app, &client).await;
    let page = client
        .post(app.url("/handlers"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "EUR only"),
            ("events_id", "clients.create"),
            ("stage", "after"),
            ("status", "enabled"),
            ("kind", "http"),
            ("target", &switch.url()),
            ("filter", "data.currency == \"EUR\""),
            ("dry_run", "1"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Of the last 4 logged events"), "{page}");
    assert!(page.contains("<strong>3</strong> would be sent"), "{page}");
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], 0, "nothing saved");
}
