//! Replay jobs from the outside: bad input refused by field and changing
//! nothing, the command line starting, following and cancelling a job, and
//! the Replays page cancelling one with the session's token.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::replay::{counts, emit_objects, slow_line, start_replay, wait_job};

#[tokio::test]
async fn bad_replay_input_is_refused_by_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let after = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;
    let before = app
        .create_handler(json!({ "stage": "before", "target": receiver.url() }))
        .await;
    let cases = [
        (json!({ "handler_id": 999 }), "handler_id"),
        (json!({ "handler_id": before["id"] }), "handler_id"),
        (
            json!({ "handler_id": after["id"], "from": "2026-11-27", "to": "2026-11-26" }),
            "to",
        ),
        (
            json!({ "handler_id": after["id"], "from": "yesterday" }),
            "from",
        ),
        (
            json!({ "handler_id": after["id"], "events_id": "clinets.*" }),
            "events_id",
        ),
        (
            json!({ "handler_id": after["id"], "object_id": 1.5 }),
            "object_id",
        ),
        (
            json!({ "handler_id": after["id"], "status": "some" }),
            "status",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = app.post("/api/v1/replays", body.clone()).await;
        let fields = assert_error(status, &error, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(
            fields.get(field).is_some(),
            "{body} should name {field}: {fields}"
        );
    }
    let (_, list) = app.get("/api/v1/replays").await;
    assert_eq!(list["total"], 0, "nothing was started");

    // A filter that matches nothing is a job, done at once.
    let empty = start_replay(
        &app,
        json!({ "handler_id": after["id"], "events_id": "clients.delete" }),
    )
    .await;
    assert_eq!(
        (empty["state"].as_str(), counts(&empty)),
        (Some("done"), [0, 0, 0, 0])
    );
    let (status, body) = app.get("/api/v1/replays/01JNOSUCHREPLAY00000000000").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .delete("/api/v1/replays/01JNOSUCHREPLAY00000000000")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn replays_are_started_followed_and_cancelled_from_the_command_line() {
    use crate::cli::cli;
    let app = Arc::new(TestApp::spawn().await);
    emit_objects(&app, 2, 5).await;
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;
    let id = handler["id"].to_string();

    // Followed to the end: plain progress lines when not on a terminal.
    let (ok, out, err) = cli(&app, &["replay", "--handler", &id]).await;
    assert!(ok, "{err}");
    let last = out.lines().last().unwrap();
    assert!(last.contains(" done: 10/10 sent, 0 failed"), "{out}");
    assert_eq!(receiver.received().len(), 10);
    let first = last.split(' ').nth(1).unwrap().to_owned();

    let (ok, out, err) = cli(
        &app,
        &[
            "replay",
            "--handler",
            &id,
            "--latest-per-object",
            "--detach",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let resync = out.trim().to_owned();
    assert_eq!(resync.len(), 26, "a job id: {out}");
    let job = wait_job(&app, &resync, |j| j["state"] == "done").await;
    assert_eq!(counts(&job), [2, 2, 2, 0]);

    let (ok, out, _) = cli(&app, &["replay", "status", &resync]).await;
    assert!(
        ok && out.contains(&format!("replay {resync} done: 2/2 sent")),
        "{out}"
    );
    let (ok, out, _) = cli(&app, &["replay", "list"]).await;
    assert!(
        ok && out.contains("(2 in all)") && out.contains(&first),
        "{out}"
    );
    let (ok, _, err) = cli(&app, &["replay", "cancel", &first]).await;
    assert!(!ok && err.contains("409 conflict"), "{err}");
    let (ok, _, err) = cli(&app, &["replay", "--handler", "999"]).await;
    assert!(!ok && err.contains("422 invalid"), "{err}");
}

#[tokio::test]
async fn the_replays_page_cancels_a_running_job_with_the_sessions_token() {
    use crate::web::{get_page, login, web_client};
    let (app, receiver, handler) = slow_line(100).await;
    let client = web_client();
    let (cookie, csrf) = login(&app, &client).await;

    // Started from the form, as the Execution Logs' link opens it.
    let resp = client
        .post(app.url("/replays"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("handler_id", &handler.to_string()),
            ("events_id", "clients.*"),
            ("status", "all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/replays?notice=replay-started");
    let (_, list) = app.get("/api/v1/replays").await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["created_by"], "admin");
    receiver.wait_for(2).await;
    let page = get_page(&app, &client, &cookie, "/replays")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("/replays/{id}/cancel")), "{page}");

    // Without the session's CSRF token nothing happens.
    let resp = client
        .post(app.url(&format!("/replays/{id}/cancel")))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client
        .post(app.url(&format!("/replays/{id}/cancel")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let job = wait_job(&app, &id, |j| j["remaining"] == 0).await;
    assert_eq!(job["state"], "cancelled");
    assert!(job["cancelled"].as_u64().unwrap() > 0, "{job}");
    assert_eq!(
        receiver.received().len() as u64,
        job["sent"].as_u64().unwrap()
    );

    // A form without a handler is shown again, naming the field.
    let resp = client
        .post(app.url("/replays"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("handler_id", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("choose a handler"));
}
