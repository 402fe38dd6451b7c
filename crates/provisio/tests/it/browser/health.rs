//! Health and queue in the web section: a failing handler is marked in the
//! Handlers table and comes first on the overview, the overview counts
//! deliveries (not attempts), and the queue is shown with its oldest age.

use fantoccini::Locator;
use serde_json::json;

use super::*;
use crate::helpers::*;

#[tokio::test]
async fn a_failing_handler_is_marked_and_first_and_the_queue_is_shown() {
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    // Two quick retries, then an hour: a failing head stays pending (three
    // attempts failed) while the operator looks.
    let app = TestApp::spawn_with(|s| {
        s.retry_schedule = provisio_core::retry::RetrySchedule::parse("50ms,50ms,1h").unwrap();
    })
    .await;
    let ok = Receiver::ok().await;
    let down = Receiver::with(|_, _| Reply::status(500)).await;
    let gone = Receiver::with(|_, _| Reply::status(500)).await;
    // The healthy handler comes first by priority; the failing one must still lead.
    let healthy = app
        .create_handler(json!({ "name": "CRM sync", "priority": 1, "target": ok.url() }))
        .await;
    let failing = app
        .create_handler(
            json!({ "name": "Softswitch", "priority": 50, "target": down.url(),
                                "ordered": true, "max_attempts": 5 }),
        )
        .await;
    // Unordered, three attempts: each delivery fails for good after three calls.
    let gateway = app
        .create_handler(
            json!({ "name": "Gateway", "priority": 60, "target": gone.url(),
                                "ordered": false, "max_attempts": 3 }),
        )
        .await;
    // Three objects, two events each: the healthy handler gets six deliveries
    // through; Softswitch has each object's head pending (three failed
    // attempts) and its second event waiting; Gateway's six deliveries
    // failed, eighteen calls.
    for object in 1..=3 {
        for step in 0..2 {
            app.emit("clients.create", json!(object), json!({ "step": step }))
                .await;
        }
    }
    ok.wait_for(6).await;
    down.wait_for(9).await;
    gone.wait_for(18).await;
    let (hid, fid) = (&healthy["id"], &failing["id"]);
    let read = app
        .wait_get(&format!("/api/v1/handlers/{fid}"), PATIENCE, |h| {
            h["queue"]["pending"] == 3 && h["queue"]["waiting"] == 3
        })
        .await;
    assert_eq!(read["health"]["state"], "failing", "{read}");
    app.wait_get(&format!("/api/v1/handlers/{hid}"), PATIENCE, |h| {
        h["health"]["succeeded_24h"] == 6
    })
    .await;
    let gid = &gateway["id"];
    app.wait_get(&format!("/api/v1/handlers/{gid}"), PATIENCE, |h| {
        h["health"]["failed_24h"] == 6
    })
    .await;

    log_in(c, &app, "/handlers").await;
    wait_for_text(c, "New Handler").await;
    let row = text_of(c, &format!("#handler-{fid}")).await;
    assert!(row.contains("failing"), "{row}");
    assert!(row.contains("last failure"), "{row}");
    assert!(row.contains("3 pending · 3 waiting · oldest"), "{row}");
    let badge = c
        .find(Locator::Css(&format!("#handler-{fid} .health.failing")))
        .await
        .unwrap();
    let colour = badge.css_value("color").await.unwrap();
    assert!(colour.contains("180, 35, 24"), "failing is red: {colour}");
    let healthy_row = text_of(c, &format!("#handler-{hid}")).await;
    assert!(healthy_row.contains("ok"), "{healthy_row}");
    assert!(!healthy_row.contains("failing"), "{healthy_row}");
    screenshots_at_both_widths(c, "handlers-health").await;

    c.goto(&app.url("/")).await.unwrap();
    wait_for_text(c, "Queue").await;
    let total = text_of(c, "#queue-total").await;
    assert!(
        total.contains("3 pending · 3 waiting · 0 held · 0 blocked · oldest"),
        "{total}"
    );
    let first = text_of(c, ".cards .card:first-child h2").await;
    assert!(
        first.contains("Softswitch") && first.contains("failing"),
        "failing first: {first}"
    );
    // Counted in deliveries: six succeeded for the healthy one; the failing
    // one has none finished (three attempts failed, but no delivery is done).
    let healthy_card = text_of(c, &format!("#card-{hid}")).await;
    assert!(
        healthy_card.contains("6 deliveries succeeded"),
        "{healthy_card}"
    );
    assert!(healthy_card.contains("0 failed"), "{healthy_card}");
    let failing_card = text_of(c, &format!("#card-{fid}")).await;
    assert!(
        failing_card.contains("0 deliveries succeeded"),
        "{failing_card}"
    );
    assert!(
        failing_card.contains("3 pending · 3 waiting · oldest"),
        "{failing_card}"
    );
    assert!(failing_card.contains("last failure"), "{failing_card}");
    // Eighteen failed calls are six failed deliveries.
    let gateway_card = text_of(c, &format!("#card-{gid}")).await;
    assert!(gateway_card.contains("6 failed"), "{gateway_card}");
    assert!(
        gateway_card.contains("0 deliveries succeeded"),
        "{gateway_card}"
    );
    let second = text_of(c, ".cards .card:nth-child(2) h2").await;
    assert!(
        second.contains("Gateway"),
        "both failing handlers lead: {second}"
    );
    screenshots_at_both_widths(c, "overview-health").await;
}
