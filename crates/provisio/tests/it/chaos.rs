//! Chaos: crashes at the worst moment, handlers that hang, a disk that fills.
//! What must hold through each: nothing accepted is lost, per-object order
//! holds, every call that reached a receiver has a row in the log, a dead
//! target costs only its own handler, and the server recovers by itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::*;

/// Every execution row of the log, oldest first, paged through the API.
async fn all_executions(client: &reqwest::Client, url: impl Fn(&str) -> String) -> Vec<Value> {
    let mut rows = Vec::new();
    for page in 1.. {
        let (_, body) = read(
            client
                .get(url(&format!("/api/v1/executions?per_page=500&page={page}")))
                .bearer_auth(CHAOS_TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let items = body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        rows.extend(items);
    }
    rows.reverse();
    rows
}

const CHAOS_TOKEN: &str = "chaos-admin-token-123456";

/// kill -9 ten times while deliveries are in flight, then let it drain.
/// Counts lost and out-of-order deliveries (there must be none) and checks
/// that the log accounts for every call the receiver saw: each arrival has a
/// row (success, fail, or `unknown` for an attempt a crash interrupted) and
/// each delivery's attempt numbers run 1, 2, 3… without a gap.
#[tokio::test]
async fn kill_9_during_load_loses_nothing_and_logs_every_arrival() {
    const CYCLES: usize = 10;
    const PER_CYCLE: usize = 60;
    const OBJECTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PROVISIO_ADMIN_TOKEN", CHAOS_TOKEN),
        ("PROVISIO_RETRY_SCHEDULE", "100ms"),
    ];
    let client = http_client();
    // While `hold` is set, the receiver keeps its answers back: every kill
    // then finds attempts in flight, however slow or fast the machine is
    // (emits that outpace the deliveries, or the other way round).
    let hold = Arc::new(AtomicBool::new(false));
    let holding = hold.clone();
    let receiver = Receiver::with(move |_, _| {
        let delay = if holding.load(Ordering::SeqCst) {
            10_000
        } else {
            40
        };
        Reply::delayed(200, Duration::from_millis(delay))
    })
    .await;

    let mut emitted = 0;
    for cycle in 0..CYCLES {
        let server = Binary::serve(dir.path(), &env);
        if cycle == 0 {
            let created = client
                .post(server.url("/api/v1/handlers"))
                .bearer_auth(CHAOS_TOKEN)
                .json(&json!({ "name": "chaos", "events_id": "clients.*",
                                "target": receiver.url(), "max_attempts": 50 }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
        }
        hold.store(true, Ordering::SeqCst);
        let before = receiver.received().len();
        for _ in 0..PER_CYCLE {
            let resp = client
                .post(server.url("/api/v1/events"))
                .bearer_auth(CHAOS_TOKEN)
                .json(
                    &json!({ "events_id": "clients.update", "object_id": emitted % OBJECTS,
                                "data": { "seq": emitted } }),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202, "cycle {cycle}");
            emitted += 1;
        }
        // Once an attempt has reached the receiver (and is held there), pull
        // the plug mid-delivery.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while receiver.received().len() == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill9();
        hold.store(false, Ordering::SeqCst);
    }

    let server = Binary::serve(dir.path(), &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        if delivered.len() >= emitted {
            break delivered;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lost: only {} of {emitted} deliveries arrived",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivered.len(), emitted, "nothing lost");

    // Per object, arrivals never go back in emit order (a repeat of the
    // latest one, at-least-once, is allowed).
    let arrivals = receiver.received();
    let mut latest: HashMap<i64, i64> = HashMap::new();
    let mut out_of_order = 0;
    for r in &arrivals {
        let body = r.json();
        let object = body["event"]["object_id"].as_i64().unwrap();
        let seq = body["data"]["seq"].as_i64().unwrap();
        if latest.insert(object, seq).is_some_and(|prev| seq < prev) {
            out_of_order += 1;
        }
    }
    assert_eq!(out_of_order, 0, "deliveries arrived out of order");

    // The log accounts for every arrival, once the last results are in.
    let url = |path: &str| server.url(path);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (rows, by_delivery) = loop {
        let rows = all_executions(&client, url).await;
        let mut by_delivery: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for row in &rows {
            by_delivery
                .entry(row["delivery_id"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    row["attempt"].as_u64().unwrap(),
                    row["status"].as_str().unwrap().to_owned(),
                ));
        }
        let successes = by_delivery
            .values()
            .filter(|attempts| attempts.iter().any(|(_, s)| s == "success"))
            .count();
        if successes >= emitted || tokio::time::Instant::now() > deadline {
            assert_eq!(
                successes, emitted,
                "every delivery has a success in the log"
            );
            break (rows, by_delivery);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut arrivals_per_delivery: HashMap<&str, usize> = HashMap::new();
    for r in &arrivals {
        *arrivals_per_delivery
            .entry(r.header("webhook-id"))
            .or_default() += 1;
    }
    let mut unlogged = 0;
    for (delivery, count) in &arrivals_per_delivery {
        let logged = by_delivery.get(*delivery).map_or(0, Vec::len);
        if logged < *count {
            unlogged += count - logged;
        }
    }
    assert_eq!(unlogged, 0, "arrivals without a row in the execution log");
    for (delivery, attempts) in &by_delivery {
        let mut numbers: Vec<u64> = attempts.iter().map(|(n, _)| *n).collect();
        numbers.sort();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "attempt numbers of {delivery}");
    }
    let unknown = rows.iter().filter(|r| r["status"] == "unknown").count();
    println!(
        "chaos: {CYCLES} kill -9 cycles, {emitted} deliveries, {} arrivals, {} log rows ({unknown} interrupted), 0 lost, 0 out of order",
        arrivals.len(),
        rows.len()
    );
    assert!(
        unknown > 0,
        "the kills interrupted no attempt: the test proved nothing"
    );
    server.terminate();
}

/// A receiver that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// Eight handlers whose receivers never answer, beside a healthy one: the
/// healthy handler's deliveries arrive as fast as if they were alone,
/// because the hung handlers cannot take every in-flight slot.
#[tokio::test]
async fn hung_handlers_cost_only_their_own_slots() {
    const EVENTS: usize = 1500;
    let app = TestApp::spawn().await;
    let mut holes = Vec::new();
    for i in 0..8 {
        let (url, task) = black_hole().await;
        app.create_handler(
            json!({ "name": format!("hung {i}"), "events_id": "clients.*",
                                   "target": url, "timeout_ms": 60_000, "ordered": false }),
        )
        .await;
        holes.push(task);
    }
    let healthy = Receiver::ok().await;
    app.create_handler(json!({ "name": "healthy", "events_id": "clients.*",
                               "target": healthy.url(), "ordered": false }))
        .await;

    // Emit from 32 clients at once; remember when each event was accepted.
    let accepted = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut emitters = Vec::new();
    for worker in 0..32 {
        let (client, url, accepted) = (
            app.client.clone(),
            app.url("/api/v1/events"),
            accepted.clone(),
        );
        emitters.push(tokio::spawn(async move {
            for i in (worker..EVENTS).step_by(32) {
                let resp = client
                    .post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "events_id": "clients.update", "object_id": i, "data": { "n": i } }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                accepted
                    .lock()
                    .unwrap()
                    .insert(i as u64, tokio::time::Instant::now());
            }
        }));
    }
    for e in emitters {
        e.await.unwrap();
    }
    let emitted_at = tokio::time::Instant::now();
    let arrived = {
        let deadline = emitted_at + Duration::from_secs(20);
        loop {
            let got = healthy.received();
            if got.len() >= EVENTS || tokio::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let late_at_3s = EVENTS
        - arrived
            .iter()
            .filter(|r| r.at <= emitted_at + Duration::from_secs(3))
            .count();
    let accepted = accepted.lock().unwrap();
    let mut latencies: Vec<Duration> = arrived
        .iter()
        .map(|r| {
            let n = r.json()["data"]["n"].as_u64().unwrap();
            r.at.saturating_duration_since(accepted[&n])
        })
        .collect();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "hung handlers: {} of {EVENTS} healthy deliveries arrived, {late_at_3s} still undelivered 3 s after the last emit, emit -> receiver p99 {p99:?}",
        arrived.len()
    );
    assert_eq!(arrived.len(), EVENTS, "the healthy handler was starved");
    assert_eq!(late_at_3s, 0, "healthy deliveries waited behind hung ones");
    for hole in holes {
        hole.abort();
    }
}

/// kill -9 with hundreds of deliveries unfinished, restart: every delivery
/// arrives (counted by webhook-id), and per-object order holds.
#[tokio::test]
async fn nothing_accepted_is_lost_when_the_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PROVISIO_ADMIN_TOKEN", "crash-admin-token-12345"),
        ("PROVISIO_RETRY_SCHEDULE", "300ms"),
    ];
    let token = env[0].1;
    let client = http_client();
    let up = Arc::new(AtomicBool::new(false));
    // Down (503) until the server has been killed, then up.
    let receiver = Receiver::down_until(up.clone()).await;

    let server = Binary::serve(dir.path(), &env);
    let created = client
        .post(server.url("/api/v1/handlers"))
        .bearer_auth(token)
        .json(&json!({ "name": "crash", "events_id": "clients.*", "target": receiver.url(), "max_attempts": 50 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    const EVENTS: usize = 400;
    for i in 0..EVENTS {
        let resp = client
            .post(server.url("/api/v1/events"))
            .bearer_auth(token)
            .json(&json!({ "events_id": "clients.update", "object_id": i % 40, "data": { "seq": i } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    server.kill9();
    up.store(true, Ordering::SeqCst);

    let server = Binary::serve(dir.path(), &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        if delivered.len() >= EVENTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {EVENTS} deliveries arrived",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Per object, the deliveries the receiver accepted arrived in emit order.
    let mut last_seq: HashMap<i64, i64> = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.status == 200) {
        let body = r.json();
        let object = body["event"]["object_id"].as_i64().unwrap();
        let seq = body["data"]["seq"].as_i64().unwrap();
        if let Some(previous) = last_seq.insert(object, seq) {
            assert!(
                seq >= previous,
                "object {object}: seq {seq} arrived after {previous}"
            );
        }
    }
    server.terminate();
}
