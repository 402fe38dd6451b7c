//! Replay and resync jobs (`/api/v1/replays`) against real receivers: what a
//! job matches and queues, per-object order at the receiver, progress to
//! `done`, status `failed`, back-fill, cancel, no double sending; on SQLite
//! and on PostgreSQL. Bad input, the command line and the Replays page are
//! in `replay_ui.rs`, which shares this file's helpers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use provisio_store::postgres::scratch::ScratchDatabase;
use serde_json::{Value, json};

use crate::helpers::*;

/// How long a replay of a few thousand events may take on a slow machine.
const RUN_PATIENCE: Duration = Duration::from_secs(120);

/// Emits `per_object` events for each of `objects` objects (`n` = 0, 1, … in
/// `data`; the first a create, the rest updates): objects in parallel, each
/// object's events one after another, so emit order per object is `n`.
pub(crate) async fn emit_objects(app: &Arc<TestApp>, objects: u64, per_object: u64) {
    let tasks: Vec<_> = (1..=objects)
        .map(|object| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..per_object {
                    let events_id = if n == 0 {
                        "clients.create"
                    } else {
                        "clients.update"
                    };
                    app.emit(events_id, json!(object), json!({ "n": n, "o": object }))
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Per object, the `n`s the receiver got, in arrival order.
fn arrivals(received: &[Received]) -> HashMap<u64, Vec<u64>> {
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    for r in received {
        let body = r.json();
        seen.entry(body["event"]["object_id"].as_u64().unwrap())
            .or_default()
            .push(body["data"]["n"].as_u64().unwrap());
    }
    seen
}

pub(crate) async fn start_replay(app: &TestApp, body: Value) -> Value {
    let (status, job) = app.post("/api/v1/replays", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job
}

/// Polls the job until `check` holds.
pub(crate) async fn wait_job(app: &TestApp, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    app.wait_get(&format!("/api/v1/replays/{id}"), RUN_PATIENCE, check)
        .await
}

async fn wait_received(receiver: &Receiver, n: usize) -> Vec<Received> {
    receiver.wait_for_within(n, RUN_PATIENCE).await
}

pub(crate) fn counts(job: &Value) -> [u64; 4] {
    ["matched", "queued", "sent", "remaining"].map(|k| job[k].as_u64().unwrap())
}

/// 3,000 logged events over 50 objects, back-filled to a new handler in
/// per-object order, then resynced (each object's latest update only).
async fn back_fill_and_resync(app: Arc<TestApp>) {
    let (objects, per_object) = (50, 60);
    let first = Receiver::ok().await;
    app.create_handler(json!({ "events_id": "clients.*", "target": first.url() }))
        .await;
    emit_objects(&app, objects, per_object).await;
    let total = (objects * per_object) as usize;
    wait_received(&first, total).await;

    // A handler created after the events: back-filled by a replay.
    let second = Receiver::ok().await;
    let handler = app
        .create_handler(json!({ "events_id": "clients.*", "target": second.url() }))
        .await;
    let job = start_replay(&app, json!({ "handler_id": handler["id"] })).await;
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(job["created_by"], "admin", "{job}");
    assert_eq!(counts(&job)[..2], [total as u64, total as u64]);
    let id = job["id"].as_str().unwrap();
    let done = wait_job(&app, id, |j| j["state"] == "done").await;
    assert_eq!(counts(&done), [total as u64, total as u64, total as u64, 0]);
    assert!(done["finished_at"].is_string(), "{done}");
    // The log's count stops at 1,000: page through the job's calls.
    let mut logged = 0;
    for page in 1.. {
        let (_, log) = app
            .get(&format!(
                "/api/v1/executions?replay_id={id}&per_page=500&page={page}"
            ))
            .await;
        let items = log["items"].as_array().unwrap().len();
        if items == 0 {
            break;
        }
        logged += items;
    }
    assert_eq!(logged, total, "the job's calls in the log");
    let got = wait_received(&second, total).await;
    assert_eq!(got.len(), total, "each event once");
    let expected: Vec<u64> = (0..per_object).collect();
    let seen = arrivals(&got);
    assert_eq!(seen.len() as u64, objects);
    for (object, order) in &seen {
        assert_eq!(order, &expected, "object {object} arrived out of order");
    }
    // New deliveries: the receivers' de-duplication never drops them.
    let original: HashSet<String> = first
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert!(
        got.iter()
            .all(|r| !original.contains(r.header("webhook-id")))
    );

    // A resync: each object's latest update, nothing else.
    let resync = start_replay(
        &app,
        json!({ "handler_id": handler["id"], "events_id": "clients.update", "latest_per_object": true }),
    )
    .await;
    assert_eq!(counts(&resync)[..2], [objects, objects]);
    let resync_id = resync["id"].as_str().unwrap();
    wait_job(&app, resync_id, |j| j["state"] == "done").await;
    let got = wait_received(&second, total + objects as usize).await;
    let latest = arrivals(&got[total..]);
    assert_eq!(latest.len() as u64, objects);
    assert!(
        latest.values().all(|n| n == &[per_object - 1]),
        "{latest:?}"
    );

    let (status, list) = app.get("/api/v1/replays?per_page=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], resync_id, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_back_fills_a_new_handler_in_order_and_a_resync_sends_the_latest() {
    back_fill_and_resync(Arc::new(TestApp::spawn().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_back_fills_and_resyncs_on_postgres() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let pg = provisio_store::postgres::PgSettings::new(db.url());
    let app =
        TestApp::spawn_with(|s| s.store.database = provisio::config::Database::Postgres(pg)).await;
    back_fill_and_resync(Arc::new(app)).await;
}

#[tokio::test]
async fn status_failed_resends_only_the_failed_ones() {
    let app = Arc::new(TestApp::spawn().await);
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    // Until it is healthy, the receiver refuses every third event.
    let receiver = Receiver::with(move |r, _| {
        let n = r.json()["data"]["n"].as_u64().unwrap();
        if up.load(Ordering::SeqCst) || n % 3 != 0 {
            Reply::status(200)
        } else {
            Reply::status(500)
        }
    })
    .await;
    let handler = app
        .create_handler(
            json!({ "events_id": "clients.*", "target": receiver.url(), "max_attempts": 1, "on_exhausted": "skip" }),
        )
        .await;
    emit_objects(&app, 4, 10).await;
    let id = handler["id"].as_i64().unwrap();
    app.wait_executions(&format!("handler_id={id}"), 40).await;
    let failed = app
        .executions(&format!("handler_id={id}&status=fail"))
        .await
        .len();
    assert_eq!(failed, 16, "n = 0, 3, 6, 9 of four objects");

    healthy.store(true, Ordering::SeqCst);
    let job = start_replay(&app, json!({ "handler_id": id, "status": "failed" })).await;
    assert_eq!(counts(&job)[..2], [16, 16]);
    let job_id = job["id"].as_str().unwrap();
    let done = wait_job(&app, job_id, |j| j["state"] == "done").await;
    assert_eq!(counts(&done), [16, 16, 16, 0]);
    let resent = &receiver.received()[40..];
    assert_eq!(resent.len(), 16);
    for (object, order) in arrivals(resent) {
        assert_eq!(order, [0, 3, 6, 9], "object {object}");
    }
    // Nothing failed is left: the same job now matches nothing.
    let again = start_replay(&app, json!({ "handler_id": id, "status": "failed" })).await;
    assert_eq!(again["state"], "done");
    assert_eq!(counts(&again), [0, 0, 0, 0]);
}

/// `n` logged events of one object, and a handler created after them whose
/// receiver takes 20 ms a call, so a replay of them runs for a while.
pub(crate) async fn slow_line(n: u64) -> (Arc<TestApp>, Receiver, i64) {
    let app = Arc::new(TestApp::spawn().await);
    let receiver = Receiver::with(|_, _| Reply::delayed(200, Duration::from_millis(20))).await;
    emit_objects(&app, 1, n).await;
    let handler = app
        .create_handler(json!({ "events_id": "clients.*", "target": receiver.url() }))
        .await;
    (app, receiver, handler["id"].as_i64().unwrap())
}

#[tokio::test]
async fn a_second_identical_job_while_the_first_runs_sends_nothing_twice() {
    let (app, receiver, handler) = slow_line(30).await;
    let first = start_replay(&app, json!({ "handler_id": handler })).await;
    let second = start_replay(&app, json!({ "handler_id": handler })).await;
    assert_eq!(counts(&first)[..2], [30, 30]);
    assert_eq!(counts(&second), [30, 0, 0, 0], "{second}");
    assert_eq!(second["state"], "done");
    wait_job(&app, first["id"].as_str().unwrap(), |j| {
        j["state"] == "done"
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 30);
    assert_eq!(arrivals(&got)[&1], (0..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn cancel_stops_what_was_not_sent_and_lets_the_line_move_on() {
    let (app, receiver, handler) = slow_line(200).await;
    let job = start_replay(&app, json!({ "handler_id": handler })).await;
    let id = job["id"].as_str().unwrap();
    // A new event for the object waits behind the replay's deliveries.
    app.emit("clients.update", json!(1), json!({ "n": 1000 }))
        .await;
    wait_received(&receiver, 5).await;
    let (status, cancelled) = app.delete(&format!("/api/v1/replays/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert!(
        cancelled["cancelled"].as_u64().unwrap() > 100,
        "{cancelled}"
    );
    // The attempt in flight, if any, finishes; nothing else of the job runs.
    let settled = wait_job(&app, id, |j| j["remaining"] == 0).await;
    assert_eq!(settled["state"], "cancelled");
    let sent = settled["sent"].as_u64().unwrap();
    assert_eq!(
        sent + settled["cancelled"].as_u64().unwrap(),
        200,
        "{settled}"
    );
    // The event emitted behind the job is delivered, after what was sent.
    let got = wait_received(&receiver, sent as usize + 1).await;
    let order = &arrivals(&got)[&1];
    assert_eq!(order.len() as u64, sent + 1, "{order:?}");
    assert_eq!(order[..sent as usize], (0..sent).collect::<Vec<_>>());
    assert_eq!(order.last(), Some(&1000));
    // Cancelling again changes nothing; a job that is done cannot be.
    let (status, again) = app.delete(&format!("/api/v1/replays/{id}")).await;
    assert_eq!(
        (status, &again["cancelled"]),
        (StatusCode::OK, &settled["cancelled"])
    );
    let nothing = start_replay(
        &app,
        json!({ "handler_id": handler, "object_id": "nobody" }),
    )
    .await;
    let (status, body) = app
        .delete(&format!(
            "/api/v1/replays/{}",
            nothing["id"].as_str().unwrap()
        ))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
}

/// A replay started on node B of two: both nodes send its deliveries, each
/// object's events still in emit order, and node A reports the job done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_runs_across_two_postgres_nodes_in_per_object_order() {
    use crate::postgres::{
        Cluster, Emitter, assert_ordered, call, create_handler, emit_all, wait_unique,
    };

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
    let (objects, per_object) = (10, 20);
    emit_all(Emitter::new(&client, &[&a, &b]), objects, per_object).await;
    wait_unique(&receiver, (objects * per_object) as usize).await;

    // A handler added after the fact, back-filled by one job started on B.
    let second = Receiver::ok().await;
    let h = create_handler(&client, &a, second.url()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, job) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v1/replays", b.base),
        Some(json!({ "handler_id": h["id"] })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["matched"], objects * per_object);
    let received = wait_unique(&second, (objects * per_object) as usize).await;
    assert_ordered(&received, objects, per_object);

    let url = format!("{}/api/v1/replays/{}", a.base, job["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = call(&client, reqwest::Method::GET, url.clone(), None).await;
        if job["state"] == "done" {
            assert_eq!(job["sent"], objects * per_object, "{job}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
