//! Latency at a fixed offered rate: alone, beside eight handlers whose
//! receivers never answer, and beside one held to a call at a time by a
//! slow receiver.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::CpuMeter;
use crate::Bench;
use crate::harness::{Sink, create_handler, delete_handler, emit, incomplete, percentile};

/// Emits `rate` events a second for `seconds`, spread over `emit_urls`,
/// and returns the emit → receiver latencies, sorted, and whether every
/// event arrived.
pub async fn fixed_rate(
    client: &reqwest::Client,
    emit_urls: &[String],
    sink: &Sink,
    rate: u64,
    seconds: u64,
    first_seq: u64,
) -> (Vec<Duration>, bool) {
    let base_count = sink.received.load(Ordering::SeqCst);
    sink.arrivals.lock().unwrap().clear();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let sent_at = Arc::new(Mutex::new(HashMap::with_capacity(total as usize)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        let seq = first_seq + i;
        let url = emit_urls[i as usize % emit_urls.len()].clone();
        let (client, sent_at) = (client.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            sent_at.lock().unwrap().insert(seq, Instant::now());
            emit(&client, &url, seq).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += u64::from(t.await.unwrap());
    }
    let all_arrived =
        crate::harness::wait_received(sink, base_count + accepted, Duration::from_secs(120)).await;
    let mut latencies: Vec<Duration> = {
        let arrivals = sink.arrivals.lock().unwrap();
        let sent_at = sent_at.lock().unwrap();
        sent_at
            .iter()
            .filter_map(|(seq, sent)| {
                arrivals
                    .get(seq)
                    .map(|arrived| arrived.saturating_duration_since(*sent))
            })
            .collect()
    };
    latencies.sort();
    (latencies, all_arrived)
}

/// Prints p50, p99 and max of sorted `latencies`.
fn print_latencies(latencies: &[Duration]) {
    for (name, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "  emit -> receiver {name}:    {:>9.2} ms",
            percentile(latencies, p).as_secs_f64() * 1000.0
        );
    }
}

/// One fixed rate for `--seconds`: latencies and CPU per event.
pub async fn run(bench: &Bench, rate: u64, first_seq: u64) {
    measure(bench, "fixed rate", "", rate, first_seq).await;
}

/// `rate` events a second for `--seconds`, printed under `heading` (and
/// `to` after the rate): the latencies and the CPU per event.
pub async fn measure(bench: &Bench, heading: &str, to: &str, rate: u64, first_seq: u64) {
    let seconds = bench.opts.seconds;
    let cpu = CpuMeter::start(bench).await;
    let (latencies, all_arrived) = fixed_rate(
        &bench.client,
        &bench.emit_urls,
        &bench.sink,
        rate,
        seconds,
        first_seq,
    )
    .await;
    println!();
    println!(
        "{heading}: {rate} events/s for {seconds} s{to}{}",
        incomplete(all_arrived)
    );
    print_latencies(&latencies);
    cpu.print_per_event(bench, rate * seconds).await;
}

/// Eight more handlers for the same events, whose receivers accept
/// connections and never answer (60 s timeout): the healthy handler's
/// latency at the highest fixed rate should stay what it was alone.
pub async fn beside_hung(bench: &Bench) {
    let (mut holes, mut hung) = (Vec::new(), Vec::new());
    for i in 0..8 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}/hook", listener.local_addr().unwrap());
        holes.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }));
        let id = create_handler(
            &bench.client,
            &bench.base,
            json!({ "name": format!("hung {i}"), "events_id": "clients.*",
                    "target": target, "timeout_ms": 60_000, "ordered": false }),
        )
        .await;
        hung.push(id);
    }
    let rate = bench.opts.highest_rate();
    healthy_beside(bench, "8 hung handlers", rate, 4_000_000_000).await;
    // Later phases (the before chain, replay) measure without them: left
    // behind, they would get every later event too, retrying against
    // closed ports.
    for id in hung {
        delete_handler(&bench.client, &bench.base, id).await;
    }
    for hole in holes {
        hole.abort();
    }
}

/// One more handler for the same events, capped at one call at a time to a
/// receiver that answers after 200 ms, so its deliveries queue: at the
/// lowest fixed rate, the healthy handler's latency and the CPU per event
/// should stay what they were alone (the capped handler's finishes wake the
/// dispatcher, the healthy one's need not).
pub async fn beside_capped(bench: &Bench) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/hook", listener.local_addr().unwrap());
    let slow = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            axum::http::StatusCode::OK
        });
        axum::serve(listener, app).await.unwrap();
    });
    let capped = create_handler(
        &bench.client,
        &bench.base,
        json!({ "name": "capped", "events_id": "clients.*", "target": target,
                "max_in_flight": 1, "ordered": false }),
    )
    .await;
    let rate = bench.opts.lowest_rate();
    let beside = "a handler capped at one call to a 200 ms receiver";
    healthy_beside(bench, beside, rate, 5_000_000_000).await;
    delete_handler(&bench.client, &bench.base, capped).await;
    slow.abort();
}

/// The healthy handler at `rate` for `--seconds`, once the handlers
/// `beside` it are set up: its latencies and the CPU per event.
async fn healthy_beside(bench: &Bench, beside: &str, rate: u64, first_seq: u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heading = format!("beside {beside}");
    measure(bench, &heading, " to the healthy one", rate, first_seq).await;
}
