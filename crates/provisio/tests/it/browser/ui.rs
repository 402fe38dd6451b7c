//! The web section on a phone and the operator's tools in a real browser:
//! every page fits 390 px, the Advanced Search folds away, the handler form
//! shows only what applies, fields in error take the focus, the Edit page's
//! signing secret, and Back after Log out.

use serde_json::{Value, json};

use super::*;
use crate::helpers::*;

/// Checks the current page fits a phone without scrolling sideways, then
/// screenshots it at both widths as `ui-{name}-1280.png` / `-390.png`.
async fn fits_a_phone(c: &Client, name: &str) {
    resize(c, PHONE).await;
    let overflow = overflow_px(c).await;
    if overflow != 0 {
        // Name the elements that reach past the window, for the failure.
        let wide = run_js(
            c,
            "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right));",
        )
        .await;
        panic!("{name} is {overflow} px wider than a phone: {wide}");
    }
    // The header bar spans the whole width.
    let header = c
        .execute(
            "return document.querySelector('header').getBoundingClientRect().width - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(header.as_f64(), Some(0.0), "{name}: the header bar");
    screenshots_at_both_widths(c, &format!("ui-{name}")).await;
}

/// Opens `path` and waits for `text`.
async fn open(c: &Client, app: &TestApp, path: &str, text: &str) {
    c.goto(&app.url(path)).await.unwrap();
    wait_for_text(c, text).await;
}

async fn displayed(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

async fn run_js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

#[tokio::test]
async fn every_page_fits_a_phone_and_the_search_folds_away() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    let receiver =
        Receiver::with(|_, _| Reply::with_body(200, r#"{"synced": true, "note": "a reply long enough to need more than one line on a phone screen"}"#)).await;
    app.write_script("provision-subscription.sh", "#!/bin/sh\ncat\n");
    let long_url = format!(
        "{}/hooks/provisio/very/long/path/to/the/softswitch/endpoint",
        receiver.url()
    );
    let http = app
        .create_handler(json!({
            "name": "Softswitch subscription sync with a long name",
            "events_id": "clients.subscriptions.activate",
            "target": long_url,
            "headers": { "X-Api-Key": "k-0123456789abcdef0123456789abcdef" },
        }))
        .await;
    let script = app
        .create_handler(json!({
            "name": "Script", "events_id": "clients.subscriptions.activate", "kind": "script",
            "target": "provision-subscription.sh", "args": ["--mode", "full"],
        }))
        .await;
    let before = app
        .create_handler(json!({ "name": "Guard", "stage": "before", "target": receiver.url() }))
        .await;
    for object in 1..=3 {
        app.emit(
            "clients.subscriptions.activate",
            json!(format!("subscription-{object}-with-a-long-identifier")),
            json!({ "plan": "Unlimited calls and data, 100 GB, roaming included" }),
        )
        .await;
    }
    let rows = app.wait_executions("", 6).await;
    let (status, _) = app
        .post("/api/v1/replays", json!({ "handler_id": http["id"] }))
        .await;
    assert!(status.is_success());

    // The login page, before logging in.
    open(c, &app, "/login", "API token").await;
    fits_a_phone(c, "login").await;
    log_in(c, &app, "/").await;
    wait_for_text(c, "the last 24 hours").await;
    fits_a_phone(c, "overview").await;
    let docs = c
        .find(Locator::Css("header a#api-docs"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert_eq!(docs.as_deref(), Some("/api/docs/"));

    open(c, &app, "/handlers", "New Handler").await;
    fits_a_phone(c, "handlers").await;
    // On a phone an event name stays on one line (its table scrolls instead).
    resize(c, PHONE).await;
    let lines = run_js(
        c,
        "return [...document.querySelectorAll('td code')].find(e => e.textContent === 'clients.subscriptions.activate').getClientRects().length;",
    )
    .await;
    assert_eq!(lines, json!(1), "the event name wrapped");
    resize(c, DESKTOP).await;

    let (hid, sid, bid) = (&http["id"], &script["id"], &before["id"]);
    let http_row = rows.iter().find(|r| r["handler_id"] == *hid).unwrap();
    let pages = [
        ("/handlers/new".to_owned(), "New Handler", "handler-new"),
        (
            format!("/handlers/{hid}/edit"),
            "Signing secret",
            "handler-edit-http",
        ),
        (
            format!("/handlers/{sid}/edit"),
            "Signing secret",
            "handler-edit-script",
        ),
        (
            format!("/handlers/{bid}/edit"),
            "Signing secret",
            "handler-edit-before",
        ),
        (
            format!("/handlers/{hid}/edit?reveal=1"),
            "whsec_",
            "handler-secret",
        ),
        (
            format!("/handlers/{hid}/secret/rotate"),
            "Rotate the signing secret",
            "secret-rotate",
        ),
        (
            format!("/handlers/{hid}/delete"),
            "Delete handler",
            "handler-delete",
        ),
        ("/executions".to_owned(), "Execution Logs", "executions"),
        (
            format!("/executions/{}", http_row["id"]),
            "Request sent",
            "execution",
        ),
        (
            format!(
                "/executions/{}",
                rows.iter().find(|r| r["handler_id"] == *sid).unwrap()["id"]
            ),
            "Command run",
            "execution-script",
        ),
        (
            format!("/deliveries/{}", http_row["delivery_id"].as_str().unwrap()),
            "Attempts",
            "delivery",
        ),
        (
            format!("/events/{}", http_row["event_id"].as_str().unwrap()),
            "Handlers it went to",
            "event",
        ),
        ("/replays".to_owned(), "New Replay", "replays"),
        (
            format!("/replays/new?handler_id={hid}"),
            "Latest per object",
            "replay-new",
        ),
        ("/no-such-page".to_owned(), "Page not found", "not-found"),
    ];
    for (path, text, name) in pages {
        open(c, &app, &path, text).await;
        fits_a_phone(c, name).await;
    }

    // The log's Advanced Search: open on a desktop, folded to its title on a
    // phone until tapped; its title says how many filters are set.
    open(c, &app, "/executions?status=success", "Execution Logs").await;
    assert!(displayed(c, "#f-data").await);
    resize(c, PHONE).await;
    assert!(!displayed(c, "#f-data").await, "folded on a phone");
    let legend = text_of(c, "fieldset.search legend").await;
    assert!(legend.contains("(1 set)"), "{legend}");
    let search_height = run_js(
        c,
        "return document.querySelector('fieldset.search').getBoundingClientRect().height;",
    )
    .await;
    assert!(
        search_height.as_f64().unwrap() < 80.0,
        "the folded search is one line: {search_height}"
    );
    screenshot(c, "ui-executions-search-folded-390").await;
    click(c, "fieldset.search legend").await;
    assert!(displayed(c, "#f-data").await, "a tap opens it");
    assert_eq!(overflow_px(c).await, 0);
    screenshot(c, "ui-executions-search-open-390").await;
    click(c, "fieldset.search legend").await;
    assert!(!displayed(c, "#f-data").await, "and closes it");
    // The same on the handlers page.
    open(c, &app, "/handlers", "New Handler").await;
    assert!(!displayed(c, "#f-q").await);
    resize(c, DESKTOP).await;
    assert!(displayed(c, "#f-q").await);
    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn the_handler_form_and_the_edit_page_in_a_real_browser() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    app.write_script("sync.sh", "#!/bin/sh\ncat >/dev/null\n");
    log_in(c, &app, "/handlers/new").await;
    wait_for_text(c, "Handler Type").await;

    // Only the fields of the chosen stage and kind, switching at once.
    assert!(displayed(c, "#headers").await && displayed(c, "#request").await);
    assert!(!displayed(c, "#args").await && !displayed(c, "#on_failure").await);
    assert!(displayed(c, "#max_attempts").await && displayed(c, "#conflate").await);
    fill(c, "#headers", "this is not a header line").await;
    click(c, "#kind option[value='script']").await;
    assert!(!displayed(c, "#headers").await && !displayed(c, "#request").await);
    assert!(displayed(c, "#args").await);
    click(c, "#stage option[value='before']").await;
    assert!(displayed(c, "#on_failure").await);
    assert!(!displayed(c, "#max_attempts").await && !displayed(c, "#auto_pause_failures").await);
    screenshots_at_both_widths(c, "ui-handler-form-script-before").await;
    click(c, "#stage option[value='after']").await;
    assert!(!displayed(c, "#on_failure").await);

    // Errors: outlined, the first takes the focus; Priority is never silently 100.
    assert_eq!(
        c.find(Locator::Css("#priority"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("100"),
        "pre-filled, visibly"
    );
    fill(c, "#name", "Script sync").await;
    click(c, "#events_id option[value='clients.create']").await;
    c.find(Locator::Css("#priority"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    fill(c, "#target", "../outside.sh").await;
    click(c, "main form button.primary").await;
    wait_for_text(c, "Please correct the fields marked below.").await;
    assert!(text_of(c, "#priority-error").await.contains("is required"));
    let focused = run_js(c, "return document.activeElement.id;").await;
    assert_eq!(focused, json!("priority"), "the first field in error");
    let border = run_js(
        c,
        "return getComputedStyle(document.getElementById('target')).borderTopColor;",
    )
    .await;
    assert_eq!(border, json!("rgb(180, 35, 24)"), "outlined");
    assert_eq!(
        c.find(Locator::Css("#target"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert!(!displayed(c, "#headers").await, "still a script form");
    screenshots_at_both_widths(c, "ui-handler-form-errors").await;

    // The hidden header garbage does not stop a script handler.
    fill(c, "#priority", "5").await;
    fill(c, "#target", "sync.sh").await;
    click(c, "main form button.primary").await;
    wait_for_text(c, "The handler was created.").await;
    let (_, list) = app.get("/api/v1/handlers").await;
    let saved = &list["items"][0];
    assert_eq!(
        (&saved["kind"], &saved["priority"], &saved["headers"]),
        (&json!("script"), &json!(5), &json!({}))
    );

    // The Edit page: the secret revealed, copied and rotated after a confirmation.
    let receiver = Receiver::ok().await;
    let h = app
        .create_handler(json!({ "name": "Softswitch", "target": receiver.url() }))
        .await;
    let id = h["id"].as_i64().unwrap();
    let secret_path = format!("/api/v1/handlers/{id}/secret");
    let secret = async || {
        app.get(&secret_path).await.1["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old = secret().await;
    c.goto(&app.url(&format!("/handlers/{id}/edit")))
        .await
        .unwrap();
    wait_for_text(c, "Signing secret").await;
    assert!(!displayed(c, "#args").await, "an HTTP handler's form");
    click(c, "#reveal-secret").await;
    assert_eq!(text_of(c, "#secret-value").await, old);
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/handlers/{id}/edit"),
        "revealed in place"
    );
    click(c, "#copy-secret").await;
    wait_for_text(c, "Copied").await;
    screenshots_at_both_widths(c, "ui-handler-secret-revealed").await;
    click(c, "a[href$='/secret/rotate']").await;
    wait_for_text(c, "Rotate the signing secret of Softswitch?").await;
    assert_eq!(secret().await, old, "nothing before the confirmation");
    click(c, "button.danger").await;
    wait_for_text(c, "new signing secret").await;
    let new = secret().await;
    assert_ne!(new, old);
    assert_eq!(text_of(c, "#secret-value").await, new);

    // Links to the handler's logs and to delete it.
    click(
        c,
        &format!("#handler-links a[href='/executions?handler_id={id}']"),
    )
    .await;
    wait_for_text(c, "Execution Logs · Softswitch").await;
    c.back().await.unwrap();
    wait_for_text(c, "Signing secret").await;
    click(
        c,
        &format!("#handler-links a[href='/handlers/{id}/delete']"),
    )
    .await;
    wait_for_text(c, "Delete handler Softswitch?").await;
    click(c, "button.danger").await;
    wait_for_text(c, "The handler was deleted.").await;

    // After Log out, Back asks the server again: the login page, not a copy.
    open(c, &app, "/handlers", "Script sync").await;
    click(c, "header form button").await;
    wait_for_text(c, "You are logged out.").await;
    c.back().await.unwrap();
    wait_for_text(c, "API token").await;
    let body = text_of(c, "body").await;
    assert!(!body.contains("Script sync"), "a cached page: {body}");
    browser.client.clone().close().await.unwrap();
}
