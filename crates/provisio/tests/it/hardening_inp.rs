//! Hardening against an outside attacker's findings (issue 10): the admin
//! token changed back across restarts, token revocation by a number, exact
//! object ids, the deny list's address spellings, and passwords in handler
//! URLs.

use crate::helpers::*;

async fn get(client: &reqwest::Client, url: String, token: &str) -> u16 {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    read(resp).await.0.as_u16()
}

/// `provisio token create --name NAME` on a data directory: the new token.
fn create_token(data_dir: &str, name: &str) -> String {
    let (ok, token, stderr) = run_cli(
        &["token", "create", "--name", name, "--data-dir", data_dir],
        &[],
    );
    assert!(ok, "{stderr}");
    token.trim().to_owned()
}

#[tokio::test]
async fn hardening_inp_the_admin_token_can_be_changed_back_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let (a, b) = ("first-admin-token-aaaaaaaa", "second-admin-token-bbbbbbb");
    // A → B → A: under systemd a refused start would be a restart loop.
    for (now, before) in [(a, None), (b, Some(a)), (a, Some(b))] {
        let server = Binary::serve(dir.path(), &[("PROVISIO_ADMIN_TOKEN", now)]);
        assert_eq!(get(&client, server.url("/api/v1/handlers"), now).await, 200);
        if let Some(before) = before {
            assert_eq!(
                get(&client, server.url("/api/v1/handlers"), before).await,
                401,
                "the replaced admin token must no longer work"
            );
        }
        server.terminate();
    }
}

#[tokio::test]
async fn hardening_inp_an_admin_token_that_is_another_live_token_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let token = create_token(data_dir, "billing");
    let token = token.as_str();
    let (ok, _, stderr) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        &[("PROVISIO_ADMIN_TOKEN", token)],
    );
    assert!(!ok);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("provisio: ") && last.contains("\"billing\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains(token),
        "the token never reaches the log: {stderr}"
    );
}

/// `provisio token list` as (id, name, live) rows.
fn list_tokens(data_dir: &str) -> Vec<(String, String, bool)> {
    let (ok, out, stderr) = run_cli(&["token", "list", "--data-dir", data_dir], &[]);
    assert!(ok, "{stderr}");
    out.lines()
        .skip(1)
        .map(|line| {
            let mut cols = line.split_whitespace();
            let id = cols.next().unwrap_or_default().to_owned();
            let name = cols.next().unwrap_or_default().to_owned();
            (id, name, line.trim_end().ends_with("live"))
        })
        .collect()
}

fn revoke(data_dir: &str, how: &[&str]) -> (bool, String, String) {
    let mut args = vec!["token", "revoke"];
    args.extend_from_slice(how);
    args.extend_from_slice(&["--data-dir", data_dir]);
    run_cli(&args, &[])
}

