//! The examples in `examples/` work against a real server, as the README says.

use std::io::BufRead;
use std::path::PathBuf;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::*;

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
}

fn install(app: &TestApp, name: &str) {
    let body = std::fs::read_to_string(example(&format!("scripts/{name}"))).unwrap();
    app.write_script(name, &body);
}

#[tokio::test]
async fn the_example_after_stage_script_records_each_event() {
    let app = TestApp::spawn().await;
    install(&app, "provision-client.sh");
    let log = app.dir.path().join("provisioned.log");
    app.create_handler(json!({ "events_id": "clients.*", "kind": "script", "target": "provision-client.sh", "args": [log.to_str().unwrap()] }))
        .await;
    app.emit("clients.create", json!(12), json!({ "name": "ACME" }))
        .await;
    let row = app.wait_executions("", 1).await.remove(0);
    assert_eq!(row["status"], "success", "{row}");
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.contains("clients.create object=12") && line.contains("\"name\":\"ACME\""),
        "{line}"
    );
}

#[tokio::test]
async fn the_example_before_stage_script_normalizes_and_forbids() {
    let app = TestApp::spawn().await;
    install(&app, "normalize-client.py");
    app.create_handler(
        json!({ "stage": "before", "kind": "script", "target": "normalize-client.py" }),
    )
    .await;
    let ask = |name: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post("/api/v1/events/before", json!({ "events_id": "clients.create", "object_id": 1, "data": { "name": name } }))
                .await;
            assert_eq!(status, StatusCode::OK);
            body
        }
    };
    let verdict = ask("  ACME  ").await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    assert_eq!(verdict["data"]["name"], "ACME");
    let verdict = ask("   ").await;
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["reason"], "a client needs a name");
}

#[tokio::test]
async fn the_example_before_stage_http_handler_verifies_and_decides() {
    let app = TestApp::spawn().await;
    let h = app
        .create_handler(
            json!({ "stage": "before", "events_id": "clients.*", "target": "http://127.0.0.1:1/" }),
        )
        .await;
    let (_, secret) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    let mut child = std::process::Command::new("python3")
        .arg(example("before_handler.py"))
        .args([
            "--port",
            "0",
            "--secret",
            secret["secret"].as_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the example");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let (status, _) = app
        .patch(
            &format!("/api/v1/handlers/{}", h["id"]),
            json!({ "target": url }),
        )
        .await;
    assert_eq!(status, 200);

    let (_, verdict) = app
        .post("/api/v1/events/before", json!({ "events_id": "clients.update", "object_id": 1, "data": { "email": "Ops@ACME.example" } }))
        .await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    assert_eq!(verdict["data"]["email"], "ops@acme.example");
    let (_, verdict) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": 1, "data": { "name": "" } }),
        )
        .await;
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["reason"], "a client needs a name");

    // A wrong secret makes the handler refuse, which forbids by default.
    let (_, rotated) = app
        .post(
            &format!("/api/v1/handlers/{}/secret/rotate", h["id"]),
            json!({}),
        )
        .await;
    assert!(rotated["secret"].is_string());
    let (_, verdict) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.update", "object_id": 1, "data": {} }),
        )
        .await;
    assert_eq!(verdict["allowed"], false, "{verdict}");
    let _ = child.kill();
    let _ = child.wait();
}
