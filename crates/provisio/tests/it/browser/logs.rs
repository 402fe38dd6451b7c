//! The log views in a real browser: a forbidden before-stage call shown and
//! filtered as forbidden, a script's call in script terms, the response
//! search, the delivery and event pages, and Retry now making a waiting
//! delivery arrive at once; screenshots of each page at both widths.

use serde_json::json;

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn an_operator_finds_refusals_and_retries_a_waiting_delivery_in_a_real_browser() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    // An hour's backoff: only Retry now brings the next attempt soon.
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("1h").unwrap()
    })
    .await;
    app.write_script(
        "credit-check.sh",
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"allow\": false, \"reason\": \"account locked\"}'\n",
    );
    let refuser = app
        .create_handler(json!({
            "stage": "before", "kind": "script", "target": "credit-check.sh",
            "args": ["--limit", "500"], "name": "Credit check",
        }))
        .await;
    let receiver = Receiver::sequence(vec![
        Reply::with_body(503, "{\"error\": \"switch Maintenance window\"}"),
        Reply::with_body(200, "{\"synced\": true}"),
    ])
    .await;
    app.create_handler(json!({ "target": receiver.url(), "name": "Softswitch" }))
        .await;
    let (_, verdict) = app
        .post(
            "/api/v1/events/before",
            json!({ "events_id": "clients.create", "object_id": 12, "data": {} }),
        )
        .await;
    assert_eq!(verdict["allowed"], false, "{verdict}");
    let first = app
        .emit("clients.create", json!(7), json!({ "n": 1 }))
        .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    app.wait_for_event(&first_id, |e| e["deliveries"][0]["attempts"] == 1)
        .await;
    let second = app
        .emit("clients.create", json!(7), json!({ "n": 2 }))
        .await;
    let second = app
        .wait_for_event(second["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == "waiting"
        })
        .await;
    let waiting = second["deliveries"][0]["id"].as_str().unwrap().to_owned();

    // The log: the refusal is "forbidden", not a green success, and the
    // list shows attempts and when a failed one runs again.
    log_in(c, &app, "/executions").await;
    wait_for_text(c, "Advanced Search").await;
    wait_for_text(c, "forbidden").await;
    let badges = c
        .find_all(Locator::Css("#execution-rows .badge"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for b in badges {
        seen.push(b.text().await.unwrap());
    }
    assert!(seen.contains(&"forbidden".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"success".to_owned()), "{seen:?}");
    let next = text_of(c, "#execution-rows .next-attempt").await;
    assert!(next.contains("UTC"), "a retry is scheduled: {next}");
    screenshots_at_both_widths(c, "logs-list").await;

    // Filter by verdict, then by handler, from the Advanced Search.
    click(c, "#f-verdict option[value='forbidden']").await;
    click(c, "form[role=search] button[type=submit]").await;
    wait_for_text(c, "1 execution").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap()
            .contains("verdict=forbidden")
    );
    let rows = c
        .find_all(Locator::Css("#execution-rows tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    click(c, "#f-verdict option[value='']").await;
    click(c, &format!("#f-handler option[value='{}']", refuser["id"])).await;
    click(c, "form[role=search] button[type=submit]").await;
    wait_for_text(c, "Execution Logs · Credit check").await;

    // The script's call in script terms.
    click(c, "#execution-rows a[href^='/executions/']").await;
    wait_for_text(c, "Command run").await;
    let command = text_of(c, "#command").await;
    assert_eq!(command, "credit-check.sh --limit 500");
    assert_eq!(text_of(c, "#exit-code").await, "0");
    assert_eq!(text_of(c, "#execution-badge").await, "forbidden");
    let body = text_of(c, "main").await;
    assert!(
        !body.contains("Response status") && !body.contains("Header"),
        "{body}"
    );
    assert!(body.contains("Standard output") && body.contains("account locked"));
    screenshots_at_both_widths(c, "logs-execution-script").await;

    // Response search: the receiver's words, not provisio's error.
    c.goto(&app.url("/executions")).await.unwrap();
    wait_for_text(c, "Response contains").await;
    fill(c, "#f-response", "maintenance").await;
    click(c, "form[role=search] button[type=submit]").await;
    wait_for_text(c, "1 execution").await;
    let note = text_of(c, "#search-bound").await;
    assert!(note.contains("100,000"), "{note}");
    let response = text_of(c, "#execution-rows td.mono").await;
    assert!(response.starts_with("503"), "{response}");

    // The HTTP attempt's page links its delivery and event.
    click(c, "#execution-rows a[href^='/executions/']").await;
    wait_for_text(c, "Request sent").await;
    screenshots_at_both_widths(c, "logs-execution-http").await;
    click(c, "#event-link").await;
    wait_for_text(c, "Handlers it went to").await;
    wait_for_text(c, "Softswitch").await;
    screenshots_at_both_widths(c, "logs-event").await;

    // The waiting delivery's page: Retry now hurries the head of its line,
    // and both arrive at once, in order.
    c.goto(&app.url(&format!("/deliveries/{waiting}")))
        .await
        .unwrap();
    wait_for_text(c, "after the earlier deliveries of its object").await;
    assert_eq!(text_of(c, "#retry").await, "Retry now");
    screenshots_at_both_widths(c, "logs-delivery-waiting").await;
    click(c, "#retry").await;
    wait_for_text(c, "may not overtake it").await;
    let got = receiver.wait_for(3).await;
    let ns: Vec<_> = got.iter().map(|r| r.json()["data"]["n"].clone()).collect();
    assert_eq!(ns, [json!(1), json!(1), json!(2)]);
    // The page follows on its own (it polls): the state becomes final.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // Read in one script call: the page swaps its parts as it polls.
        let state = c
            .execute(
                "const e = document.querySelector('#delivery-state'); return e ? e.textContent.trim() : '';",
                vec![],
            )
            .await
            .unwrap();
        if state == "success" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery page stayed {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    screenshots_at_both_widths(c, "logs-delivery").await;

    // The log honours ?event_id=.
    c.goto(&app.url(&format!("/executions?event_id={first_id}")))
        .await
        .unwrap();
    wait_for_text(c, &format!("event {first_id}")).await;
    let rows = c
        .find_all(Locator::Css("#execution-rows tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the first event's two attempts");
}
