//! The event catalog: seeded built-ins and custom types.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::web::{get_page, login, web_client};

#[tokio::test]
async fn the_builtin_catalog_is_seeded() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/event-types").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 19, "{body}");
    let items = body["items"].as_array().unwrap();
    let delete = items.iter().find(|t| t["id"] == "clients.delete").unwrap();
    assert_eq!(delete["group"], "Clients");
    assert_eq!(delete["empty_data"], true);
    assert_eq!(delete["builtin"], true);
    let renew = items
        .iter()
        .find(|t| t["id"] == "clients.subscriptions.renew")
        .unwrap();
    assert_eq!(renew["group"], "Subscriptions");
    assert_eq!(renew["empty_data"], false);
    for id in [
        "email_rates_manager.import",
        "importd.process_success",
        "importd.process_failed",
        "clients.balance_notzero",
        "provisio.handler.paused",
    ] {
        assert!(items.iter().any(|t| t["id"] == id), "{id} missing");
    }
}

#[tokio::test]
async fn a_custom_type_can_be_added_and_used_by_handlers() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post("/api/v1/event-types", json!({ "id": "billing.invoice_paid", "group": "Billing", "description": "An invoice was paid" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({ "id": "billing.invoice_paid", "group": "Billing", "description": "An invoice was paid", "empty_data": false, "builtin": false, "example": null })
    );
    let (_, list) = app.get("/api/v1/event-types").await;
    assert_eq!(list["total"], 20);
    app.create_handler(
        json!({ "events_id": "billing.invoice_paid", "target": "http://127.0.0.1:1/h" }),
    )
    .await;
    app.create_handler(json!({ "events_id": "billing.*", "target": "http://127.0.0.1:1/h" }))
        .await;
}

#[tokio::test]
async fn bad_and_duplicate_types_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    for (body, field) in [
        (json!({ "id": "Billing.Paid" }), "id"),
        (json!({ "id": "billing..paid" }), "id"),
        (json!({ "id": "" }), "id"),
        (json!({ "id": "billing.paid", "group": "" }), "group"),
        (json!({ "id": "billing.paid", "colour": "red" }), "colour"),
        (json!({ "group": "Billing" }), "id"),
        (json!({ "id": 12 }), "id"),
    ] {
        let (status, resp) = app.post("/api/v1/event-types", body.clone()).await;
        let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(fields.get(field).is_some(), "{body} → {resp}");
    }
    let (status, resp) = app
        .post("/api/v1/event-types", json!({ "id": "clients.create" }))
        .await;
    assert_error(status, &resp, StatusCode::CONFLICT, "conflict");
    let (status, resp) = app.post_raw("/api/v1/event-types", "{oops").await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "malformed");
    let (_, list) = app.get("/api/v1/event-types").await;
    assert_eq!(list["total"], 19, "a rejected request changed the catalog");
}

#[tokio::test]
async fn every_type_shows_sample_data_and_a_custom_type_may_bring_its_own() {
    let app = TestApp::spawn().await;
    let (_, body) = app.get("/api/v1/event-types").await;
    let items = body["items"].as_array().unwrap();
    let create = items.iter().find(|t| t["id"] == "clients.create").unwrap();
    assert_eq!(create["example"]["id"], 12, "{create}");
    assert!(create["example"]["currency"].is_string());
    let delete = items.iter().find(|t| t["id"] == "clients.delete").unwrap();
    assert_eq!(delete["example"], json!({}), "its data is always empty");
    assert!(items.iter().all(|t| t["example"].is_object()), "{body}");

    let (status, body) = app
        .post(
            "/api/v1/event-types",
            json!({ "id": "billing.invoice_paid", "example": [1, 2] }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(fields["example"], "must be a JSON object");
    let (status, _) = app
        .post(
            "/api/v1/event-types",
            json!({ "id": "billing.invoice_paid", "example": { "invoice": 7, "total": 9.5 } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = app.get("/api/v1/event-types").await;
    let paid = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "billing.invoice_paid")
        .unwrap()
        .clone();
    assert_eq!(paid["example"], json!({ "invoice": 7, "total": 9.5 }));

    // The handler form shows them, to write a filter against.
    let client = web_client();
    let (cookie, _) = login(&app, &client).await;
    let page = get_page(&app, &client, &cookie, "/handlers/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sample data of each event type"), "{page}");
    assert!(page.contains("billing.invoice_paid"));
    assert!(page.contains("currency"), "the samples are on the page");
}
