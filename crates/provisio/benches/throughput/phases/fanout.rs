//! Fan-out: one event type to `--fanout` handlers (20), all to the
//! receiver; `--events` deliveries in all, from `--events / --fanout` emits.
//! Each emit makes one delivery per handler, so deliveries/s should beat the
//! single-handler burst (claims and records batch across handlers).

use std::time::Duration;

use serde_json::json;

use super::burst_of;
use crate::Bench;
use crate::harness::{create_handler, delete_handler, incomplete};

const EVENTS_ID: &str = "importd.process_success";

pub async fn run(bench: &Bench, burst_rate: Option<f64>) {
    let opts = &bench.opts;
    let target = format!("http://{}/fanout", bench.sink_addr);
    let mut ids = Vec::new();
    for i in 0..opts.fanout {
        ids.push(
            create_handler(
                &bench.client,
                &bench.base,
                json!({ "name": format!("fan-out {i}"), "events_id": EVENTS_ID, "target": format!("{target}/{i}") }),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let events = (opts.events / opts.fanout).max(1);
    let deliveries = events * opts.fanout;
    let run = burst_of(bench, events, deliveries, |i| {
        (EVENTS_ID, 7_000_000_000 + i, 7_000_000_000 + i)
    })
    .await;
    let rate = run.deliveries_per_s;
    println!();
    println!(
        "fan-out: {events} events to {} handlers, {deliveries} deliveries{}",
        opts.fanout,
        incomplete(run.all_arrived)
    );
    println!("  emits accepted:          {:>9.0} /s", run.emits_per_s);
    match burst_rate {
        Some(burst) => println!(
            "  deliveries end to end:   {rate:>9.0} /s  ({:.1}× the single-handler burst)",
            rate / burst
        ),
        None => println!("  deliveries end to end:   {rate:>9.0} /s"),
    }
    run.cpu.print_per_delivery(bench, deliveries).await;

    // Later phases measure the benchmark's handler alone again.
    for id in ids {
        delete_handler(&bench.client, &bench.base, id).await;
    }
}
