//! The end-to-end benchmark: the real `provisio serve` binary (on SQLite, or on
//! PostgreSQL with `--database-url postgres://…`, one node or `--nodes 2`), a
//! fast loopback receiver on a thread of its own and a load generator, all on
//! this machine. Prints, in one run:
//!
//! - a burst: emits/s accepted and deliveries/s completed end to end;
//! - fixed offered rates (200 and 1,000 events/s): emit → receiver latency
//!   p50/p99/max, and the server's and the receiver's CPU time per event;
//! - the server's CPU while idle;
//! - a backlog: the receiver down while `--backlog` events queue (the emit
//!   rate at the start and the end of the build-up), then the drain in
//!   deliveries/s, with the server's RSS before, at the peak and after;
//! - fan-out: one event type to 20 handlers, deliveries/s against the burst;
//! - the fixed-rate latency again beside eight handlers that never answer;
//! - the lowest fixed rate beside a handler capped at one call to a slow
//!   receiver, with the CPU per event;
//! - the before-stage chain's overhead with three no-op handlers;
//! - a replay of `--events` logged events to a new handler, in deliveries/s;
//! - what one handler filter and one request template cost per event;
//! - with `-- --only instructions` alone: the server's instructions per
//!   event at a low rate and per delivery in a fan-out burst, under
//!   callgrind, repeatable where the timed figures are not.
//!
//! Run with `cargo bench --bench throughput` (add `-- --events N --rates
//! 200,1000 --seconds S --backlog N` to change the load; `-- --only
//! PHASE[,PHASE…]` to run those phases after the warm-up, on one server in
//! a full run's order; `-- --database-url URL [--nodes 2]` to run
//! on a PostgreSQL database, which should be empty: the benchmark's handler
//! must be the only one). With two nodes, the emits are spread across both.
//! `PROVISIO_BENCH_SERVER=/path/to/provisio` runs another build of the server.
//! Figures depend on the machine; they are printed, not asserted.

mod harness;
mod phases;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use harness::{Server, Sink, create_handler, emit, start_sink, wait_received};

pub const TOKEN: &str = "bench-admin-token-0123456789";

/// The phases `--only` accepts, in the order a full run takes them; the
/// last, `instructions`, runs only when asked for (it needs valgrind).
const PHASES: [&str; 11] = [
    "burst",
    "fixed",
    "idle",
    "backlog",
    "fanout",
    "hung",
    "capped",
    "before",
    "replay",
    "filters",
    "instructions",
];

pub struct Options {
    /// A PostgreSQL URL; SQLite in a temporary directory when absent.
    database_url: Option<String>,
    /// Servers sharing the database (PostgreSQL only).
    nodes: usize,
    pub chains: usize,
    pub events: u64,
    pub concurrency: usize,
    /// The fixed offered rates, events/s; the hung phase uses the highest.
    pub rates: Vec<u64>,
    pub seconds: u64,
    /// Events queued while the receiver is down, in the backlog phase.
    pub backlog: u64,
    /// Handlers of the one event type, in the fan-out phase.
    pub fanout: u64,
    /// Run only these phases (after the warm-up, in a full run's order);
    /// all when absent.
    only: Option<Vec<String>>,
}

impl Options {
    fn runs(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p == phase))
    }

    /// The lowest fixed rate, events/s: the one measured beside a capped
    /// handler and right after the drain.
    pub fn lowest_rate(&self) -> u64 {
        self.rates.iter().copied().min().unwrap_or(200)
    }

    /// The highest fixed rate, events/s: the hung phase's.
    pub fn highest_rate(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(1_000)
    }
}

