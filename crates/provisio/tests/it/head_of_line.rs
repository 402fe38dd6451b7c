//! The head-of-line policy of ordered handlers (`on_exhausted`: a blocked
//! line waits until retried or skipped, or the old skip), against real
//! loopback receivers, on SQLite and on two PostgreSQL nodes. Conflation is
//! in `conflation.rs`, which shares this file's helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A receiver that answers 500 to object 1 until `healthy` is set, and 200
/// to everything else.
async fn failing_for_object_1(healthy: Arc<AtomicBool>) -> Receiver {
    Receiver::with(move |r, _| {
        let object_1 = r.json()["event"]["object_id"] == 1;
        Reply::status(if object_1 && !healthy.load(Ordering::SeqCst) {
            500
        } else {
            200
        })
    })
    .await
}

/// `(object, data.step)` of every request a receiver answered with `status`.
pub(crate) fn answered(receiver: &Receiver, status: u16) -> Vec<(i64, i64)> {
    receiver
        .received()
        .iter()
        .filter(|r| r.status == status)
        .map(|r| {
            let body = r.json();
            (
                body["event"]["object_id"].as_i64().unwrap(),
                body["data"]["step"].as_i64().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn first_delivery(event: &Value) -> &Value {
    &event["deliveries"][0]
}

pub(crate) fn delivery_id(event: &Value) -> String {
    first_delivery(event)["id"].as_str().unwrap().to_owned()
}

/// Emits `step` for `object` and returns the event id.
pub(crate) async fn emit_step(app: &TestApp, object: i64, step: i64) -> String {
    let event = app
        .emit("clients.update", json!(object), json!({ "step": step }))
        .await;
    event["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn wait_state(app: &TestApp, event_id: &str, state: &str) -> Value {
    app.wait_for_event(event_id, |e| first_delivery(e)["state"] == state)
        .await
}

#[tokio::test]
async fn an_exhausted_delivery_blocks_its_objects_line_until_retried() {
    let app = TestApp::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = failing_for_object_1(healthy.clone()).await;
    let handler = app
        .create_handler(
            json!({ "events_id": "clients.*", "target": receiver.url(), "max_attempts": 2 }),
        )
        .await;
    assert_eq!(handler["on_exhausted"], "block", "the default");
    assert_eq!(handler["conflate"], false);

    let create = emit_step(&app, 1, 0).await;
    let update = emit_step(&app, 1, 1).await;
    let blocked = wait_state(&app, &create, "blocked").await;
    assert_eq!(first_delivery(&blocked)["attempts"], 2);
    assert!(first_delivery(&blocked)["finished_at"].is_null());
    let waiting = wait_state(&app, &update, "waiting").await;
    assert_eq!(
        first_delivery(&waiting)["blocked_by"],
        delivery_id(&blocked),
        "the waiting one links its blocker"
    );

    // Other objects go on; once one emitted after the block has arrived,
    // object 1's update has still not been sent.
    let other = emit_step(&app, 2, 0).await;
    wait_state(&app, &other, "success").await;
    let more = emit_step(&app, 1, 2).await;
    assert_eq!(
        first_delivery(&wait_state(&app, &more, "waiting").await)["blocked_by"],
        delivery_id(&blocked)
    );
    assert_eq!(answered(&receiver, 500), [(1, 0), (1, 0)]);
    assert_eq!(answered(&receiver, 200), [(2, 0)]);

    // Retry: the blocked delivery gets a fresh round, and once it succeeds
    // the line moves on in order.
    healthy.store(true, Ordering::SeqCst);
    let (status, retried) = app
        .post(
            &format!("/api/v1/deliveries/{}/redeliver", delivery_id(&blocked)),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["state"], "pending");
    wait_state(&app, &more, "success").await;
    for id in [&create, &update] {
        wait_state(&app, id, "success").await;
    }
    assert_eq!(answered(&receiver, 200), [(2, 0), (1, 0), (1, 1), (1, 2)]);
}

#[tokio::test]
async fn a_skip_handler_fails_the_exhausted_delivery_and_sends_the_next() {
    let app = TestApp::spawn().await;
    let receiver = failing_for_object_1(Arc::new(AtomicBool::new(false))).await;
    let handler = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url(),
                                "max_attempts": 2, "on_exhausted": "skip" }))
        .await;
    assert_eq!(handler["on_exhausted"], "skip");
    let create = emit_step(&app, 1, 0).await;
    let update = emit_step(&app, 1, 1).await;
    let failed = wait_state(&app, &create, "failed").await;
    assert!(first_delivery(&failed)["finished_at"].is_string());
    // The update is sent (and fails too, being for object 1): nothing waits.
    wait_state(&app, &update, "failed").await;
    assert_eq!(answered(&receiver, 500), [(1, 0), (1, 0), (1, 1), (1, 1)]);
}

#[tokio::test]
async fn skipping_a_blocked_delivery_records_who_and_releases_the_next() {
    // A token of its own, created before the server starts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    let (ok, token, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "ops-alice",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    let app = TestApp::spawn_in(dir).await;
    let receiver = failing_for_object_1(Arc::new(AtomicBool::new(false))).await;
    app.create_handler(
        json!({ "events_id": "clients.*", "target": receiver.url(), "max_attempts": 1 }),
    )
    .await;
    let create = emit_step(&app, 1, 0).await;
    let update = emit_step(&app, 1, 1).await;
    let blocked = delivery_id(&wait_state(&app, &create, "blocked").await);
    let waiting = delivery_id(&wait_state(&app, &update, "waiting").await);

    // Bad input changes nothing.
    let (status, body) = app
        .post(
            "/api/v1/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV/skip",
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post(&format!("/api/v1/deliveries/{waiting}/skip"), json!({}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not blocked"),
        "{body}"
    );
    assert_eq!(
        first_delivery(&wait_state(&app, &update, "waiting").await)["blocked_by"],
        blocked
    );

    let resp = app
        .client
        .post(app.url(&format!("/api/v1/deliveries/{blocked}/skip")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, skipped) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{skipped}");
    assert_eq!(skipped["state"], "failed");
    assert_eq!(skipped["last_error"], "skipped by ops-alice");
    assert!(skipped["finished_at"].is_string());
    // The next one of the line is released (and, object 1 still failing,
    // blocks in its turn).
    let next = wait_state(&app, &update, "blocked").await;
    assert_eq!(first_delivery(&next)["blocked_by"], Value::Null);
    assert_eq!(answered(&receiver, 500), [(1, 0), (1, 1)]);
    // Skipping it twice is a conflict.
    let (status, body) = app
        .post(&format!("/api/v1/deliveries/{blocked}/skip"), json!({}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn a_bad_on_exhausted_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post(
            "/api/v1/handlers",
            json!({ "name": "x", "events_id": "clients.create", "target": "http://127.0.0.1:9/",
                    "on_exhausted": "retry-forever" }),
        )
        .await;
    let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(fields.get("on_exhausted").is_some(), "{body}");
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 0);

    let handler = app
        .create_handler(
            json!({ "target": "http://127.0.0.1:9/", "on_exhausted": "skip", "conflate": true }),
        )
        .await;
    let path = format!("/api/v1/handlers/{}", handler["id"]);
    let (status, body) = app.patch(&path, json!({ "on_exhausted": "never" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = app.patch(&path, json!({ "conflate": "yes" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (_, stored) = app.get(&path).await;
    assert_eq!(
        (&stored["on_exhausted"], &stored["conflate"]),
        (&json!("skip"), &json!(true))
    );
    let (status, changed) = app
        .patch(&path, json!({ "on_exhausted": "block", "conflate": false }))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (&changed["on_exhausted"], &changed["conflate"]),
        (&json!("block"), &json!(false))
    );
}

/// Two nodes on one PostgreSQL database: a line blocked through node A is
/// respected by node B, which neither releases nor sends the later delivery,
/// until a skip through B moves it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_blocked_line_is_respected_across_two_nodes() {
    use provisio_store::postgres::scratch::ScratchDatabase;
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let env: &[(&str, &str)] = &[
        ("PROVISIO_ADMIN_TOKEN", ADMIN_TOKEN),
        ("PROVISIO_RETRY_SCHEDULE", "50ms"),
        ("PROVISIO_LOG", "warn,provisio=info"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Binary::serve_on(db.url(), dir_a.path(), env);
    let b = Binary::serve_on(db.url(), dir_b.path(), env);
    let client = http_client();
    let call = |url: String, body: Option<Value>| {
        let client = client.clone();
        async move {
            let req = match body {
                Some(body) => client.post(url).json(&body),
                None => client.get(url),
            };
            read(req.bearer_auth(ADMIN_TOKEN).send().await.unwrap()).await
        }
    };
    let receiver = failing_for_object_1(Arc::new(AtomicBool::new(false))).await;
    let (status, handler) = call(
        a.url("/api/v1/handlers"),
        Some(
            json!({ "name": "sync", "events_id": "clients.*", "target": receiver.url(),
                     "timeout_ms": 1000, "max_attempts": 2 }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{handler}");
    // Node B learns of the handler through NOTIFY, within the promised second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let emit = |node: &Binary, object: i64, step: i64| {
        call(
            node.url("/api/v1/events"),
            Some(
                json!({ "events_id": "clients.update", "object_id": object, "data": { "step": step } }),
            ),
        )
    };
    let wait = |node: &Binary, id: String, state: &'static str| {
        let url = node.url(&format!("/api/v1/events/{id}"));
        let call = &call;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let (_, event) = call(url.clone(), None).await;
                if first_delivery(&event)["state"] == state {
                    return event;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never {state}: {event}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (_, create) = emit(&a, 1, 0).await;
    let blocked = wait(&b, create["id"].as_str().unwrap().to_owned(), "blocked").await;
    // Emitted through node B, behind the line node A's attempts blocked.
    let (_, update) = emit(&b, 1, 1).await;
    let update_id = update["id"].as_str().unwrap().to_owned();
    let waiting = wait(&a, update_id.clone(), "waiting").await;
    assert_eq!(
        first_delivery(&waiting)["blocked_by"],
        first_delivery(&blocked)["id"]
    );
    // Work for another object flows through both nodes meanwhile.
    for n in 0..6 {
        let (_, other) = emit(if n % 2 == 0 { &a } else { &b }, 2, n).await;
        wait(&a, other["id"].as_str().unwrap().to_owned(), "success").await;
    }
    assert_eq!(
        first_delivery(&wait(&b, update_id.clone(), "waiting").await)["blocked_by"],
        first_delivery(&blocked)["id"]
    );
    assert_eq!(
        answered(&receiver, 500),
        [(1, 0), (1, 0)],
        "the update was never sent"
    );

    let (status, skipped) = call(
        b.url(&format!(
            "/api/v1/deliveries/{}/skip",
            first_delivery(&blocked)["id"].as_str().unwrap()
        )),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{skipped}");
    assert_eq!(skipped["last_error"], "skipped by admin");
    wait(&a, update_id, "blocked").await;
    assert_eq!(answered(&receiver, 500), [(1, 0), (1, 0), (1, 1), (1, 1)]);
    a.terminate();
    b.terminate();
}

#[tokio::test]
async fn the_command_line_sets_the_policy_lists_a_blocked_line_and_skips() {
    use crate::cli::cli;
    let app = TestApp::spawn().await;
    let receiver = failing_for_object_1(Arc::new(AtomicBool::new(false))).await;
    // Runs a handler command with `--json`: the handler's (on_exhausted, conflate).
    let policy = async |args: &[&str]| -> (Value, Value, String) {
        let args = [args, &["--json"]].concat();
        let (ok, out, err) = cli(&app, &args).await;
        assert!(ok, "{err}");
        let handler: Value = serde_json::from_str(&out).unwrap();
        let id = handler["id"].to_string();
        (
            handler["on_exhausted"].clone(),
            handler["conflate"].clone(),
            id,
        )
    };
    let url = receiver.url();
    let (on_exhausted, conflate, id) = policy(&[
        "handlers",
        "create",
        "--name",
        "sync",
        "--events-id",
        "clients.*",
        "--target",
        &url,
        "--max-attempts",
        "1",
        "--on-exhausted",
        "skip",
        "--conflate",
        "true",
    ])
    .await;
    assert_eq!((on_exhausted, conflate), (json!("skip"), json!(true)));
    let (on_exhausted, conflate, _) = policy(&[
        "handlers",
        "update",
        &id,
        "--on-exhausted",
        "block",
        "--conflate",
        "false",
    ])
    .await;
    assert_eq!((on_exhausted, conflate), (json!("block"), json!(false)));
    let (ok, _, err) = cli(
        &app,
        &["handlers", "update", &id, "--on-exhausted", "never"],
    )
    .await;
    assert!(!ok && err.contains("on_exhausted"), "{err}");

    let create = emit_step(&app, 1, 0).await;
    let update = emit_step(&app, 1, 1).await;
    let blocked = delivery_id(&wait_state(&app, &create, "blocked").await);
    wait_state(&app, &update, "waiting").await;
    let (ok, out, err) = cli(&app, &["deliveries", "list", &update]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("waiting") && out.contains(&format!("behind blocked {blocked}")),
        "{out}"
    );
    let (ok, out, err) = cli(&app, &["deliveries", "skip", &blocked]).await;
    assert!(ok, "{err}");
    assert!(out.contains("skipped (failed)"), "{out}");
    let (ok, _, err) = cli(&app, &["deliveries", "skip", &blocked]).await;
    assert!(!ok && err.contains("not blocked"), "{err}");
    wait_state(&app, &update, "blocked").await;
}