#[tokio::test]
async fn hardening_inp_token_revoke_never_takes_two_tokens_for_one_number() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // The admin token has id 1; another token is named "1". Names that are
    // numbers are refused now, so this one is planted the way an older
    // version allowed: by the store.
    create_token(data_dir, "admin");
    let (ok, _, stderr) = run_cli(
        &["token", "create", "--name", "1", "--data-dir", data_dir],
        &[],
    );
    assert!(!ok, "a number as a name is refused");
    assert!(stderr.starts_with("provisio: "), "{stderr}");
    plant_token_named(dir.path(), "1").await;
    assert_eq!(
        list_tokens(data_dir),
        [
            ("1".into(), "admin".into(), true),
            ("2".into(), "1".into(), true)
        ]
    );

    let (ok, _, stderr) = revoke(data_dir, &["1"]);
    assert!(!ok, "an ambiguous number is refused");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--id 1") && stderr.contains("--name 1"),
        "{stderr}"
    );
    assert!(
        list_tokens(data_dir).iter().all(|t| t.2),
        "nothing was revoked"
    );

    let (ok, _, stderr) = revoke(data_dir, &["--name", "1"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        list_tokens(data_dir),
        [
            ("1".into(), "admin".into(), true),
            ("2".into(), "1".into(), false)
        ]
    );
    // Now "1" names no live token: the bare number means the id.
    let (ok, _, stderr) = revoke(data_dir, &["1"]);
    assert!(ok, "{stderr}");
    assert!(list_tokens(data_dir).iter().all(|t| !t.2));
    let (ok, _, stderr) = revoke(data_dir, &["--id", "1"]);
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Stores a live token named `name` directly, as an older version could.
async fn plant_token_named(data_dir: &std::path::Path, name: &str) {
    use provisio_store::Store;
    let store = provisio_store::sqlite::SqliteStore::open(
        &data_dir.join("provisio.db"),
        provisio_store::sqlite::Durability::Normal,
    )
    .await
    .unwrap();
    store
        .create_token(name, &provisio_store::TokenHash([42; 32]))
        .await
        .unwrap();
}

/// An emit body with `object_id` written as raw JSON text, so the test's own
/// JSON handling cannot round it.
fn emit_body(object_id: &str) -> String {
    format!(
        r#"{{"events_id":"clients.create","object_id":{object_id},"data":{{"copy":{object_id}}}}}"#
    )
}

/// The raw text of a GET with the admin token, for checks a parsed `Value`
/// would blur (it reads large integers as floats).
async fn get_text(app: &TestApp, path: &str) -> String {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn hardening_inp_large_object_ids_are_kept_exactly_and_stay_distinct() {
    const HELD: &str = "18446744073709551616";
    const NEXT: &str = "18446744073709551617";
    // HELD's delivery keeps failing, so the ordered handler's queue for HELD
    // stays open; NEXT is another object and must not wait behind it.
    let held_marker = format!(r#""object_id":{HELD}"#);
    let receiver = Receiver::with(move |r, _| {
        Reply::status(if r.body.contains(&held_marker) {
            500
        } else {
            200
        })
    })
    .await;
    let app = TestApp::spawn().await;
    app.create_handler(serde_json::json!({ "target": receiver.url(), "max_attempts": 50 }))
        .await;
    let mut ids = Vec::new();
    for object_id in [
        HELD,
        NEXT,
        "-18446744073709551617",
        r#""18446744073709551617""#,
    ] {
        let (status, body) = app.post_raw("/api/v1/events", emit_body(object_id)).await;
        assert_eq!(status, 202, "{object_id}: {body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }

    // Each reaches the receiver as the exact text sent, in the event and in
    // the data (which is kept as raw text).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for object_id in [NEXT, "-18446744073709551617", r#""18446744073709551617""#] {
        let expected = format!(r#""object_id":{object_id}}},"data":{{"copy":{object_id}}}}}"#);
        while !receiver
            .received()
            .iter()
            .any(|r| r.body.ends_with(&expected))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{expected} never arrived: {:?}",
                receiver
                    .received()
                    .iter()
                    .map(|r| &r.body)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // The API reads them back exactly too.
    let event = get_text(&app, &format!("/api/v1/events/{}", ids[1])).await;
    assert!(event.contains(&format!(r#""object_id":{NEXT}"#)), "{event}");
    let log = get_text(&app, &format!("/api/v1/executions?object_id={NEXT}")).await;
    assert!(log.contains(&format!(r#""object_id":{NEXT}"#)), "{log}");
    assert!(!log.contains(&format!(r#""object_id":{HELD}"#)), "{log}");
}

#[tokio::test]
async fn hardening_inp_object_ids_that_are_not_integers_are_refused_by_name() {
    let app = TestApp::spawn().await;
    for object_id in ["12.5", "12.0", "1e3", "-0", "1E-2", r#""""#, "null"] {
        let (status, body) = app.post_raw("/api/v1/events", emit_body(object_id)).await;
        let fields = assert_error(
            status,
            &body,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        );
        assert!(fields.get("object_id").is_some(), "{object_id}: {body}");
        let (status, body) = app
            .post_raw("/api/v1/events/before", emit_body(object_id))
            .await;
        assert_eq!(status, 422, "before stage, {object_id}: {body}");
    }
}

/// A receiver on every loopback address at once (`[::]`, dual-stack) that
/// counts the requests reaching it: whatever spelling of "this host" a
/// handler uses, it lands here if it gets through.
async fn loopback_counter() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// Spellings of loopback an attacker tried that Linux connects (to a
/// receiver on `port`), and one it does not route but that must be refused
/// all the same (IPv4-compatible `::a.b.c.d`).
fn loopback_spellings(port: u16) -> (Vec<String>, Vec<String>) {
    let url = |host: &&str| format!("http://{host}:{port}/hook");
    let connected = [
        "0",
        "0.0.0.0",
        "[::]",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
    ];
    (
        connected.iter().map(url).collect(),
        ["[::127.0.0.1]"].iter().map(url).collect(),
    )
}

/// One handler per target (named after it, one attempt), and one event
/// that goes to all of them.
async fn call_each(app: &TestApp, targets: &[String]) {
    for target in targets {
        let handler = serde_json::json!({ "name": target, "target": target, "max_attempts": 1 });
        app.create_handler(handler).await;
    }
    app.emit(
        "clients.create",
        serde_json::json!(1),
        serde_json::json!({}),
    )
    .await;
}

#[tokio::test]
async fn hardening_inp_no_spelling_of_a_denied_loopback_reaches_it() {
    use std::sync::atomic::Ordering;
    let (port, hits) = loopback_counter().await;
    let app = TestApp::spawn_with(|s| {
        s.deny_networks.push("127.0.0.0/8".parse().unwrap());
        s.deny_networks.push("::1/128".parse().unwrap());
    })
    .await;
    let (connected, unrouted) = loopback_spellings(port);
    let targets = [connected.clone(), unrouted].concat();
    call_each(&app, &targets).await;
    let rows = app.wait_executions("status=fail", targets.len()).await;
    for row in &rows {
        let error = row["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("denied network"),
            "{}: {error}",
            row["handler_name"]
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied spelling got through"
    );

    // The same spellings do reach the receiver where loopback is allowed, so
    // the refusals above are the deny list's doing.
    let open = TestApp::spawn().await;
    call_each(&open, &connected).await;
    open.wait_executions("status=success", connected.len())
        .await;
    assert_eq!(hits.load(Ordering::SeqCst), connected.len());
}

#[tokio::test]
async fn hardening_inp_passwords_in_handler_urls_never_reach_the_execution_log() {
    use serde_json::json;
    let receiver = Receiver::ok().await;
    let slow =
        Receiver::sequence(vec![Reply::delayed(200, std::time::Duration::from_secs(2))]).await;
    let app =
        TestApp::spawn_with(|s| s.before_deadline = std::time::Duration::from_millis(300)).await;
    let creds =
        |url: String, userinfo: &str| url.replace("http://", &format!("http://{userinfo}@"));
    let with_password = creds(receiver.url(), "alice:s3cret-pw");
    let after = app
        .create_handler(json!({ "name": "password", "target": with_password }))
        .await;
    app.create_handler(json!({ "name": "key", "target": creds(receiver.url(), "sk_live_key123") }))
        .await;
    app.create_handler(json!({ "name": "refused", "target": "http://bob:hunter2-pw@127.0.0.1:1/x", "max_attempts": 1 }))
        .await;
    // Before stage: the slow handler uses up the chain's deadline, so the
    // next one is skipped, and its row is written by the chain itself.
    app.create_handler(json!({ "name": "slow", "stage": "before", "priority": 1, "on_failure": "allow", "target": creds(slow.url(), "carol:slow-pw") }))
        .await;
    app.create_handler(json!({ "name": "skipped", "stage": "before", "priority": 2, "target": creds(receiver.url(), "dave:skipped-pw") }))
        .await;

    app.emit("clients.create", json!(1), json!({})).await;
    let (status, body) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = app.wait_executions("", 5).await;
    let skipped = rows
        .iter()
        .find(|r| r["handler_name"] == "skipped")
        .unwrap();
    assert!(
        skipped["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{skipped}"
    );

    let log = get_text(&app, "/api/v1/executions?per_page=500").await;
    for secret in [
        "s3cret-pw",
        "sk_live_key123",
        "hunter2-pw",
        "slow-pw",
        "skipped-pw",
    ] {
        assert!(!log.contains(secret), "{secret} is in the log: {log}");
    }
    for shown in [
        "http://alice:***@127.0.0.1:",
        "http://***@127.0.0.1:",
        "http://dave:***@127.0.0.1:",
    ] {
        assert!(log.contains(shown), "{shown} is not in the log: {log}");
    }
    // The credentials still reach the receiver (as Basic auth), and the
    // handler still shows its real target to the operator who edits it.
    let got = receiver.wait_for(2).await;
    assert!(
        got.iter()
            .all(|r| r.header("authorization").starts_with("Basic ")),
        "{got:?}"
    );
    let (_, handler) = app.get(&format!("/api/v1/handlers/{}", after["id"])).await;
    assert_eq!(handler["target"], with_password);
}
