//! The web section's operator tools, server side: pages that are never
//! cached, the handler form that reads only the fields of its stage and kind,
//! and the Edit page's signing secret. (The browser drives the same pages in
//! `browser/ui.rs`.)

use serde_json::json;

use crate::helpers::*;
use crate::web::{get_page, login, web_client};

#[tokio::test]
async fn pages_are_never_cached_but_the_assets_are() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let id = h["id"].as_i64().unwrap();
    app.emit("clients.create", json!(1), json!({})).await;
    let execution = app.wait_executions("", 1).await[0]["id"].clone();

    // Logged out: the login page, and the redirect to it.
    for path in ["/login", "/handlers"] {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            resp.headers()["cache-control"],
            "no-store",
            "{path} logged out"
        );
    }
    let (cookie, csrf) = login(&app, &client).await;
    for path in [
        "/".to_owned(),
        "/handlers".to_owned(),
        "/handlers/new".to_owned(),
        format!("/handlers/{id}/edit"),
        format!("/handlers/{id}/edit?reveal=1"),
        format!("/handlers/{id}/secret/rotate"),
        format!("/handlers/{id}/delete"),
        "/executions".to_owned(),
        format!("/executions/{execution}"),
        "/replays".to_owned(),
        "/handlers/999999/edit".to_owned(),
    ] {
        let resp = get_page(&app, &client, &cookie, &path).await;
        assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
    }
    // A posted form's answer too (here the form comes back with its errors).
    let resp = client
        .post(app.url("/handlers"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    for asset in ["/assets/style.css", "/assets/htmx.min.js"] {
        let resp = client.get(app.url(asset)).send().await.unwrap();
        let caching = resp.headers()["cache-control"].to_str().unwrap();
        assert!(caching.starts_with("public"), "{asset}: {caching}");
    }
}

/// Posts the handler form with `fields` over the session; returns the status,
/// where it leads and the page.
async fn post_form(
    app: &TestApp,
    client: &reqwest::Client,
    (cookie, csrf): &(String, String),
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let resp = client
        .post(app.url(path))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_form_reads_only_the_fields_of_its_kind_and_stage() {
    let app = TestApp::spawn().await;
    app.write_script("sync.sh", "#!/bin/sh\ncat >/dev/null\n");
    let client = web_client();
    let session = login(&app, &client).await;
    // A script handler with garbage in the HTTP-only fields (and in the
    // before-stage policy) is saved; what those fields held is dropped.
    let (status, location, page) = post_form(
        &app,
        &client,
        &session,
        "/handlers",
        &[
            ("name", "Script sync"),
            ("events_id", "clients.create"),
            ("stage", "after"),
            ("status", "enabled"),
            ("priority", "7"),
            ("kind", "script"),
            ("target", "sync.sh"),
            ("args", "--mode\nfull"),
            ("headers", "this is not a header line"),
            ("request", "{ not json"),
            ("on_failure", "allow"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/handlers?notice=created"),
        "{page}"
    );
    let (_, list) = app.get("/api/v1/handlers").await;
    let saved = &list["items"][0];
    assert_eq!(saved["kind"], "script");
    assert_eq!(saved["priority"], 7);
    assert_eq!(saved["args"], json!(["--mode", "full"]));
    assert_eq!(saved["headers"], json!({}));
    assert_eq!(saved["request"], json!(null));
    assert_eq!(
        saved["on_failure"], "forbid",
        "an after-stage handler keeps the default"
    );

    // An HTTP handler with arguments left in the script field: saved without them.
    let (status, _, page) = post_form(
        &app,
        &client,
        &session,
        "/handlers",
        &[
            ("name", "Switch"),
            ("events_id", "clients.create"),
            ("stage", "before"),
            ("status", "enabled"),
            ("priority", "1"),
            ("kind", "http"),
            ("target", "http://127.0.0.1:1/h"),
            ("args", "left over"),
            ("headers", "X-Api-Key: k1"),
            ("on_failure", "allow"),
            // After-stage settings of a before-stage handler are not read.
            ("max_attempts", "many"),
            ("max_in_flight", "lots"),
            ("rate_limit", "0"),
            ("auto_pause_failures", "x"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let (_, list) = app.get("/api/v1/handlers?q=Switch").await;
    let saved = &list["items"][0];
    assert_eq!(saved["args"], json!([]));
    assert_eq!(saved["headers"], json!({ "X-Api-Key": "k1" }));
    assert_eq!(saved["on_failure"], "allow");
    assert_eq!(saved["max_in_flight"], json!(null));
    assert_eq!(saved["auto_pause"], json!(null));

    // The HTTP handler's own fields are still checked.
    let (status, _, page) = post_form(
        &app,
        &client,
        &session,
        "/handlers",
        &[
            ("name", "Bad headers"),
            ("events_id", "clients.create"),
            ("stage", "after"),
            ("status", "enabled"),
            ("priority", "1"),
            ("kind", "http"),
            ("target", "http://127.0.0.1:1/h"),
            ("headers", "no colon here"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"headers-error\""), "{page}");
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 2);
}

#[tokio::test]
async fn fields_in_error_are_marked_and_the_first_takes_the_focus() {
    let app = TestApp::spawn().await;
    let client = web_client();
    let session = login(&app, &client).await;
    // The new form shows the priority it would save.
    let page = get_page(&app, &client, &session.0, "/handlers/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"name="priority" type="number" value="100" required"#),
        "{page}"
    );
    assert!(page.contains("Saving takes effect at once, on every node"));
    // An empty priority is refused, never read as 100.
    let (status, _, page) = post_form(
        &app,
        &client,
        &session,
        "/handlers",
        &[
            ("name", "Switch"),
            ("events_id", "clients.create"),
            ("stage", "after"),
            ("status", "enabled"),
            ("priority", ""),
            ("kind", "http"),
            ("target", "ftp://nope"),
            ("timeout_ms", "slow"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"priority-error\">is required"), "{page}");
    let tag = |id: &str| {
        let start = page.find(&format!("id=\"{id}\"")).unwrap();
        let end = start + page[start..].find('>').unwrap();
        page[start..end].to_owned()
    };
    // In the page's order: priority, then target, then timeout.
    assert!(
        tag("priority").contains(r#"aria-invalid="true" autofocus"#),
        "{}",
        tag("priority")
    );
    for field in ["target", "timeout_ms"] {
        let t = tag(field);
        assert!(
            t.contains(r#"aria-invalid="true""#) && !t.contains("autofocus"),
            "{t}"
        );
    }
    assert!(!tag("name").contains("aria-invalid"), "{}", tag("name"));
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 0);
}

#[tokio::test]
async fn the_edit_page_reveals_and_rotates_the_signing_secret() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let id = h["id"].as_i64().unwrap();
    let path = format!("/api/v1/handlers/{id}/secret");
    let secret = async |app: &TestApp| {
        app.get(&path).await.1["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = secret(&app).await;
    let client = web_client();
    let session = login(&app, &client).await;

    let page = get_page(&app, &client, &session.0, &format!("/handlers/{id}/edit"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&before), "hidden until asked for");
    assert!(page.contains(&format!("href=\"/executions?handler_id={id}\"")));
    assert!(page.contains(&format!("href=\"/handlers/{id}/delete\"")));
    let page = get_page(
        &app,
        &client,
        &session.0,
        &format!("/handlers/{id}/edit?reveal=1"),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        page.contains(&format!("id=\"secret-value\">{before}<")),
        "{page}"
    );

    // Rotating needs the session's form token; then a new secret is shown.
    let rotate = format!("/handlers/{id}/secret/rotate");
    let (status, _, _) = post_form(
        &app,
        &client,
        &(session.0.clone(), "wrong".into()),
        &rotate,
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(secret(&app).await, before);
    let (status, location, _) = post_form(&app, &client, &session, &rotate, &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("/handlers/{id}/edit?rotated=1"))
    );
    let after = secret(&app).await;
    assert_ne!(after, before);
    let page = get_page(&app, &client, &session.0, &location)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("id=\"secret-value\">{after}<")));
    assert!(page.contains("new signing secret"));

    // Calls are signed with the new secret from now on.
    app.emit("clients.create", json!(1), json!({})).await;
    let got = receiver.wait_for(1).await;
    assert!(crate::delivery::verify(&after, &got[0]));
    assert!(!crate::delivery::verify(&before, &got[0]));

    // A handler that is gone: a page that says so.
    let (status, _, page) = post_form(
        &app,
        &client,
        &session,
        "/handlers/999999/secret/rotate",
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert!(page.contains("Handler not found"));
}
