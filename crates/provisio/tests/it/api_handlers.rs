//! The handlers API: CRUD, defaults, filters, pagination, validation, secrets.

use std::os::unix::fs::PermissionsExt;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_handler_is_created_with_the_documented_defaults() {
    let app = TestApp::spawn().await;
    let (status, h) = app
        .post("/api/v1/handlers", json!({ "name": "Softswitch sync", "events_id": "clients.create", "target": "https://switch.example.net/hooks/provisio" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{h}");
    assert!(h["id"].as_i64().unwrap() > 0);
    for (field, value) in [
        ("name", json!("Softswitch sync")),
        ("events_id", json!("clients.create")),
        ("stage", json!("after")),
        ("status", json!("enabled")),
        ("priority", json!(100)),
        ("kind", json!("http")),
        ("target", json!("https://switch.example.net/hooks/provisio")),
        ("headers", json!({})),
        ("timeout_ms", json!(10000)),
        ("max_attempts", json!(10)),
        ("ordered", json!(true)),
        ("on_failure", json!("forbid")),
    ] {
        assert_eq!(h[field], value, "{field} in {h}");
    }
    assert!(h["created_at"].is_string() && h["updated_at"].is_string());
    assert!(
        h.get("secret").is_none(),
        "the secret must not be in the handler: {h}"
    );

    let (_, before) = app
        .post("/api/v1/handlers", json!({ "name": "Check", "events_id": "clients.create", "stage": "before", "target": "http://127.0.0.1:1/x" }))
        .await;
    assert_eq!(
        before["timeout_ms"], 5000,
        "before-stage handlers default to 5 s"
    );
}

#[tokio::test]
async fn a_handler_can_be_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let h = app
        .create_handler(
            json!({ "target": "http://127.0.0.1:1/a", "headers": { "X-Api-Key": "k1" } }),
        )
        .await;
    let id = h["id"].as_i64().unwrap();
    let path = format!("/api/v1/handlers/{id}");

    let (status, read) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, h);

    let (status, updated) = app
        .patch(
            &path,
            json!({ "priority": 5, "status": "disabled", "name": "Renamed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["priority"], 5);
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(
        updated["target"], "http://127.0.0.1:1/a",
        "fields left out stay"
    );
    assert_eq!(updated["headers"], json!({ "X-Api-Key": "k1" }));
    assert_eq!(updated["created_at"], h["created_at"]);

    let (status, body) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = app.get(&path).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.delete(&path).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.patch(&path, json!({ "priority": 1 })).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_list_filters_and_paginates() {
    let app = TestApp::spawn().await;
    let mk = |name: &str, events_id: &str, extra: Value| {
        let mut body =
            json!({ "name": name, "events_id": events_id, "target": "http://127.0.0.1:1/x" });
        merge(&mut body, extra);
        body
    };
    for body in [
        mk("Switch create", "clients.create", json!({ "priority": 10 })),
        mk("CRM all clients", "clients.*", json!({ "priority": 20 })),
        mk(
            "Audit everything",
            "*",
            json!({ "priority": 30, "status": "disabled" }),
        ),
        mk(
            "Balance guard",
            "clients.balance_zero",
            json!({ "stage": "before", "priority": 5 }),
        ),
        mk(
            "Old archive",
            "clients.create",
            json!({ "status": "archived", "priority": 40 }),
        ),
        mk(
            "Import watcher",
            "importd.process_failed",
            json!({ "priority": 50 }),
        ),
    ] {
        let (status, resp) = app.post("/api/v1/handlers", body).await;
        assert_eq!(status, StatusCode::CREATED, "{resp}");
    }
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let (_, all) = app.get("/api/v1/handlers").await;
    assert_eq!(all["total"], 6);
    assert_eq!(names(&all)[0], "Balance guard", "ordered by priority");

    let (_, body) = app.get("/api/v1/handlers?events_id=clients.create").await;
    assert_eq!(
        names(&body),
        [
            "Switch create",
            "CRM all clients",
            "Audit everything",
            "Old archive"
        ]
    );
    let (_, body) = app.get("/api/v1/handlers?events_id=clients.*").await;
    assert_eq!(names(&body), ["CRM all clients", "Audit everything"]);
    let (_, body) = app.get("/api/v1/handlers?status=disabled").await;
    assert_eq!(names(&body), ["Audit everything"]);
    let (_, body) = app.get("/api/v1/handlers?stage=before").await;
    assert_eq!(names(&body), ["Balance guard"]);
    let (_, body) = app.get("/api/v1/handlers?kind=script").await;
    assert_eq!(body["total"], 0);
    let (_, body) = app.get("/api/v1/handlers?q=SWITCH").await;
    assert_eq!(names(&body), ["Switch create"]);
    let (_, body) = app.get("/api/v1/handlers?q=%25").await;
    assert_eq!(body["total"], 0, "LIKE wildcards are matched literally");

    let (_, page1) = app.get("/api/v1/handlers?per_page=4&page=1").await;
    let (_, page2) = app.get("/api/v1/handlers?per_page=4&page=2").await;
    assert_eq!(page1["total"], 6);
    assert_eq!(page2["total"], 6, "total counts the whole filtered set");
    assert_eq!(names(&page1).len(), 4);
    assert_eq!(names(&page2).len(), 2);
    let (_, filtered) = app
        .get("/api/v1/handlers?events_id=clients.create&per_page=1&page=2")
        .await;
    assert_eq!(filtered["total"], 4);
    assert_eq!(names(&filtered), ["CRM all clients"]);

    for bad in [
        "status=sleeping",
        "stage=middle",
        "kind=ftp",
        "page=0",
        "per_page=0",
        "per_page=100000",
        "page=abc",
    ] {
        let (status, body) = app.get(&format!("/api/v1/handlers?{bad}")).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
}

#[tokio::test]
async fn each_invalid_field_is_a_422_naming_it_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let long_name = "x".repeat(201);
    let outside = tempfile::NamedTempFile::new().unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "" }), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": long_name }), "name"),
        (json!({ "events_id": "clients.nope" }), "events_id"),
        (json!({ "events_id": "Clients.Create" }), "events_id"),
        (json!({ "events_id": "clients.**" }), "events_id"),
        (json!({ "events_id": "nothing.*" }), "events_id"),
        (json!({ "stage": "middle" }), "stage"),
        (json!({ "status": "sleeping" }), "status"),
        (json!({ "kind": "ftp" }), "kind"),
        (json!({ "priority": 1.5 }), "priority"),
        (json!({ "priority": "10" }), "priority"),
        (json!({ "priority": 99999999999i64 }), "priority"),
        (json!({ "target": "ftp://example.net/x" }), "target"),
        (json!({ "target": "not a url" }), "target"),
        (
            json!({ "kind": "script", "target": "../outside.sh" }),
            "target",
        ),
        (
            json!({ "kind": "script", "target": outside.path().to_str().unwrap() }),
            "target",
        ),
        (
            json!({ "kind": "script", "target": "missing.sh" }),
            "target",
        ),
        (json!({ "timeout_ms": 0 }), "timeout_ms"),
        (json!({ "timeout_ms": 10_000_000 }), "timeout_ms"),
        (json!({ "max_attempts": 0 }), "max_attempts"),
        (json!({ "max_attempts": 1000 }), "max_attempts"),
        (json!({ "on_failure": "maybe" }), "on_failure"),
        (
            json!({ "headers": { "webhook-signature": "forged" } }),
            "headers",
        ),
        (json!({ "headers": { "bad header": "x" } }), "headers"),
        (json!({ "headers": { "X-A": 1 } }), "headers.X-A"),
        (json!({ "ordered": "yes" }), "ordered"),
        (json!({ "colour": "red" }), "colour"),
        (json!({ "args": ["x"] }), "args"),
    ];
    for (extra, field) in cases {
        let mut body =
            json!({ "name": "h", "events_id": "clients.create", "target": "http://127.0.0.1:1/x" });
        merge(&mut body, extra.clone());
        let (status, resp) = app.post("/api/v1/handlers", body).await;
        let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(
            fields.get(field).is_some(),
            "{extra} should be refused on {field}: {resp}"
        );
    }
    for missing in ["name", "events_id", "target"] {
        let mut body =
            json!({ "name": "h", "events_id": "clients.create", "target": "http://127.0.0.1:1/x" });
        body.as_object_mut().unwrap().remove(missing);
        let (status, resp) = app.post("/api/v1/handlers", body).await;
        let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(fields[missing], "is required", "{resp}");
    }
    let (status, resp) = app.post_raw("/api/v1/handlers", "{\"name\": ").await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "malformed");
    let (status, resp) = app.post_raw("/api/v1/handlers", "[1, 2]").await;
    assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");

    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(
        list["total"], 0,
        "a rejected request stored a handler: {list}"
    );
}

#[tokio::test]
async fn several_problems_are_reported_together() {
    let app = TestApp::spawn().await;
    let (status, resp) = app
        .post("/api/v1/handlers", json!({ "name": "", "events_id": "clients.nope", "target": "ftp://x", "timeout_ms": 1 }))
        .await;
    let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    for field in ["name", "events_id", "target", "timeout_ms"] {
        assert!(fields.get(field).is_some(), "{field} missing from {resp}");
    }
}

#[tokio::test]
async fn a_rejected_update_changes_nothing() {
    let app = TestApp::spawn().await;
    let h = app
        .create_handler(json!({ "target": "http://127.0.0.1:1/a" }))
        .await;
    let path = format!("/api/v1/handlers/{}", h["id"]);
    for patch in [
        json!({ "priority": "high" }),
        json!({ "target": "gopher://x" }),
        json!({ "name": "" }),
        json!({ "id": 99 }),
    ] {
        let (status, resp) = app.patch(&path, patch.clone()).await;
        assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (status, resp) = app.call(reqwest::Method::PATCH, &path, None).await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "malformed");
    let (_, after) = app.get(&path).await;
    assert_eq!(after, h);
}

#[tokio::test]
async fn script_handlers_must_name_an_executable_inside_the_scripts_directory() {
    let app = TestApp::spawn().await;
    let scripts = app.scripts_dir();
    let script = scripts.join("sync.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = scripts.join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/bin/sh", scripts.join("escape")).unwrap();

    let h = app
        .create_handler(
            json!({ "kind": "script", "target": "sync.sh", "args": ["--mode", "full"] }),
        )
        .await;
    assert_eq!(h["kind"], "script");
    assert_eq!(h["args"], json!(["--mode", "full"]));
    for target in ["plain.sh", "escape", "../sync.sh", "/bin/sh", "nope.sh"] {
        let (status, resp) = app
            .post("/api/v1/handlers", json!({ "name": "s", "events_id": "clients.create", "kind": "script", "target": target }))
            .await;
        let fields = assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(fields.get("target").is_some(), "{target}: {resp}");
    }
}

#[tokio::test]
async fn each_handler_has_a_readable_and_rotatable_signing_secret() {
    let app = TestApp::spawn().await;
    let h = app
        .create_handler(json!({ "target": "http://127.0.0.1:1/a" }))
        .await;
    let (status, first) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = first["secret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_"), "{first}");
    let (status, rotated) = app
        .post(
            &format!("/api/v1/handlers/{}/secret/rotate", h["id"]),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rotated = rotated["secret"].as_str().unwrap();
    assert!(rotated.starts_with("whsec_") && rotated != first);
    let (_, again) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    assert_eq!(again["secret"], rotated);
    let (_, list) = app.get("/api/v1/handlers").await;
    assert!(
        !list.to_string().contains("whsec_"),
        "secrets leak into the list"
    );
    let (status, resp) = app.get("/api/v1/handlers/999/secret").await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, "not_found");
}
