//! Journeys through the web section in a real browser.

use serde_json::json;

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn an_operator_manages_handlers_and_reads_the_logs_in_a_real_browser() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    let receiver = Receiver::with(|_, _| Reply::with_body(200, r#"{"synced": true}"#)).await;

    // Log in.
    log_in(c, &app, "/handlers").await;
    wait_for_text(c, "New Handler").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/handlers");

    // Create a handler; the first try has a bad URL.
    click(c, "a[href='/handlers/new']").await;
    wait_for_text(c, "Handler Type").await;
    fill(c, "#name", "Softswitch sync").await;
    click(c, "#events_id option[value='clients.create']").await;
    fill(c, "#target", "ftp://switch.example.net").await;
    fill(c, "#filter", "has(data.name) &&").await;
    fill(
        c,
        "#request",
        r#"{"method": "PUT", "body": "{{ data.name "}"#,
    )
    .await;
    click(c, "main form button[type=submit]").await;
    let error = text_of(c, "#target-error").await;
    assert!(error.contains("http or https"), "{error}");
    let error = text_of(c, "#filter-error").await;
    assert!(error.starts_with("line 1, column "), "{error}");
    let error = text_of(c, "#request-error").await;
    assert!(error.contains("syntax error"), "{error}");
    let kept = c
        .find(Locator::Css("#name"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("Softswitch sync"),
        "the input is kept"
    );
    screenshot(c, "handler-form-error").await;
    fill(c, "#target", &receiver.url()).await;
    fill(c, "#filter", "has(data.name)").await;
    // Preview before saving: the request as the form stands, for a sample.
    fill(c, "#request", r#"{"method": "PUT"}"#).await;
    click(c, "#preview_events_id option[value='clients.create']").await;
    click(c, "button[name=preview]").await;
    wait_for_text(c, "for a clients.create event").await;
    let shown = text_of(c, "#preview-result").await;
    assert!(shown.contains("PUT http://127.0.0.1"), "{shown}");
    assert!(shown.contains("ACME Telecom"), "the sample data: {shown}");
    screenshot(c, "handler-preview").await;
    assert_eq!(
        app.get("/api/v1/handlers").await.1["total"],
        0,
        "nothing saved"
    );
    fill(c, "#request", "").await;
    click(c, "main form button[type=submit]").await;
    wait_for_text(c, "The handler was created.").await;
    let row = text_of(c, "tbody tr").await;
    assert!(
        row.contains("Softswitch sync")
            && row.contains("clients.create")
            && row.contains("enabled"),
        "{row}"
    );
    let (_, list) = app.get("/api/v1/handlers").await;
    let id = list["items"][0]["id"].as_i64().unwrap();
    assert_eq!(list["items"][0]["filter"], "has(data.name)");

    // Toggle the status off and on again.
    click(c, &format!("#handler-{id} button.status")).await;
    wait_for_text(c, "The handler is disabled.").await;
    assert!(
        text_of(c, &format!("#handler-{id}"))
            .await
            .contains("disabled")
    );
    assert_eq!(
        app.get(&format!("/api/v1/handlers/{id}")).await.1["status"],
        "disabled"
    );
    click(c, &format!("#handler-{id} button.status")).await;
    wait_for_text(c, "The handler is enabled.").await;

    // Advanced Search, kept in the URL.
    click(c, "#f-status option[value='disabled']").await;
    click(c, "fieldset.search button[type=submit]").await;
    wait_for_text(c, "No handlers match").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap_or("")
            .contains("status=disabled")
    );
    c.goto(&app.url("/handlers?kind=http&q=softswitch"))
        .await
        .unwrap();
    wait_for_text(c, "Softswitch sync").await;
    screenshots_at_both_widths(c, "handlers").await;

    // An event emitted through the API shows in the logs, with its details.
    app.emit("clients.create", json!(12), json!({ "name": "ACME" }))
        .await;
    app.wait_executions("", 1).await;
    c.goto(&app.url("/executions")).await.unwrap();
    wait_for_text(c, "Softswitch sync").await;
    let first_row = text_of(c, "#execution-rows tr").await;
    assert!(
        first_row.contains("success")
            && first_row.contains("clients.create")
            && first_row.contains("12"),
        "{first_row}"
    );
    screenshot(c, "executions").await;

    // New executions appear without a reload.
    app.emit("clients.create", json!(13), json!({ "name": "Globex" }))
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while c
        .find_all(Locator::Css("#execution-rows tr"))
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new execution never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    click(c, "#execution-rows tr:last-child td a").await;
    wait_for_text(c, "Request sent").await;
    let request = text_of(c, "#request-body").await;
    assert!(
        request.contains("\"name\": \"ACME\""),
        "pretty JSON of the request: {request}"
    );
    assert!(text_of(c, "#response-body").await.contains("synced"));
    screenshot(c, "execution-details").await;
    click(c, "main form button.primary").await;
    wait_for_text(c, "queued to be sent again").await;
    receiver.wait_for(3).await;

    // The overview draws the last 24 hours.
    c.goto(&app.url("/")).await.unwrap();
    wait_for_text(c, "succeeded").await;
    assert!(
        !c.find_all(Locator::Css(".card svg rect"))
            .await
            .unwrap()
            .is_empty()
    );
    screenshots_at_both_widths(c, "overview").await;

    // Delete, with a confirmation.
    c.goto(&app.url("/handlers")).await.unwrap();
    click(c, &format!("#handler-{id} a[href='/handlers/{id}/delete']")).await;
    wait_for_text(c, "Delete handler Softswitch sync?").await;
    click(c, "button.danger").await;
    wait_for_text(c, "The handler was deleted.").await;
    assert_eq!(app.get("/api/v1/handlers").await.1["total"], 0);

    // Log out.
    click(c, "header form button").await;
    wait_for_text(c, "You are logged out.").await;
    c.goto(&app.url("/handlers")).await.unwrap();
    wait_for_text(c, "API token").await;
    browser.client.clone().close().await.unwrap();
}

/// A blocked line in the browser: the blocked delivery's page says so, lists
/// what waits behind it with a link back, and Skip moves the line on in the
/// operator's name.
#[tokio::test]
async fn an_operator_skips_a_blocked_delivery_in_a_real_browser() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    // Object 1's create is refused; everything after it is accepted.
    let receiver = Receiver::with(|r, _| {
        Reply::status(if r.json()["data"]["step"] == 0 {
            500
        } else {
            200
        })
    })
    .await;
    app.create_handler(
        json!({ "events_id": "clients.*", "target": receiver.url(), "max_attempts": 1 }),
    )
    .await;
    let create = app
        .emit("clients.create", json!(1), json!({ "step": 0 }))
        .await;
    let update = app
        .emit("clients.update", json!(1), json!({ "step": 1 }))
        .await;
    let blocked = app
        .wait_for_event(create["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "blocked"
        })
        .await;
    let blocked_id = blocked["deliveries"][0]["id"].as_str().unwrap().to_owned();

    c.goto(&app.url(&format!("/executions?delivery_id={blocked_id}")))
        .await
        .unwrap();
    wait_for_text(c, "API token").await;
    fill(c, "#token", ADMIN_TOKEN).await;
    click(c, "form button[type=submit]").await;
    wait_for_text(c, "Execution Logs").await;
    click(c, "#execution-rows tr td a").await;
    wait_for_text(c, "Waiting behind it").await;
    assert_eq!(text_of(c, "#delivery-state").await, "blocked");
    let link = c
        .find(Locator::Css("#held-up a.blocked-by"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert_eq!(
        link.as_deref(),
        Some(format!("/deliveries/{blocked_id}").as_str())
    );
    screenshot(c, "execution-blocked").await;
    click(c, "form[action$='/skip'] button").await;
    wait_for_text(c, "The delivery was skipped").await;
    assert_eq!(text_of(c, "#delivery-state").await, "failed");
    let skipped = app
        .wait_for_event(update["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "success"
        })
        .await;
    assert_eq!(skipped["deliveries"][0]["attempts"], 1);
    let (_, create) = app
        .get(&format!(
            "/api/v1/events/{}",
            create["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(create["deliveries"][0]["last_error"], "skipped by admin");
    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn an_operator_replays_the_failed_events_of_the_execution_logs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    let receiver = Receiver::with(move |_, _| {
        Reply::status(if up.load(Ordering::SeqCst) { 200 } else { 503 })
    })
    .await;
    let handler = app
        .create_handler(json!({ "name": "Softswitch sync", "events_id": "clients.*", "target": receiver.url(), "max_attempts": 1, "on_exhausted": "skip" }))
        .await;
    for object in 1..=3 {
        app.emit("clients.update", json!(object), json!({ "n": object }))
            .await;
    }
    app.wait_executions("status=fail", 3).await;
    healthy.store(true, Ordering::SeqCst);

    // From the log filtered by failures to the replay form, filled with it.
    log_in(c, &app, "/executions?status=fail&events_id=clients.update").await;
    wait_for_text(c, "Replay these to").await;
    click(c, "a[href^='/replays/new']").await;
    wait_for_text(c, "Latest per object only (resync)").await;
    let value = |css: &'static str| async move {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
    };
    assert_eq!(value("#status").await.as_deref(), Some("failed"));
    assert_eq!(value("#events_id").await.as_deref(), Some("clients.update"));
    // Without a handler the form comes back saying so.
    click(c, "main form button[type=submit]").await;
    assert!(
        text_of(c, "#handler_id-error")
            .await
            .contains("choose a handler")
    );
    screenshot(c, "replay-form").await;
    click(c, &format!("#handler_id option[value='{}']", handler["id"])).await;
    click(c, "main form button[type=submit]").await;
    wait_for_text(c, "The replay was started.").await;
    receiver.wait_for(6).await;

    // The Replays page shows the job done, three sent, by the admin token
    // (while it runs, its row refreshes itself; then it stops).
    wait_for_text(c, "3 sent").await;
    let row = text_of(c, "#replay-rows tr").await;
    assert!(row.contains("done") && row.contains("by admin"), "{row}");
    screenshot(c, "replays").await;
    browser.client.clone().close().await.unwrap();
}

/// Pause and resume from the handlers table and from the handler's page, and
/// the banner of a handler that paused itself (a separate journey, so other
/// steps can be added to the one above independently).
#[tokio::test]
async fn an_operator_pauses_and_resumes_a_handler_in_a_real_browser() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "name": "Softswitch sync", "target": receiver.url() }))
        .await;
    let id = handler["id"].as_i64().unwrap();
    c.goto(&app.url("/handlers")).await.unwrap();
    wait_for_text(c, "API token").await;
    fill(c, "#token", ADMIN_TOKEN).await;
    click(c, "form button[type=submit]").await;
    wait_for_text(c, "New Handler").await;

    // Pause from the table: an event emitted meanwhile is held, not sent.
    click(
        c,
        &format!("#handler-{id} form[action='/handlers/{id}/pause'] button"),
    )
    .await;
    wait_for_text(c, "The handler is paused").await;
    app.emit("clients.create", json!(1), json!({})).await;
    c.refresh().await.unwrap();
    wait_for_text(c, "paused · 1 held").await;
    screenshot(c, "handlers-paused").await;
    assert_eq!(receiver.received().len(), 0);

    // Resume from the handler's page: the held delivery is sent.
    c.goto(&app.url(&format!("/handlers/{id}/edit")))
        .await
        .unwrap();
    wait_for_text(c, "1 held").await;
    click(c, &format!("form[action='/handlers/{id}/resume'] button")).await;
    receiver.wait_for(1).await;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(&format!(
            "form[action='/handlers/{id}/pause']"
        )))
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/handlers/{id}")).await.1["paused"],
        false
    );

    // A handler that paused itself gets a banner on the overview.
    let failing = Receiver::with(|_, _| Reply::status(500)).await;
    let breaker = app
        .create_handler(json!({
            "name": "CRM push", "target": failing.url(), "max_attempts": 20,
            "auto_pause": { "failures": 1, "after": "0s", "probe_every": "1h" },
        }))
        .await;
    app.emit("clients.create", json!(2), json!({})).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app
        .get(&format!("/api/v1/handlers/{}", breaker["id"]))
        .await
        .1["paused"]
        != true
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paused itself"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.goto(&app.url("/")).await.unwrap();
    wait_for_text(c, "CRM push paused itself: 1 consecutive failure over").await;
    screenshot(c, "overview-auto-paused").await;
    browser.client.clone().close().await.unwrap();
}
