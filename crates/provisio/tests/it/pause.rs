//! Pause and resume, and the automatic pause (circuit breaker): a paused
//! handler keeps its deliveries (held) and sends none; resume sends them in
//! per-object order; a handler that keeps failing pauses itself, says so with
//! a `provisio.handler.paused` event, and resumes on its first good probe.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::cli::cli;
use crate::helpers::*;

/// Waits until the handler's JSON satisfies `check`, and returns it.
async fn wait_handler(app: &TestApp, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
    app.wait_get(&format!("/api/v1/handlers/{id}"), PATIENCE, check)
        .await
}

/// Emits `per_object` `clients.update` events for each of `objects` objects:
/// objects in parallel, each object's in order (`data.n`), so emit order per
/// object is defined.
async fn emit_per_object(app: &Arc<TestApp>, objects: u64, per_object: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for object in 0..objects {
        let app = app.clone();
        tasks.spawn(async move {
            for n in 0..per_object {
                app.emit("clients.update", json!(object), json!({ "n": n }))
                    .await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// An app with one handler for every `clients.*` event, to a receiver that
/// answers 200: the app, the receiver and the handler's JSON.
async fn app_with_handler() -> (Arc<TestApp>, Receiver, Value) {
    let app = Arc::new(TestApp::spawn().await);
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;
    (app, receiver, handler)
}

/// Per object, the `data.n` of what arrived, in arrival order.
fn arrivals_per_object(received: &[Received]) -> HashMap<u64, Vec<u64>> {
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    for r in received {
        let body = r.json();
        seen.entry(body["event"]["object_id"].as_u64().unwrap())
            .or_default()
            .push(body["data"]["n"].as_u64().unwrap());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_every_delivery_and_resume_sends_them_in_order() {
    let (app, receiver, handler) = app_with_handler().await;
    let id = &handler["id"];
    assert_eq!(
        (&handler["paused"], &handler["paused_reason"]),
        (&json!(false), &Value::Null)
    );

    let paused = app.handler_action(id, "pause").await;
    assert_eq!(
        (&paused["paused"], &paused["paused_reason"]),
        (&json!(true), &json!("operator"))
    );

    let (objects, per_object) = (50, 20);
    emit_per_object(&app, objects, per_object).await;
    // Everything is kept: one held delivery per object, the rest waiting
    // behind it.
    let (_, held) = app.get(&format!("/api/v1/handlers/{id}")).await;
    let mut counts = held["queue"].clone();
    assert!(counts["oldest_at"].is_string(), "{held}");
    counts.as_object_mut().unwrap().remove("oldest_at");
    assert_eq!(
        counts,
        json!({ "pending": 0, "held": objects, "waiting": objects * (per_object - 1), "blocked": 0 }),
        "{held}"
    );
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["items"][0]["queue"]["held"], json!(objects));
    // The dispatcher was woken by every commit; give it time to (not) act.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 0, "a paused handler was called");
    assert!(app.executions(&format!("handler_id={id}")).await.is_empty());

    let resumed = app.handler_action(id, "resume").await;
    assert_eq!(
        (&resumed["paused"], &resumed["paused_reason"]),
        (&json!(false), &Value::Null)
    );
    let total = (objects * per_object) as usize;
    let received = receiver.wait_for(total).await;
    let expected: Vec<u64> = (0..per_object).collect();
    let seen = arrivals_per_object(&received);
    assert_eq!(seen.len() as u64, objects);
    for (object, order) in seen {
        assert_eq!(order, expected, "object {object} arrived out of order");
    }
    wait_handler(&app, id, |h| {
        h["queue"]
            == json!({ "pending": 0, "held": 0, "waiting": 0, "blocked": 0, "oldest_at": null })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), total, "nothing is sent twice");
}

#[tokio::test]
async fn a_held_delivery_reads_as_held_and_pending_again_after_resume() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let id = &handler["id"];
    app.handler_action(id, "pause").await;
    let event = app.emit("clients.create", json!(1), json!({})).await;
    let event_id = event["id"].as_str().unwrap();
    let (_, read) = app.get(&format!("/api/v1/events/{event_id}")).await;
    assert_eq!(read["deliveries"][0]["state"], json!("held"), "{read}");
    // Changing its settings keeps the pause.
    let (status, changed) = app
        .patch(&format!("/api/v1/handlers/{id}"), json!({ "priority": 5 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["paused"], json!(true));
    app.handler_action(id, "resume").await;
    app.wait_for_event(event["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == json!("success")
    })
    .await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_pauses_itself_says_so_and_resumes_on_a_good_probe() {
    let app = TestApp::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let switch = healthy.clone();
    let flaky = Receiver::with(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(503)
        }
    })
    .await;
    let alerts = Receiver::ok().await;
    app.create_handler(json!({
        "name": "pager", "events_id": "provisio.handler.paused", "target": alerts.url(),
    }))
    .await;
    let handler = app
        .create_handler(json!({
            "name": "softswitch", "events_id": "clients.*", "target": flaky.url(),
            "max_attempts": 50,
            "auto_pause": { "failures": 3, "after": "1s", "probe_every": "1s" },
        }))
        .await;
    let id = &handler["id"];
    assert_eq!(
        handler["auto_pause"],
        json!({ "failures": 3, "after": "1s", "probe_every": "1s" })
    );
    let first = app.emit("clients.create", json!(1), json!({})).await;

    // Retries every 50-100 ms: three failures come fast, but the run must
    // span a second before the breaker trips.
    let paused = wait_handler(&app, id, |h| h["paused"] == json!(true)).await;
    let reason = paused["paused_reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("consecutive failures over")
            && reason.contains("last: the receiver answered 503"),
        "{reason}"
    );
    let failures_at_pause = flaky.received().len();
    assert!(failures_at_pause >= 3, "{failures_at_pause}");

    // Whoever subscribed hears of it.
    let alert = alerts.wait_for(1).await[0].json();
    assert_eq!(
        alert["event"]["events_id"],
        json!("provisio.handler.paused")
    );
    assert_eq!(alert["event"]["object_id"], *id);
    assert_eq!(
        alert["data"],
        json!({ "handler_id": id, "name": "softswitch", "reason": reason })
    );

    // While paused, new events are held and one probe per second is made;
    // a failed probe keeps the pause.
    let held = app.emit("clients.create", json!(2), json!({})).await;
    let probes_from = tokio::time::Instant::now();
    flaky.wait_for(failures_at_pause + 1).await;
    let (_, still) = app.get(&format!("/api/v1/handlers/{id}")).await;
    assert_eq!(still["paused_reason"], json!(reason), "{still}");
    assert_eq!(still["queue"]["held"], json!(2), "{still}");
    flaky.wait_for(failures_at_pause + 2).await;
    let probes = flaky.received().len() - failures_at_pause;
    let seconds = probes_from.elapsed().as_secs() as usize;
    assert!(
        probes <= seconds + 2,
        "{probes} probes in {seconds} s: probing is not paced"
    );

    // The receiver recovers: the next probe succeeds and the handler
    // resumes by itself, sending what it held.
    healthy.store(true, Ordering::SeqCst);
    wait_handler(&app, id, |h| h["paused"] == json!(false)).await;
    for event in [&first, &held] {
        app.wait_for_event(event["id"].as_str().unwrap(), |e| {
            e["deliveries"][0]["state"] == json!("success")
        })
        .await;
    }
    let after = app.emit("clients.create", json!(3), json!({})).await;
    app.wait_for_event(after["id"].as_str().unwrap(), |e| {
        e["deliveries"][0]["state"] == json!("success")
    })
    .await;
    assert_eq!(alerts.received().len(), 1, "one pause, one alert");
}

#[tokio::test]
async fn pause_and_auto_pause_refuse_bad_input_and_change_nothing() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;

    for action in ["pause", "resume"] {
        let (status, body) = app
            .post(&format!("/api/v1/handlers/999/{action}"), json!({}))
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }

    let before = app
        .create_handler(json!({ "stage": "before", "target": receiver.url() }))
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/handlers/{}/pause", before["id"]),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before stage"),
        "{body}"
    );
    let (_, unchanged) = app.get(&format!("/api/v1/handlers/{}", before["id"])).await;
    assert_eq!(unchanged["paused"], json!(false));

    let bad = [
        (json!({ "failures": 0 }), "auto_pause.failures"),
        (
            json!({ "failures": 3, "after": "soon" }),
            "auto_pause.after",
        ),
        (json!({ "failures": 3, "after": "8d" }), "auto_pause.after"),
        (
            json!({ "failures": 3, "probe_every": "0s" }),
            "auto_pause.probe_every",
        ),
        (json!({ "failures": 3, "cooldown": "1m" }), "auto_pause"),
        (json!({ "after": "1m" }), "auto_pause"),
    ];
    for (auto_pause, field) in &bad {
        let (status, body) = app
            .post(
                "/api/v1/handlers",
                json!({
                    "name": "x", "events_id": "clients.create", "target": receiver.url(),
                    "auto_pause": auto_pause,
                }),
            )
            .await;
        let fields = assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        let named = fields
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with(field));
        assert!(named, "{auto_pause} did not name {field}: {body}");
    }
    let (_, list) = app.get("/api/v1/handlers").await;
    assert_eq!(list["total"], json!(1), "a refused create stored nothing");

    let handler = app
        .create_handler(json!({
            "target": receiver.url(), "auto_pause": { "failures": 12 },
        }))
        .await;
    let id = &handler["id"];
    assert_eq!(
        handler["auto_pause"],
        json!({ "failures": 12, "after": "10m", "probe_every": "5m" }),
        "the defaults fill what is left out"
    );
    for (auto_pause, _) in &bad {
        let (status, body) = app
            .patch(
                &format!("/api/v1/handlers/{id}"),
                json!({ "auto_pause": auto_pause }),
            )
            .await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (_, same) = app.get(&format!("/api/v1/handlers/{id}")).await;
    assert_eq!(same["auto_pause"], handler["auto_pause"]);
    let (_, other_change) = app
        .patch(&format!("/api/v1/handlers/{id}"), json!({ "priority": 1 }))
        .await;
    assert_eq!(
        other_change["auto_pause"], handler["auto_pause"],
        "absent keeps it"
    );
    let (_, off) = app
        .patch(
            &format!("/api/v1/handlers/{id}"),
            json!({ "auto_pause": null }),
        )
        .await;
    assert_eq!(off["auto_pause"], Value::Null, "null turns it off");

    // Pausing twice, or resuming a running handler, is harmless.
    for action in ["pause", "pause", "resume", "resume"] {
        let (status, body) = app
            .post(&format!("/api/v1/handlers/{id}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["paused"], json!(action == "pause"));
    }
}

#[tokio::test]
async fn the_cli_pauses_and_resumes() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "target": receiver.url() }))
        .await;
    let id = handler["id"].to_string();
    let (ok, out, err) = cli(&app, &["handlers", "pause", &id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("paused (0 held)"), "{out}");
    let update = [
        "handlers",
        "update",
        &id,
        "--auto-pause-failures",
        "4",
        "--auto-pause-after",
        "2m",
        "--json",
    ];
    let (ok, out, err) = cli(&app, &update).await;
    assert!(ok, "{err}");
    let updated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        updated["auto_pause"],
        json!({ "failures": 4, "after": "2m", "probe_every": "5m" })
    );
    let (ok, out, err) = cli(&app, &["handlers", "resume", &id, "--json"]).await;
    assert!(ok, "{err}");
    let resumed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["paused"], json!(false));
}

