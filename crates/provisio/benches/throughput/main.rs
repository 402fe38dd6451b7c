//! The end-to-end benchmark: the real `provisio serve` binary (on SQLite, or on
//! PostgreSQL with `--database-url postgres://…`, one node or `--nodes 2`), a
//! fast loopback receiver and a load generator, all on this machine. Prints
//!
//! - emits/s accepted and deliveries/s completed end to end, for a burst;
//! - emit → receiver latency p50/p99/max at a fixed offered rate;
//! - the server's CPU time per delivered event;
//! - the before-stage chain's overhead with three no-op handlers;
//! - the fixed-rate latency again beside eight handlers that never answer;
//! - a replay of `--events` logged events to a new handler, in deliveries/s;
//! - what one handler filter and one request template cost per event.
//!
//! Run with `cargo bench --bench throughput` (add `-- --events N --rate R
//! --seconds S` to change the load; `-- --only replay` (or `burst`, `fixed`,
//! `before`, `hung`, `filters`) to run one phase after the warm-up; `-- --database-url URL [--nodes 2]` to run
//! on a PostgreSQL database, which should be empty: the benchmark's handler
//! must be the only one). With two nodes, the emits are spread across both.
//! Figures depend on the machine; they are printed, not asserted.

mod harness;
mod phases;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use harness::{Server, Sink, emit, emit_many, percentile, start_sink, wait_received};
use phases::{before_chain, filter_cost, fixed_rate, hung_handlers, replay};

pub const TOKEN: &str = "bench-admin-token-0123456789";

pub struct Options {
    /// A PostgreSQL URL; SQLite in a temporary directory when absent.
    database_url: Option<String>,
    /// Servers sharing the database (PostgreSQL only).
    nodes: usize,
    chains: usize,
    events: u64,
    concurrency: usize,
    rate: u64,
    seconds: u64,
    /// Run only this phase (after the warm-up); all when absent.
    only: Option<String>,
}

impl Options {
    fn runs(&self, phase: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == phase)
    }
}

fn options() -> Options {
    let mut o = Options {
        database_url: None,
        nodes: 1,
        chains: 2_000,
        events: 20_000,
        concurrency: 64,
        rate: 1_000,
        seconds: 10,
        only: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    if let Some(v) = value("--events") {
        o.events = v;
    }
    if let Some(v) = value("--concurrency") {
        o.concurrency = v as usize;
    }
    if let Some(v) = value("--rate") {
        o.rate = v;
    }
    if let Some(v) = value("--seconds") {
        o.seconds = v;
    }
    if let Some(v) = value("--chains") {
        o.chains = v as usize;
    }
    if let Some(v) = value("--nodes") {
        o.nodes = v as usize;
    }
    o.database_url = args
        .iter()
        .position(|a| a == "--database-url")
        .and_then(|i| args.get(i + 1))
        .cloned();
    o.only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    assert!(
        o.only
            .as_deref()
            .is_none_or(|p| ["burst", "fixed", "before", "hung", "replay", "filters"].contains(&p)),
        "--only takes burst, fixed, before, hung, replay or filters"
    );
    assert!(
        o.nodes == 1 || o.database_url.is_some(),
        "--nodes needs --database-url: SQLite is single-node"
    );
    o
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = options();
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Sink::default());
    let sink_addr = start_sink(sink.clone()).await;
    let servers: Vec<Server> = (0..opts.nodes)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            Server::start(&node_dir, opts.database_url.as_deref())
        })
        .collect();
    let cpu_seconds = || servers.iter().map(Server::cpu_seconds).sum::<f64>();
    let base = format!("http://{}", servers[0].addr);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(opts.concurrency)
        .build()
        .unwrap();

    let created = client
        .post(format!("{base}/api/v1/handlers"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "bench", "events_id": "clients.*", "target": format!("http://{sink_addr}/hook") }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let emit_urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}/api/v1/events", s.addr))
        .collect();
    let emit_url = emit_urls[0].clone();
    // Other nodes learn of the handler through NOTIFY.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let backend = match &opts.database_url {
        None => "SQLite, synchronous=full".to_owned(),
        Some(_) => format!(
            "PostgreSQL, {} node(s), emits spread across them",
            opts.nodes
        ),
    };
    println!("provisio benchmark: real server ({backend}), one handler, loopback receiver");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Warm up connections and caches.
    for seq in 0..200 {
        emit(&client, &emit_url, 1_000_000_000 + seq).await;
    }
    assert!(
        wait_received(&sink, 200, Duration::from_secs(30)).await,
        "warm-up deliveries did not arrive"
    );

    if opts.runs("burst") {
        burst(&client, &emit_urls, &sink, &opts, &cpu_seconds).await;
    }
    if opts.runs("fixed") {
        fixed(&client, &emit_urls, &sink, &opts, &cpu_seconds).await;
    }

    // Disk per execution (SQLite: the data directories hold the whole state):
    // every event so far made one delivery and one execution.
    if opts.database_url.is_none() && opts.only.is_none() {
        let executions = sink.received.load(Ordering::SeqCst);
        let bytes = dir_size(dir.path());
        println!();
        println!(
            "disk: {:.0} bytes per event (its event row, delivery and execution log row), ~{:.2} GB per million",
            bytes as f64 / executions as f64,
            bytes as f64 / executions as f64 * 1e6 / 1e9
        );
    }

    if opts.runs("before") {
        before_chain(&client, &base, opts.chains).await;
    }
    if opts.runs("hung") {
        hung_handlers(&client, &base, &emit_urls, &sink, &opts).await;
    }
    if opts.runs("replay") {
        replay(&client, &base, &emit_urls, &sink, &opts).await;
    }
    if opts.runs("filters") {
        filter_cost();
    }
}