fn options() -> Options {
    let mut o = Options {
        database_url: None,
        nodes: 1,
        chains: 2_000,
        events: 20_000,
        concurrency: 64,
        rates: vec![200, 1_000],
        seconds: 10,
        backlog: 100_000,
        fanout: 20,
        only: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let text = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let value = |name: &str| text(name).map(|v| v.parse::<u64>().expect(name));
    if let Some(v) = value("--events") {
        o.events = v;
    }
    if let Some(v) = value("--concurrency") {
        o.concurrency = v as usize;
    }
    if let Some(v) = text("--rates") {
        o.rates = v
            .split(',')
            .map(|r| r.trim().parse().expect("--rates"))
            .collect();
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
    if let Some(v) = value("--backlog") {
        o.backlog = v;
    }
    if let Some(v) = value("--fanout") {
        o.fanout = v;
    }
    o.database_url = text("--database-url");
    o.only = text("--only").map(|v| v.split(',').map(|p| p.trim().to_owned()).collect());
    assert!(
        o.only
            .iter()
            .flatten()
            .all(|p| PHASES.contains(&p.as_str())),
        "--only takes one or more of {}, separated by commas",
        PHASES.join(", ")
    );
    assert!(!o.rates.is_empty(), "--rates needs at least one rate");
    assert!(
        o.nodes == 1 || o.database_url.is_some(),
        "--nodes needs --database-url: SQLite is single-node"
    );
    o
}

/// What the phases share: the servers, the receiver and the client.
pub struct Bench {
    pub opts: Options,
    pub servers: Vec<Server>,
    pub sink: Arc<Sink>,
    pub sink_addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    /// The first node's base URL, for the API.
    pub base: String,
    /// Each node's emit URL.
    pub emit_urls: Vec<String>,
    /// The benchmark's handler (`clients.*` to the sink).
    pub handler_id: i64,
}

impl Bench {
    /// The servers' CPU seconds so far, all nodes together.
    pub fn server_cpu(&self) -> f64 {
        self.servers.iter().map(Server::cpu_seconds).sum()
    }

    /// The servers' context switches so far, all nodes together.
    pub fn context_switches(&self) -> u64 {
        self.servers.iter().map(Server::context_switches).sum()
    }

    /// The pages SQLite's write path has written to its WAL so far
    /// (`provisio_sqlite_wal_frames_total`); `None` on PostgreSQL.
    pub async fn wal_frames(&self) -> Option<f64> {
        if self.opts.database_url.is_some() {
            return None;
        }
        let page = self
            .client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.lines()
            .find_map(|line| line.strip_prefix("provisio_sqlite_wal_frames_total "))
            .and_then(|value| value.trim().parse().ok())
    }

    /// The servers' resident memory now, in MiB, all nodes together.
    pub fn rss_mib(&self) -> f64 {
        self.servers.iter().map(Server::rss_mib).sum()
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = options();
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Sink::default());
    let sink_addr = start_sink(sink.clone());
    let servers: Vec<Server> = (0..opts.nodes)
        .map(|i| {
            let node_dir = dir.path().join(format!("node{i}"));
            Server::start(&node_dir, opts.database_url.as_deref())
        })
        .collect();
    let base = format!("http://{}", servers[0].addr);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(opts.concurrency)
        .build()
        .unwrap();
    let handler_id = create_handler(
        &client,
        &base,
        json!({ "name": "bench", "events_id": "clients.*", "target": format!("http://{sink_addr}/hook") }),
    )
    .await;
    let emit_urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}/api/v1/events", s.addr))
        .collect();
    // Other nodes learn of the handler through NOTIFY.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let backend = match &opts.database_url {
        None => "SQLite, synchronous=full".to_owned(),
        Some(_) => format!(
            "PostgreSQL, {} node(s), emits spread across them; PostgreSQL's CPU is every local postgres process's",
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
    let bench = Bench {
        opts,
        servers,
        sink,
        sink_addr,
        client,
        base,
        emit_urls,
        handler_id,
    };

    // Warm up connections and caches.
    for seq in 0..200 {
        assert!(
            emit(&bench.client, &bench.emit_urls[0], 1_000_000_000 + seq).await,
            "a warm-up emit was refused"
        );
    }
    assert!(
        wait_received(&bench.sink, 200, Duration::from_secs(30)).await,
        "warm-up deliveries did not arrive"
    );

    let opts = &bench.opts;
    let mut burst_rate = None;
    if opts.runs("burst") {
        burst_rate = Some(phases::burst::run(&bench).await);
    }
    if opts.runs("fixed") {
        for (i, &rate) in opts.rates.iter().enumerate() {
            phases::fixed::run(&bench, rate, 3_000_000_000 + i as u64 * 100_000_000).await;
        }
    }
    // Disk per execution (SQLite: the data directories hold the whole state):
    // every event so far made one delivery and one execution.
    if opts.database_url.is_none() && opts.only.is_none() {
        phases::disk_per_event(&bench, dir.path());
    }
    if opts.runs("idle") {
        phases::idle(&bench).await;
    }
    if opts.runs("backlog") {
        phases::backlog::run(&bench).await;
    }
    if opts.runs("fanout") {
        phases::fanout::run(&bench, burst_rate).await;
    }
    if opts.runs("hung") {
        phases::fixed::beside_hung(&bench).await;
    }
    if opts.runs("capped") {
        phases::fixed::beside_capped(&bench).await;
    }
    if opts.runs("before") {
        phases::before::run(&bench).await;
    }
    if opts.runs("replay") {
        phases::replay::run(&bench).await;
    }
    if opts.runs("filters") {
        phases::filters::run();
    }
    if opts.only.is_some() && opts.runs("instructions") {
        phases::instructions::run(&bench).await;
    }
}
