//! Replay: logged events back-filled to a new handler by one replay job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Sink, emit_many, incomplete, start_sink, wait_received};
use crate::{Bench, TOKEN};

/// `--events` events of a type of their own (`clients.accounts.update`,
/// 20 per object, so per-object order binds), delivered to the benchmark's
/// handler, then resent as one replay job to a handler created after them (a
/// back-fill) whose receiver is a second sink. Prints the job's start (its
/// `INSERT … SELECT`) and deliveries/s from the job's start to the last
/// delivery's arrival.
pub async fn run(bench: &Bench) {
    let (client, base, emit_urls) = (&bench.client, &bench.base, &bench.emit_urls);
    let (sink, opts) = (&bench.sink, &bench.opts);
    const PER_OBJECT: u64 = 20;
    let events_id = "clients.accounts.update";
    let base_count = sink.received.load(Ordering::SeqCst);
    let objects = (opts.events / PER_OBJECT).max(1);
    let emitted = Instant::now();
    let accepted = emit_many(client, emit_urls, opts.concurrency, opts.events, move |i| {
        (events_id, 5_000_000_000 + i % objects, 5_000_000_000 + i)
    })
    .await;
    assert!(
        wait_received(sink, base_count + accepted, Duration::from_secs(300)).await,
        "the events to replay were not all delivered"
    );
    let first_delivery = emitted.elapsed();

    let second = Arc::new(Sink::default());
    let addr = start_sink(second.clone());
    let created = client
        .post(format!("{base}/api/v1/handlers"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "replayed", "events_id": events_id, "target": format!("http://{addr}/hook") }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let handler: serde_json::Value = created.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let resp = client
        .post(format!("{base}/api/v1/replays"))
        .bearer_auth(TOKEN)
        .json(&json!({ "handler_id": handler["id"], "events_id": events_id }))
        .send()
        .await
        .unwrap();
    let job_started_in = started.elapsed();
    assert_eq!(resp.status(), 202);
    let job: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(job["queued"], accepted, "{job}");
    let all_arrived = wait_received(&second, accepted, Duration::from_secs(300)).await;
    let took = started.elapsed();
    println!();
    println!(
        "replay: {} logged events ({} objects) back-filled to a new handler{}",
        opts.events,
        objects,
        incomplete(all_arrived)
    );
    println!(
        "  first delivered:         {:>9.0} /s (emitted, same order per object)",
        opts.events as f64 / first_delivery.as_secs_f64()
    );
    println!(
        "  job start (POST):        {:>9.0} ms",
        job_started_in.as_secs_f64() * 1000.0
    );
    println!(
        "  replayed deliveries:     {:>9.0} /s (job start to the last arrival)",
        second.received.load(Ordering::SeqCst) as f64 / took.as_secs_f64()
    );
}