/// 1. Burst: as fast as the generator can emit.
async fn burst(
    client: &reqwest::Client,
    emit_urls: &[String],
    sink: &Sink,
    opts: &Options,
    cpu_seconds: &impl Fn() -> f64,
) {
    let base_count = sink.received.load(Ordering::SeqCst);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    emit_many(client, emit_urls, opts.concurrency, opts.events, |i| {
        let seq = 2_000_000_000 + i;
        ("clients.update", seq, seq)
    })
    .await;
    let emitted_in = started.elapsed();
    let all_arrived = wait_received(sink, base_count + opts.events, Duration::from_secs(300)).await;
    let delivered_in = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let delivered = sink.received.load(Ordering::SeqCst) - base_count;
    println!();
    println!(
        "burst: {} events, {} concurrent emitters",
        opts.events, opts.concurrency
    );
    println!(
        "  emits accepted:          {:>9.0} /s",
        opts.events as f64 / emitted_in.as_secs_f64()
    );
    println!(
        "  deliveries end to end:   {:>9.0} /s{}",
        delivered as f64 / delivered_in.as_secs_f64(),
        if all_arrived {
            ""
        } else {
            "  (NOT ALL ARRIVED)"
        }
    );
    println!(
        "  server CPU per event:    {:>9.3} ms",
        cpu * 1000.0 / opts.events as f64
    );
}

/// 2. Latency at a fixed offered rate.
async fn fixed(
    client: &reqwest::Client,
    emit_urls: &[String],
    sink: &Sink,
    opts: &Options,
    cpu_seconds: &impl Fn() -> f64,
) {
    let cpu_before = cpu_seconds();
    let (latencies, all_arrived) = fixed_rate(
        client,
        emit_urls,
        sink,
        opts.rate,
        opts.seconds,
        3_000_000_000,
    )
    .await;
    let total = opts.rate * opts.seconds;
    let cpu = cpu_seconds() - cpu_before;
    println!();
    println!(
        "fixed rate: {} events/s for {} s{}",
        opts.rate,
        opts.seconds,
        if all_arrived {
            ""
        } else {
            "  (NOT ALL ARRIVED)"
        }
    );
    println!(
        "  emit -> receiver p50:    {:>9.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0
    );
    println!(
        "  emit -> receiver p99:    {:>9.2} ms",
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  emit -> receiver max:    {:>9.2} ms",
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "  server CPU per event:    {:>9.3} ms",
        cpu * 1000.0 / total as f64
    );
}

/// The bytes of every file under `path`.
fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
