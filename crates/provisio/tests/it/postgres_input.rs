//! Bad input against a real PostgreSQL, which refuses what SQLite takes
//! (U+0000 in text) and needs what SQLite does not (the right to create
//! the queue's session functions): each is refused up front, or logged
//! without holding anything else up.

use provisio_store::postgres::scratch::ScratchDatabase;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::postgres::{Node, call};
use crate::receiver::{Receiver, Reply};

/// A receiver that answers a NUL byte, a script that writes one to its
/// stderr, or a request template that renders one from an event's data, is
/// logged like any other: PostgreSQL refuses NUL in text, and a batch that
/// can never commit would hold every later result behind it.
#[tokio::test]
async fn a_nul_byte_in_a_reply_or_an_error_is_logged_and_blocks_nothing() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let app = TestApp::spawn_with(|s| {
        s.store.database =
            provisio::config::Database::Postgres(provisio_store::postgres::PgSettings::new(url));
    })
    .await;
    let receiver = Receiver::sequence(vec![Reply::with_body(200, "ok\0then more")]).await;
    app.create_handler(json!({ "target": receiver.url(), "events_id": "clients.create" }))
        .await;
    app.write_script("nul.sh", "#!/bin/sh\nprintf 'bad\\000input' >&2\nexit 3\n");
    app.create_handler(json!({ "kind": "script", "target": "nul.sh",
                               "events_id": "clients.update", "max_attempts": 1,
                               "on_exhausted": "skip" }))
        .await;

    let plain = Receiver::ok().await;
    app.create_handler(
        json!({ "target": plain.url(), "events_id": "clients.delete",
                               "request": { "headers": { "Content-Type": "text/plain" },
                                            "body": "x={{ data.x }}" } }),
    )
    .await;

    let sent = app.emit("clients.create", json!(1), json!({})).await;
    let failed = app.emit("clients.update", json!(1), json!({})).await;
    let rendered = app
        .emit("clients.delete", json!(1), json!({ "x": "a\u{0}b" }))
        .await;
    app.wait_for_event(rendered["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
    app.wait_for_event(sent["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
    let error = app.wait_first_delivery_failed(&failed).await;
    assert!(error.contains("bad\u{FFFD}input"), "{error}");
    let rows = app.wait_executions("", 3).await;
    assert!(
        rows.iter()
            .any(|r| r["response_body"] == "ok\u{FFFD}then more"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r["request"]["body"] == "x=a\u{FFFD}b"),
        "{rows:?}"
    );
    // Later results are recorded as usual.
    let later = app.emit("clients.create", json!(2), json!({})).await;
    app.wait_for_event(later["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == "success"
    })
    .await;
}

/// Each connection creates the queue's functions in its temporary schema: a
/// role without the database's TEMPORARY privilege cannot run provisio, and
/// the start says why in one line, not that a pool timed out.
#[tokio::test]
async fn a_role_without_the_temporary_privilege_stops_the_start_with_one_line_saying_so() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let role = format!("{}_notemp", db.name());
    db.admin(&format!("CREATE ROLE {role} LOGIN")).await;
    db.admin(&format!(
        "REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC",
        db.name()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = db.url_as(&role);
    for command in ["serve", "migrate"] {
        let args = [
            command,
            "--database-url",
            &url,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ];
        let (ok, _, stderr) = run_cli(&args, &[("PROVISIO_DATABASE_ACQUIRE_TIMEOUT", "1s")]);
        assert!(!ok, "{command} should fail");
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("provisio: cannot connect to PostgreSQL"),
            "{stderr}"
        );
        assert!(
            last.contains("permission denied to create temporary tables"),
            "{stderr}"
        );
    }
    db.admin(&format!("DROP ROLE {role}")).await;
}

/// PostgreSQL's `text` cannot hold U+0000. Every field that stores text
/// refuses it up front with a 422 naming the field, and an address holding
/// `%00` is a 400, as on SQLite, where they used to be 500s (a handler's
/// name, target or filter, an event type's description, a log filter, a
/// search, an id), or a 503 that also failed every emit committed in the
/// same batch (an `object_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_a_nul_character_is_refused_up_front_and_fails_no_other_emit() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let node = Node::start(&db);
    let client = http_client();
    let url = |path: &str| format!("{}/api/v1/{path}", node.base);
    let handler = json!({ "name": "h", "events_id": "clients.*", "target": "http://127.0.0.1:9/" });
    let with = |field: &str, value: Value| {
        let mut body = handler.clone();
        body[field] = value;
        body
    };
    let refused = [
        ("handlers", with("name", json!("h\u{0}x")), "name"),
        (
            "handlers",
            with("target", json!("http://127.0.0.1:9/\u{0}")),
            "target",
        ),
        (
            "handlers",
            with("filter", json!("data.x == 'a\u{0}'")),
            "filter",
        ),
        (
            "event-types",
            json!({ "id": "clients.nul_test", "description": "a\u{0}b" }),
            "description",
        ),
    ];
    for (path, body, field) in refused {
        let (status, answer) = call(&client, reqwest::Method::POST, url(path), Some(body)).await;
        assert_eq!(status, 422, "{path} {field}: {answer}");
        assert!(answer["error"]["fields"][field].is_string(), "{answer}");
    }
    // In an address (a search, a filter, an id) it can only come encoded,
    // and is refused before routing.
    for path in [
        "executions?object_id=a%00b",
        "executions?data=%00",
        "handlers?q=a%00",
        "events/a%00b",
    ] {
        let (status, answer) = call(&client, reqwest::Method::GET, url(path), None).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "malformed", "{path}: {answer}");
    }
    let page = client
        .get(format!("{}/handlers?q=%00", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("Bad address"));
    let (status, handlers) = call(&client, reqwest::Method::GET, url("handlers"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        handlers["items"].as_array().map(Vec::len),
        Some(0),
        "{handlers}"
    );

    // A bad emit among good ones, all at once: only it is refused.
    let (status, created) = call(
        &client,
        reqwest::Method::POST,
        url("handlers"),
        Some(handler.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let mut emits = tokio::task::JoinSet::new();
    for object_id in std::iter::once(json!("a\u{0}b")).chain((0..20).map(|i| json!(i))) {
        let (client, url) = (client.clone(), url("events"));
        let body = json!({ "events_id": "clients.create", "object_id": object_id, "data": {} });
        emits.spawn(async move {
            let bad = body["object_id"].is_string();
            (
                bad,
                call(&client, reqwest::Method::POST, url, Some(body)).await,
            )
        });
    }
    let mut accepted = 0;
    while let Some(done) = emits.join_next().await {
        match done.unwrap() {
            (true, (status, answer)) => {
                assert_eq!(status, 422, "{answer}");
                assert!(
                    answer["error"]["fields"]["object_id"].is_string(),
                    "{answer}"
                );
            }
            (false, (status, answer)) => {
                assert_eq!(status, 202, "{answer}");
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 20);
}
