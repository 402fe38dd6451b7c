//! The OpenAPI document: served without a token, complete, and checked by
//! schemathesis against the live server where it is installed.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/api/v1/event-types", "get"),
        ("/api/v1/event-types", "post"),
        ("/api/v1/handlers", "get"),
        ("/api/v1/handlers", "post"),
        ("/api/v1/handlers/{id}", "get"),
        ("/api/v1/handlers/{id}", "patch"),
        ("/api/v1/handlers/{id}", "delete"),
        ("/api/v1/handlers/{id}/secret", "get"),
        ("/api/v1/handlers/{id}/secret/rotate", "post"),
        ("/api/v1/events", "post"),
        ("/api/v1/events/before", "post"),
        ("/api/v1/events/{id}", "get"),
        ("/api/v1/executions", "get"),
        ("/api/v1/executions/{id}", "get"),
        ("/api/v1/deliveries/{id}", "get"),
        ("/api/v1/deliveries/{id}/redeliver", "post"),
    ];
    for (path, method) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} documents no 401"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let handler_in = &doc["components"]["schemas"]["HandlerIn"]["properties"];
    for field in [
        "name",
        "events_id",
        "stage",
        "status",
        "priority",
        "kind",
        "target",
        "timeout_ms",
        "max_attempts",
        "ordered",
        "on_failure",
        "on_exhausted",
        "conflate",
    ] {
        assert!(handler_in[field].is_object(), "HandlerIn.{field} missing");
    }
    let docs = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger-ui"),
        "the docs page is served by the binary"
    );
}

/// A property-based run of schemathesis against the live server: no 5xx, and
/// no response that breaks the documented schema.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI needs schemathesis (pip install schemathesis)");
        }
        eprintln!(
            "skipping the schemathesis run: schemathesis is not installed (pip install schemathesis)"
        );
        return;
    }
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(serde_json::json!({ "events_id": "*", "target": receiver.url() }))
        .await;
    let spec = app.url("/api/openapi.json");
    let url = app.url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .args(["run", &spec, "--url", &url, "--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--max-examples", "25", "--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
}

/// The document's 3.1 `webhooks` describe what a handler receives, and the
/// description matches what a real receiver gets: the payload's fields and
/// every signature header.
#[tokio::test]
async fn the_openapi_document_describes_what_a_handler_receives() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    app.create_handler(serde_json::json!({ "target": receiver.url() }))
        .await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after = &doc["webhooks"]["after-stage-delivery"]["post"];
    let before = &doc["webhooks"]["before-stage-call"]["post"];
    for op in [after, before] {
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/HandlerPayload"
        );
    }
    assert_eq!(
        before["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BeforeReply"
    );
    assert!(before["responses"]["403"].is_object());
    assert!(after["responses"]["2XX"].is_object());
    let schemas = &doc["components"]["schemas"];
    for field in ["data", "allow", "reason"] {
        assert!(
            schemas["BeforeReply"]["properties"][field].is_object(),
            "BeforeReply.{field}"
        );
    }

    app.emit(
        "clients.create",
        serde_json::json!(12),
        serde_json::json!({ "name": "ACME" }),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let payload = got[0].json();
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let documented = |name: &str| keys(&schemas[name]["properties"]);
    assert_eq!(keys(&payload), documented("HandlerPayload"));
    assert_eq!(keys(&payload["event"]), documented("PayloadEvent"));
    for op in [after, before] {
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "user-agent",
        ] {
            assert!(headers.contains(&name), "{name} is not documented");
            assert!(!got[0].header(name).is_empty(), "{name} is not sent");
        }
    }
}
