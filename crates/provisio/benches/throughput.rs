//! The end-to-end benchmark: the real `provisio serve` binary (on SQLite, or on
//! PostgreSQL with `--database-url postgres://…`, one node or `--nodes 2`), a
//! fast loopback receiver and a load generator, all on this machine. Prints
//!
//! - emits/s accepted and deliveries/s completed end to end, for a burst;
//! - emit → receiver latency p50/p99/max at a fixed offered rate;
//! - the server's CPU time per delivered event;
//! - the before-stage chain's overhead with three no-op handlers.
//!
//! Run with `cargo bench --bench throughput` (add `-- --events N --rate R
//! --seconds S` to change the load; `-- --database-url URL [--nodes 2]` to run
//! on a PostgreSQL database, which should be empty: the benchmark's handler
//! must be the only one). With two nodes, the emits are spread across both.
//! Figures depend on the machine; they are printed, not asserted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;

const TOKEN: &str = "bench-admin-token-0123456789";

struct Options {
    /// A PostgreSQL URL; SQLite in a temporary directory when absent.
    database_url: Option<String>,
    /// Servers sharing the database (PostgreSQL only).
    nodes: usize,
    chains: usize,
    events: u64,
    concurrency: usize,
    rate: u64,
    seconds: u64,
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
    assert!(
        o.nodes == 1 || o.database_url.is_some(),
        "--nodes needs --database-url: SQLite is single-node"
    );
    o
}

/// The receiver: answers 200 at once and notes when each event arrived.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// seq → arrival, for latency runs.
    arrivals: Mutex<HashMap<u64, Instant>>,
    done: Notify,
    target: AtomicU64,
}

