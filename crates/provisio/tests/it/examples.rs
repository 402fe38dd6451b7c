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

/// Starts `examples/softswitch/switch.py` and returns it with its base URL.
fn start_switch(secret: &str) -> (std::process::Child, String) {
    let mut child = std::process::Command::new("python3")
        .arg(example("softswitch/switch.py"))
        .args(["--port", "0", "--secret", secret])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the example");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    (child, url)
}

#[tokio::test]
async fn the_example_softswitch_handler_provisions_its_rest_api_without_an_adapter() {
    let app = TestApp::spawn().await;
    // The handler as the example ships it, pointed at this test's switch.
    let shipped = std::fs::read_to_string(example("softswitch/handler.json")).unwrap();
    let h = app
        .create_handler(
            serde_json::from_str(&shipped.replace("127.0.0.1:9200", "127.0.0.1:1")).unwrap(),
        )
        .await;
    let (_, secret) = app
        .get(&format!("/api/v1/handlers/{}/secret", h["id"]))
        .await;
    let (mut switch, base) = start_switch(secret["secret"].as_str().unwrap());
    let handler: serde_json::Value =
        serde_json::from_str(&shipped.replace("http://127.0.0.1:9200", &base)).unwrap();
    let (status, body) = app
        .patch(
            &format!("/api/v1/handlers/{}", h["id"]),
            json!({ "target": handler["target"], "request": handler["request"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.emit(
        "clients.create",
        json!(12),
        json!({ "name": "ACME", "currency": "USD" }),
    )
    .await;
    app.emit("clients.update", json!(12), json!({ "name": "ACME Group" }))
        .await;
    app.emit("clients.create", json!(13), json!({ "name": "Globex" }))
        .await;
    app.emit(
        "clients.create",
        json!(14),
        json!({ "name": "QA", "status": "test" }),
    )
    .await;
    app.emit("clients.balance_zero", json!(13), json!({})).await;
    app.emit("clients.delete", json!(13), json!({})).await;

    let client = http_client();
    let calls: Vec<String> = loop {
        let calls: Vec<String> = client
            .get(format!("{base}/calls"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if calls.len() >= 4 {
            break calls;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // The test client and the balance event are filtered out; each object's
    // calls come in emit order (a POST before its PUT or DELETE).
    let mut sorted = calls.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "DELETE /api/v2/customers/13",
            "POST /api/v2/customers",
            "POST /api/v2/customers",
            "PUT /api/v2/customers/12",
        ],
        "{calls:?}"
    );
    let first_post = calls.iter().position(|c| c.starts_with("POST")).unwrap();
    for later in ["PUT /api/v2/customers/12", "DELETE /api/v2/customers/13"] {
        assert!(
            calls.iter().position(|c| c == later).unwrap() > first_post,
            "{calls:?}"
        );
    }
    let customers: serde_json::Value = client
        .get(format!("{base}/api/v2/customers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        customers,
        json!({ "12": { "id": 12, "name": "ACME Group", "currency": "EUR" } })
    );
    let rows = app
        .wait_executions(&format!("handler_id={}", h["id"]), 4)
        .await;
    assert!(
        rows.iter().all(|r| r["status"] == "success"),
        "signatures verified: {rows:?}"
    );
    let _ = switch.kill();
    let _ = switch.wait();
}