/// Node A pauses; node B, which routes and dispatches on its own, holds too,
/// and resumes when resumed through B, in per-object order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_made_on_one_node_holds_deliveries_on_every_node() {
    use crate::postgres::{Cluster, Emitter, assert_ordered, call, emit_all, wait_unique};

    let Some(Cluster {
        db: _db,
        client,
        receiver,
        a,
        b,
    }) = Cluster::start().await
    else {
        return;
    };
    let (_, list) = call(
        &client,
        reqwest::Method::GET,
        format!("{}/api/v1/handlers", a.base),
        None,
    )
    .await;
    let id = list["items"][0]["id"].clone();
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/handlers/{id}/pause", a.base),
        None,
    )
    .await;
    assert_eq!((status, &body["paused"]), (200, &json!(true)), "{body}");
    // Node B reloads on the change's NOTIFY, within the promised second.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (objects, per_object) = (10, 20);
    let emitter = Emitter::new(&client, &[&a, &b]);
    emit_all(emitter, objects, per_object).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        0,
        "a node called a paused handler"
    );
    let (_, on_b) = call(
        &client,
        reqwest::Method::GET,
        format!("{}/api/v1/handlers/{id}", b.base),
        None,
    )
    .await;
    assert_eq!(on_b["queue"]["held"], json!(objects), "{on_b}");

    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/handlers/{id}/resume", b.base),
        None,
    )
    .await;
    assert_eq!((status, &body["paused"]), (200, &json!(false)), "{body}");
    let received = wait_unique(&receiver, (objects * per_object) as usize).await;
    assert_ordered(&received, objects, per_object);
}

/// An operator's long day: one busy object's events pile up behind a pause
/// (a line thousands long). Each delivery that finishes releases the next,
/// so the line drains one release at a time; a release that read the whole
/// line (it did: 2.8 s each at 5,000 on SQLite) made this take hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_thousands_long_drains_in_order_after_resume() {
    let (app, receiver, handler) = app_with_handler().await;
    let id = &handler["id"];
    app.handler_action(id, "pause").await;
    let per_object = 3_000;
    emit_per_object(&app, 1, per_object).await;
    app.handler_action(id, "resume").await;
    // Generous: a release per delivery takes well under a millisecond.
    let received = receiver
        .wait_for_within(per_object as usize, Duration::from_secs(90))
        .await;
    let expected: Vec<u64> = (0..per_object).collect();
    assert_eq!(arrivals_per_object(&received)[&0], expected);
}