async fn start_sink(sink: Arc<Sink>) -> SocketAddr {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            let now = Instant::now();
            if let Some(seq) = seq_of(&body) {
                sink.arrivals.lock().unwrap().insert(seq, now);
            }
            let n = sink.received.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= sink.target.load(Ordering::SeqCst) {
                sink.done.notify_waiters();
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Finds `"seq":N` in the body without a full parse.
fn seq_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"seq\":")? + 6;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

struct Server {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Server {
    fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> Server {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_provisio"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(
                database_url
                    .map(|url| ["--database-url", url])
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(data_dir)
            .env("PROVISIO_ADMIN_TOKEN", TOKEN)
            .env("PROVISIO_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start provisio");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("provisio exited").unwrap();
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = entry["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// User + system CPU seconds the server has used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks_per_second()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn emit(client: &reqwest::Client, url: &str, seq: u64) {
    let body = json!({ "events_id": "clients.update", "object_id": seq, "data": { "seq": seq, "name": "Bench client" } });
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("emit");
    assert_eq!(
        resp.status(),
        202,
        "emit refused: {}",
        resp.text().await.unwrap_or_default()
    );
}

async fn wait_received(sink: &Sink, n: u64, limit: Duration) -> bool {
    sink.target.store(n, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = sink.done.notified();
        if sink.received.load(Ordering::SeqCst) >= n {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return sink.received.load(Ordering::SeqCst) >= n;
        }
    }
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

    // 1. Burst: as fast as the generator can emit.
    let base_count = sink.received.load(Ordering::SeqCst);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let url = emit_urls[w % emit_urls.len()].clone();
        let (client, next, total) = (client.clone(), next.clone(), opts.events);
        workers.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::SeqCst);
                if seq >= total {
                    break;
                }
                emit(&client, &url, 2_000_000_000 + seq).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let emitted_in = started.elapsed();
    let all_arrived =
        wait_received(&sink, base_count + opts.events, Duration::from_secs(300)).await;
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

    // 2. Latency at a fixed offered rate.
    let cpu_before = cpu_seconds();
    let (latencies, all_arrived) = fixed_rate(
        &client,
        &emit_urls,
        &sink,
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

    // Disk per execution (SQLite: the data directories hold the whole state):
    // every event so far made one delivery and one execution.
    if opts.database_url.is_none() {
        let executions = sink.received.load(Ordering::SeqCst);
        let bytes = dir_size(dir.path());
        println!();
        println!(
            "disk: {:.0} bytes per event (its event row, delivery and execution log row), ~{:.2} GB per million",
            bytes as f64 / executions as f64,
            bytes as f64 / executions as f64 * 1e6 / 1e9
        );
    }

    before_chain(&client, &base, opts.chains).await;
    hung_handlers(&client, &base, &emit_urls, &sink, &opts).await;
}

/// Emits `rate` events a second for `seconds` and returns the emit → receiver
/// latencies, sorted, and whether every event arrived.
async fn fixed_rate(
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
            emit(&client, &url, seq).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all_arrived = wait_received(sink, base_count + total, Duration::from_secs(120)).await;
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

/// Eight more handlers for the same events, whose receivers accept
/// connections and never answer (60 s timeout): the healthy handler's
/// latency at the fixed rate should stay what it was alone.
async fn hung_handlers(
    client: &reqwest::Client,
    base: &str,
    emit_urls: &[String],
    sink: &Sink,
    opts: &Options,
) {
    let mut holes = Vec::new();
    for i in 0..8 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}/hook", listener.local_addr().unwrap());
        holes.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        }));
        let created = client
            .post(format!("{base}/api/v1/handlers"))
            .bearer_auth(TOKEN)
            .json(
                &json!({ "name": format!("hung {i}"), "events_id": "clients.*",
                           "target": target, "timeout_ms": 60_000, "ordered": false }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (latencies, all_arrived) = fixed_rate(
        client,
        emit_urls,
        sink,
        opts.rate,
        opts.seconds,
        4_000_000_000,
    )
    .await;
    println!();
    println!(
        "beside 8 hung handlers: {} events/s for {} s to the healthy one{}",
        opts.rate,
        opts.seconds,
        if all_arrived {
            ""
        } else {
            "  (NOT ALL ARRIVED)"
        }
    );
    for (name, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "  emit -> receiver {name}:    {:>9.2} ms",
            percentile(&latencies, p).as_secs_f64() * 1000.0
        );
    }
    for hole in holes {
        hole.abort();
    }
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

/// Phase 3, the before-stage chain's own overhead: three no-op loopback handlers,
/// called one request at a time, compared with the same three calls made
/// directly by the client.
async fn before_chain(client: &reqwest::Client, base: &str, runs: usize) {
    let noop = axum::Router::new().fallback(|| async { "" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let noop_url = format!("http://{}/noop", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, noop).await.unwrap() });

    let before_url = format!("{base}/api/v1/events/before");
    let body = json!({ "events_id": "clients.create", "object_id": 1, "data": { "name": "Bench client" } });
    let time_chain = |n: usize| {
        let (client, url, body) = (client.clone(), before_url.clone(), body.clone());
        async move {
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let started = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                took.push(started.elapsed());
            }
            took.sort();
            took
        }
    };

    let empty = time_chain(runs).await;
    for i in 0..3 {
        let created = client
            .post(format!("{base}/api/v1/handlers"))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": format!("noop {i}"), "events_id": "clients.create", "stage": "before", "target": noop_url }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    time_chain(100).await;
    let chain = time_chain(runs).await;

    let payload = json!({ "event": { "dt": "2026-11-26T10:00:00+00:00", "events_id": "clients.create", "object_id": 1 }, "data": { "name": "Bench client" } });
    let mut direct = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        for _ in 0..3 {
            client
                .post(&noop_url)
                .json(&payload)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        direct.push(started.elapsed());
    }
    direct.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let row = |label: &str, sorted: &[Duration]| {
        println!(
            "  {label:<24} p50 {:>6.2} ms   p99 {:>6.2} ms",
            ms(percentile(sorted, 0.5)),
            ms(percentile(sorted, 0.99))
        );
    };
    println!();
    println!("before-stage chain, {runs} sequential calls");
    row("no handlers:", &empty);
    row("three no-op handlers:", &chain);
    row("the three calls direct:", &direct);
    println!(
        "  chain overhead:          p50 {:>6.2} ms   p99 {:>6.2} ms   (three handlers minus the direct calls)",
        ms(percentile(&chain, 0.5).saturating_sub(percentile(&direct, 0.5))),
        ms(percentile(&chain, 0.99).saturating_sub(percentile(&direct, 0.99)))
    );
}
